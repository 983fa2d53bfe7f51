//! Rate limits: token buckets kept in the table, so every function instance shares them.
//! A connection's bucket lives on its liveness item and goes with the connection; a
//! user's bucket (`u#<sub>` / `rate`) limits all of that user's connections together, so
//! opening more connections does not multiply the allowance.
//!
//! Tokens are counted as of when a frame reached API Gateway, not when it is processed,
//! so a backlog drained late is limited as it arrived. A request is admitted only while
//! the bucket holds its up-front cost ([`Store::take_tokens`]); a read is charged
//! afterwards for what it returned ([`Store::charge_tokens`]), which may leave the bucket
//! in debt: the next requests wait until it has refilled. The debt is bounded by the
//! burst, and what one read can return is capped, so no request is free and none locks a
//! connection out for long.
//!
//! Concurrent requests on one bucket are serialised with a version condition (`rv`).

use aws_sdk_dynamodb::types::AttributeValue;
use tracing::debug;

use super::attributes::{Conditional, conditional, dynamo, n, number, s};
use super::items::{LIVE_SK, USER_BUCKET_SK, connection_pk, user_pk};
use super::{Store, StoreError, backoff};
use crate::clock;
use crate::config::RateLimit;

/// A token bucket's state: tokens left (negative while in debt) as of `at_ms`.
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

    /// The bucket refilled up to `at_ms`. Frames may be processed out of arrival order;
    /// time never runs backwards here.
    fn refilled(self, limit: RateLimit, at_ms: u64) -> Self {
        let elapsed = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        Self {
            tokens: (self.tokens + elapsed * limit.per_second).min(limit.burst),
            at_ms: at_ms.max(self.at_ms),
        }
    }

    /// The bucket after taking `cost` tokens at `at_ms`, or `None` when it holds fewer.
    pub fn take(self, limit: RateLimit, at_ms: u64, cost: f64) -> Option<Self> {
        let bucket = self.refilled(limit, at_ms);
        (bucket.tokens >= cost).then_some(Self {
            tokens: bucket.tokens - cost,
            ..bucket
        })
    }

    /// The bucket after charging `cost` tokens at `at_ms` whatever it holds: what a
    /// served read owes beyond its deposit (negative: a refund). The debt stops at one
    /// burst below empty, a refund at a full bucket.
    pub fn charge(self, limit: RateLimit, at_ms: u64, cost: f64) -> Self {
        let bucket = self.refilled(limit, at_ms);
        Self {
            tokens: (bucket.tokens - cost).clamp(-limit.burst, limit.burst),
            ..bucket
        }
    }
}

/// Whose bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketOf<'a> {
    /// A connection's, on its liveness item: refused with [`StoreError::ConnectionGone`]
    /// once the connection has no liveness item.
    Connection(&'a str),
    /// A user's, across all their connections; created on first use.
    User(&'a str),
}

/// What to do to a bucket.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Take tokens, or refuse when there are too few.
    Take(f64),
    /// Charge tokens, into debt if need be.
    Charge(f64),
}

/// Reads of a bucket before its concurrent requests are given up on as racing each other.
const MAX_TOKEN_ATTEMPTS: u32 = 8;

impl Store {
    /// Takes `cost` tokens from `bucket` as of `at_ms` (when the frame reached API
    /// Gateway). Returns `false` when the bucket holds fewer, and writes nothing then. A
    /// connection's bucket also refreshes its last-seen time, and refuses with
    /// [`StoreError::ConnectionGone`] when the connection has no liveness item any more.
    pub async fn take_tokens(
        &self,
        bucket: BucketOf<'_>,
        at_ms: u64,
        limit: RateLimit,
        cost: f64,
    ) -> Result<bool, StoreError> {
        self.change_bucket(bucket, at_ms, limit, Change::Take(cost))
            .await
    }

    /// Charges `cost` tokens to `bucket` as of `at_ms`, into debt if need be: what a read
    /// owes beyond its deposit for what it returned (a negative cost is a refund).
    pub async fn charge_tokens(
        &self,
        bucket: BucketOf<'_>,
        at_ms: u64,
        limit: RateLimit,
        cost: f64,
    ) -> Result<(), StoreError> {
        self.change_bucket(bucket, at_ms, limit, Change::Charge(cost))
            .await
            .map(drop)
    }

