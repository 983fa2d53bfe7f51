//! The per-connection publish rate limit: a token bucket kept on the connection's
//! liveness item, so every function instance shares it and it goes with the connection.
//! Tokens are counted as of when a frame reached API Gateway, not when it is processed,
//! so a backlog drained late is limited as it arrived.

use aws_sdk_dynamodb::types::AttributeValue;
use tracing::debug;

use super::attributes::{Conditional, conditional, dynamo, n, number};
use super::items::{LIVE_SK, connection_pk};
use super::{Store, StoreError, backoff};
use crate::clock;
use crate::config::RateLimit;

/// A token bucket's state: tokens left as of `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens left.
    pub tokens: f64,
    /// When they were counted, Unix ms.
    pub at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: RateLimit, at_ms: u64) -> Self {
        Self {
            tokens: limit.burst,
            at_ms,
        }
    }

    /// The bucket after taking one token at `at_ms`, or `None` when it is empty. Frames
    /// may be processed out of arrival order; time never runs backwards here.
    pub fn take(self, limit: RateLimit, at_ms: u64) -> Option<Self> {
        let elapsed = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        let tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        (tokens >= 1.0).then(|| Self {
            tokens: tokens - 1.0,
            at_ms: at_ms.max(self.at_ms),
        })
    }
}

/// Reads of the bucket before a connection's frames are given up on as racing each other.
const MAX_TOKEN_ATTEMPTS: u32 = 8;

impl Store {
    /// Takes one token from the connection's publish bucket as of `at_ms` (when the frame
    /// reached API Gateway, not when it is processed). Returns `false` when the bucket is
    /// empty, and [`StoreError::ConnectionGone`] when the connection has no liveness item
    /// any more; both write nothing. Accepted publishes also refresh `seen`. Concurrent
    /// frames are serialised with a version condition, which also refuses to write once
    /// the liveness item is gone.
    pub async fn take_publish_token(
        &self,
        connection_id: &str,
        at_ms: u64,
        limit: RateLimit,
    ) -> Result<bool, StoreError> {
        let pk = connection_pk(connection_id);
        for attempt in 0..MAX_TOKEN_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let item = self
                .send(
                    self.read_item(&pk, LIVE_SK)
                        .projection_expression("tk, tat, rv"),
                )
                .await
                .map_err(dynamo)?
                .item;
            let Some(item) = item else {
                // The connection closed ($disconnect removed it) or never was stored: its
                // frames are refused, or closing right after a flood would lift the limit.
                debug!(connection_id, "no liveness item; publish refused");
                return Err(StoreError::ConnectionGone {
                    connection_id: connection_id.to_owned(),
                });
            };
            let version = number(&item, "rv").unwrap_or(0);
            let previous = match (number(&item, "tk"), number(&item, "tat")) {
                (Some(tokens), Some(at)) => Bucket { tokens, at_ms: at },
                _ => Bucket::full(limit, at_ms),
            };
            let Some(next) = previous.take(limit, at_ms) else {
                return Ok(false);
            };
            let request = self
                .update_liveness(connection_id)
                .update_expression("SET tk = :tk, tat = :tat, rv = :next, seen = :seen")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(rv) OR rv = :rv)",
                )
                .expression_attribute_values(
                    ":tk",
                    AttributeValue::N(format!("{:.3}", next.tokens)),
                )
                .expression_attribute_values(":tat", n(next.at_ms))
                .expression_attribute_values(":rv", n(version))
                .expression_attribute_values(":next", n(version + 1))
                .expression_attribute_values(":seen", n(clock::now_ms()));
            match conditional(self.send(request).await)? {
                Conditional::Written(_) => return Ok(true),
                // Another frame took a token first, or the connection is gone: read again.
                Conditional::Refused(_) => continue,
            }
        }
        // Lost every race: other frames of this connection are taking the tokens.
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 20.0,
        burst: 50.0,
    };

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = Bucket::full(LIMIT, 0);
        for _ in 0..50 {
            bucket = bucket.take(LIMIT, 0).expect("within the burst");
        }
        assert!(
            bucket.take(LIMIT, 0).is_none(),
            "the 51st at once is refused"
        );
        assert!(
            bucket.take(LIMIT, 49).is_none(),
            "not yet a whole token back"
        );
        let bucket = bucket
            .take(LIMIT, 50)
            .expect("one token after 50 ms at 20/s");
        assert!(bucket.take(LIMIT, 50).is_none());
    }

    #[test]
    fn refill_is_capped_at_the_burst_and_time_never_goes_back() {
        let idle = Bucket {
            tokens: 0.0,
            at_ms: 0,
        }
        .take(LIMIT, 3_600_000)
        .unwrap();
        assert_eq!(idle.tokens, 49.0);
        let late = Bucket {
            tokens: 5.0,
            at_ms: 1000,
        }
        .take(LIMIT, 400)
        .unwrap();
        assert_eq!(
            late,
            Bucket {
                tokens: 4.0,
                at_ms: 1000
            },
            "an earlier frame refills nothing"
        );
    }
}
