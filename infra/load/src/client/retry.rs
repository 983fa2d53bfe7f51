//! What a publisher does with a refused publish, by code: `rate_limited` pauses the whole
//! publisher (the limit is the connection's, the user's or the channel's, and sending
//! anything else meanwhile would be refused too), `in_flight` resends only that publish,
//! `internal` resends it after a doubling backoff, anything else is final. The server's
//! `retryAfterMs` is honoured when present; a short backoff stands in when it is not.
//! After `rate_limited` the pause is the longer of the two: the server's wait is when the
//! bucket holds a token again, and a hundred publishers refused together would all come
//! back for that one token, so consecutive refusals back off (doubling, with jitter)
//! until an ack resets the backoff.
//! Kept pure (the caller applies the decision) so it can be tested without a socket.

use std::time::Duration;

use crate::state::jitter;

/// First backoff after `rate_limited`; doubled on each one, reset by an ack.
pub(crate) const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(250);
/// Longest backoff after `rate_limited` (the server's `retryAfterMs` may be longer).
pub(crate) const RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Wait before resending after `in_flight` without `retryAfterMs`.
pub(crate) const IN_FLIGHT_FALLBACK: Duration = Duration::from_millis(200);
/// Longest wait honoured from `retryAfterMs` (a bad value must not stall a run).
pub(crate) const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

/// What to do with a refused publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Retry {
    /// Send nothing for this long, then resend it (and carry on).
    PausePublisher(Duration),
    /// Resend this publish after this long; the others are unaffected.
    Resend(Duration),
    /// Refused for good.
    Never,
}

/// The decision for a refusal with `code` and the server's `retry_after_ms`; `backoff`
/// is the publisher's current `rate_limited` backoff, `attempts` how often the publish
/// was sent.
pub(crate) fn after_refusal(
    code: &str,
    retry_after_ms: Option<u64>,
    backoff: Duration,
    attempts: u32,
) -> Retry {
    // A little extra on top of the server's wait, so publishers refused together do not
    // all come back in the same millisecond.
    let server = retry_after_ms.map(|ms| {
        let wait = Duration::from_millis(ms).min(RETRY_AFTER_MAX);
        wait + wait.mul_f64(0.2 * rand::random::<f64>())
    });
    match code {
        "rate_limited" => {
            let own = jitter(backoff);
            Retry::PausePublisher(server.map_or(own, |server| server.max(own)))
        }
        "in_flight" => Retry::Resend(server.unwrap_or_else(|| jitter(IN_FLIGHT_FALLBACK))),
        "internal" => {
            let base = Duration::from_millis(100) * (1 << attempts.min(4));
            Retry::Resend(jitter(base.min(Duration::from_secs(2))))
        }
        _ => Retry::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(wait: Duration, low_ms: u64, high_ms: u64) -> bool {
        wait >= Duration::from_millis(low_ms) && wait <= Duration::from_millis(high_ms)
    }

    #[test]
    fn retry_after_is_honoured() {
        for _ in 0..50 {
            match after_refusal("rate_limited", Some(400), Duration::from_millis(100), 1) {
                Retry::PausePublisher(wait) => assert!(within(wait, 400, 480), "{wait:?}"),
                other => panic!("{other:?}"),
            }
            match after_refusal("in_flight", Some(1000), RATE_LIMIT_BACKOFF, 3) {
                Retry::Resend(wait) => assert!(within(wait, 1000, 1200), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn consecutive_rate_limits_back_off_beyond_a_short_retry_after() {
        // A refusal that says "a token in 15 ms", after the publisher's backoff has grown
        // to 2 s: the publisher waits its backoff, so refused publishers spread out.
        for _ in 0..50 {
            match after_refusal("rate_limited", Some(15), Duration::from_secs(2), 1) {
                Retry::PausePublisher(wait) => assert!(within(wait, 1000, 3000), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn without_retry_after_a_short_backoff_stands_in() {
        for _ in 0..50 {
            match after_refusal("rate_limited", None, Duration::from_millis(500), 1) {
                Retry::PausePublisher(wait) => assert!(within(wait, 250, 750), "{wait:?}"),
                other => panic!("{other:?}"),
            }
            match after_refusal("in_flight", None, RATE_LIMIT_BACKOFF, 1) {
                Retry::Resend(wait) => assert!(within(wait, 100, 300), "{wait:?}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn absurd_retry_after_is_capped() {
        match after_refusal("in_flight", Some(u64::MAX / 2), RATE_LIMIT_BACKOFF, 1) {
            Retry::Resend(wait) => assert!(wait <= RETRY_AFTER_MAX.mul_f64(1.2)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn internal_backs_off_and_other_codes_are_final() {
        match after_refusal("internal", Some(5), RATE_LIMIT_BACKOFF, 10) {
            Retry::Resend(wait) => assert!(within(wait, 800, 2400), "{wait:?}"),
            other => panic!("{other:?}"),
        }
        for code in [
            "forbidden",
            "bad_request",
            "too_large",
            "conflict",
            "whatever",
        ] {
            assert_eq!(
                after_refusal(code, Some(100), RATE_LIMIT_BACKOFF, 1),
                Retry::Never
            );
        }
    }
}