    async fn change_bucket(
        &self,
        bucket: BucketOf<'_>,
        at_ms: u64,
        limit: RateLimit,
        change: Change,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = match bucket {
            BucketOf::Connection(id) => (connection_pk(id), LIVE_SK),
            BucketOf::User(sub) => (user_pk(sub), USER_BUCKET_SK),
        };
        for attempt in 0..MAX_TOKEN_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let item = self
                .send(self.read_item(&pk, sk).projection_expression("tk, tat, rv"))
                .await
                .map_err(dynamo)?
                .item;
            let item = match (item, bucket) {
                (Some(item), _) => Some(item),
                (None, BucketOf::User(_)) => None,
                (None, BucketOf::Connection(connection_id)) => {
                    // The connection closed ($disconnect removed it) or never was stored:
                    // its frames are refused, or closing right after a flood would lift
                    // the limit.
                    debug!(connection_id, "no liveness item; frame refused");
                    return Err(StoreError::ConnectionGone {
                        connection_id: connection_id.to_owned(),
                    });
                }
            };
            let version = item.as_ref().and_then(|i| number(i, "rv")).unwrap_or(0);
            let previous = match item.as_ref().map(|i| (number(i, "tk"), number(i, "tat"))) {
                Some((Some(tokens), Some(at))) => Bucket { tokens, at_ms: at },
                _ => Bucket::full(limit, at_ms),
            };
            let next = match change {
                Change::Take(cost) => match previous.take(limit, at_ms, cost) {
                    Some(next) => next,
                    None => return Ok(false),
                },
                Change::Charge(cost) => previous.charge(limit, at_ms, cost),
            };
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(&pk))
                .key("sk", s(sk))
                .expression_attribute_values(
                    ":tk",
                    AttributeValue::N(format!("{:.3}", next.tokens)),
                )
                .expression_attribute_values(":tat", n(next.at_ms))
                .expression_attribute_values(":rv", n(version))
                .expression_attribute_values(":next", n(version + 1));
            request = match bucket {
                BucketOf::Connection(_) => request
                    .update_expression("SET tk = :tk, tat = :tat, rv = :next, seen = :seen")
                    .condition_expression(
                        "attribute_exists(pk) AND (attribute_not_exists(rv) OR rv = :rv)",
                    )
                    .expression_attribute_values(":seen", n(clock::now_ms())),
                // A user's bucket is worth keeping only while it is not full again.
                BucketOf::User(_) => request
                    .update_expression("SET tk = :tk, tat = :tat, rv = :next, #ttl = :ttl")
                    .condition_expression("attribute_not_exists(rv) OR rv = :rv")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_values(
                        ":ttl",
                        n(at_ms / 1000 + refill_seconds(limit) + USER_BUCKET_GRACE_SECONDS),
                    ),
            };
            match conditional(self.send(request).await)? {
                Conditional::Written(_) => return Ok(true),
                // Another request changed the bucket first, or the connection is gone:
                // read again.
                Conditional::Refused(_) => continue,
            }
        }
        // Lost every race: other requests are taking the tokens. A take is refused; a
        // charge is dropped (those requests are paying).
        debug!(?bucket, ?change, "lost every race for the bucket");
        Ok(false)
    }
}

/// Slack past a user bucket's refill time before DynamoDB TTL may delete it.
const USER_BUCKET_GRACE_SECONDS: u64 = 3600;

/// Seconds for an empty bucket (or one a burst in debt) to fill again.
fn refill_seconds(limit: RateLimit) -> u64 {
    (2.0 * limit.burst / limit.per_second).ceil() as u64
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
            bucket = bucket.take(LIMIT, 0, 1.0).expect("within the burst");
        }
        assert!(
            bucket.take(LIMIT, 0, 1.0).is_none(),
            "the 51st at once is refused"
        );
        assert!(
            bucket.take(LIMIT, 49, 1.0).is_none(),
            "not yet a whole token back"
        );
        let bucket = bucket
            .take(LIMIT, 50, 1.0)
            .expect("one token after 50 ms at 20/s");
        assert!(bucket.take(LIMIT, 50, 1.0).is_none());
    }

    #[test]
    fn refill_is_capped_at_the_burst_and_time_never_goes_back() {
        let idle = Bucket {
            tokens: 0.0,
            at_ms: 0,
        }
        .take(LIMIT, 3_600_000, 1.0)
        .unwrap();
        assert_eq!(idle.tokens, 49.0);
        let late = Bucket {
            tokens: 5.0,
            at_ms: 1000,
        }
        .take(LIMIT, 400, 1.0)
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

    #[test]
    fn a_charge_goes_into_debt_that_refuses_until_repaid() {
        let bucket = Bucket::full(LIMIT, 0).charge(LIMIT, 0, 60.0);
        assert_eq!(bucket.tokens, -10.0);
        assert!(bucket.take(LIMIT, 549, 1.0).is_none(), "10.98 tokens back");
        let repaid = bucket.take(LIMIT, 550, 1.0).expect("11 tokens back");
        assert!((repaid.tokens - 0.0).abs() < 1e-9, "{repaid:?}");
        let floor = Bucket::full(LIMIT, 0).charge(LIMIT, 0, 1000.0);
        assert_eq!(floor.tokens, -50.0, "the debt stops at one burst");
        assert!(floor.take(LIMIT, 2_549, 1.0).is_none());
        let refund = Bucket {
            tokens: 45.0,
            at_ms: 0,
        }
        .charge(LIMIT, 0, -7.5);
        assert_eq!(refund.tokens, 50.0, "a refund fills the bucket at most");
        assert!(
            floor.take(LIMIT, 2_550, 1.0).is_some(),
            "repaid after (50 + 1) / 20 s"
        );
    }

    #[test]
    fn a_take_larger_than_what_is_left_is_refused_whole() {
        let bucket = Bucket {
            tokens: 2.5,
            at_ms: 0,
        };
        assert!(bucket.take(LIMIT, 0, 3.0).is_none());
        assert_eq!(bucket.take(LIMIT, 0, 2.5).unwrap().tokens, 0.0);
    }
}
