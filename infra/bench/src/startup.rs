//! Start-up time, memory and package size of the function binaries.
