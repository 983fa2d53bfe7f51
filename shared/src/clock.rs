//! Wall-clock time as DynamoDB and the wire protocol use it (Unix seconds and
//! milliseconds), and the backoff every retry loop uses.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Exponential backoff with full jitter: a random wait up to `base` × 2^`retry`, capped
/// at `cap`, so clients that failed together do not retry together.
pub fn full_jitter(base: Duration, cap: Duration, retry: u32) -> Duration {
    base.saturating_mul(1 << retry.min(16))
        .min(cap)
        .mul_f64(rand::random::<f64>())
}
