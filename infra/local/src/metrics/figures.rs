//! What the local runtime itself counts for each function, as Lambda reports
//! `Invocations`, `Errors` and `Throttles` without the function's help: served on
//! `/metrics` beside the functions' own metrics, and part of the traffic summary's
//! errors. This module never reads the runtime's types: the runtime converts its own
//! statistics (`From<&FunctionStats>`).

/// One function's counters, from the local runtime (totals since the stack started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FunctionFigures {
    /// Invocations asked for (including those that never ran).
    pub invocations: u64,
    /// Invocations that ended in a handler error or an init error.
    pub errors: u64,
    /// Invocations stopped at their timeout.
    pub timeouts: u64,
    /// Invocations whose process exited or was killed before answering.
    pub crashes: u64,
    /// Invocations that waited too long for an instance (Lambda's throttling error).
    pub throttles: u64,
}

impl FunctionFigures {
    /// Invocations that failed in any way: errors, timeouts, crashes and throttles.
    pub fn failures(&self) -> u64 {
        self.errors + self.timeouts + self.crashes + self.throttles
    }
}
