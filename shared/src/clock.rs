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

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of `full_jitter(base, cap, retry)`, in ms.
    fn samples(base_ms: u64, cap_ms: u64, retry: u32) -> Vec<f64> {
        (0..2000)
            .map(|_| {
                full_jitter(
                    Duration::from_millis(base_ms),
                    Duration::from_millis(cap_ms),
                    retry,
                )
                .as_secs_f64()
                    * 1000.0
            })
            .collect()
    }

    #[test]
    fn full_jitter_is_uniform_below_a_ceiling_that_doubles_up_to_the_cap() {
        for (retry, ceiling) in [
            (0, 10.0),
            (1, 20.0),
            (3, 80.0),
            (5, 320.0),
            (6, 500.0),
            (40, 500.0),
        ] {
            let delays = samples(10, 500, retry);
            let max = delays.iter().cloned().fold(0.0, f64::max);
            let mean = delays.iter().sum::<f64>() / delays.len() as f64;
            assert!(max <= ceiling, "retry {retry}: {max} ms over {ceiling}");
            // 2,000 uniform draws: the largest is within 1 % of the ceiling and the mean
            // within 5 % of its half, except with negligible probability.
            assert!(
                max >= 0.99 * ceiling,
                "retry {retry}: at most {max} ms of {ceiling}"
            );
            assert!(
                (mean - ceiling / 2.0).abs() <= 0.05 * ceiling,
                "retry {retry}: mean {mean} ms, ceiling {ceiling}"
            );
        }
    }
}
