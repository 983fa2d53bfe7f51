//! Wall-clock time as DynamoDB and the wire protocol use it: Unix seconds and milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}
