//! Rate limits: token buckets kept in the table, so every function instance shares them.
//! A connection's bucket lives on its liveness item and goes with the connection; a
//! user's bucket (`u#<sub>` / `rate`) limits all of that user's connections together, so
//! opening more connections does not multiply the allowance.
//!
//! Tokens are counted as of when a frame reached API Gateway, not when it is processed,
//! so a backlog drained late is limited as it arrived. A request is admitted only while
//! the bucket holds its up-front cost ([`Store::take_tokens`]); a read is charged
//! afterwards for what it returned ([`Store::charge_tokens`]), which may leave the bucket
//! in debt: the next requests wait until it has refilled.
//!
//! A bucket is one number, `tat` (the generic cell rate algorithm's "theoretical arrival
//! time", Unix ms): when the bucket will be full again. It holds `burst − (tat − now) /
//! interval` tokens, all of them once `tat` has passed. Taking tokens moves `tat` later,
//! and because that is an addition DynamoDB can make atomically (`SET tat = tat + :cost`,
//! on condition that the result stays within the burst), concurrent requests on a busy
//! bucket never race one another: each is admitted or refused on the bucket as it is, so
//! a burst admits exactly the burst. Only a full bucket (`tat` passed, or none yet) is
//! written with a fresh value (`SET tat = :now + :cost`), on condition that it was full.
//! The store reads `tat` first to pick between the two; a request that finds the other
//! case after all (the bucket filled up or was taken meanwhile) learns the current value
//! from the refusal and tries the other.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use tracing::debug;

use super::attributes::{Conditional, conditional, dynamo, n, number};
use super::items::{LIVE_SK, USER_BUCKET_SK, connection_pk, user_pk};
use super::{Store, StoreError};
use crate::clock;
use crate::config::RateLimit;

/// A token bucket's state: `tat`, when it will be full again (Unix ms); `None` or a
/// passed time is a full bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// When the bucket is full again, Unix ms.
    pub tat_ms: Option<f64>,
}

impl Bucket {
    /// A full bucket.
    pub fn full() -> Self {
        Self { tat_ms: None }
    }

    /// The bucket as a `tat` stored in whole milliseconds left it (a channel's, on its
    /// newest delta).
    pub fn from_stored(tat_ms: Option<u64>) -> Self {
        Self {
            tat_ms: tat_ms.map(|tat| tat as f64),
        }
    }

    /// Its `tat` as stored, in whole milliseconds (rounded up, so never fuller than it is).
    pub fn stored(self) -> Option<u64> {
        self.tat_ms.map(|tat| tat.ceil() as u64)
    }

    /// Tokens it holds at `at_ms` (negative while in debt).
    pub fn tokens(self, limit: RateLimit, at_ms: u64) -> f64 {
        let owed = self.tat_ms.map_or(0.0, |tat| (tat - at_ms as f64).max(0.0));
        limit.burst - owed / interval_ms(limit)
    }

    /// The bucket after taking `cost` tokens at `at_ms`, or `None` when it holds fewer.
    pub fn take(self, limit: RateLimit, at_ms: u64, cost: f64) -> Option<Self> {
        (self.tokens(limit, at_ms) >= cost).then(|| self.charge(limit, at_ms, cost))
    }

    /// How long from `at_ms` until it holds `cost` tokens, in whole milliseconds; `None`
    /// when it holds them now.
    pub fn wait_ms(self, limit: RateLimit, at_ms: u64, cost: f64) -> Option<u64> {
        let missing = cost - self.tokens(limit, at_ms);
        (missing > 0.0).then(|| (missing * interval_ms(limit)).ceil().max(1.0) as u64)
    }

    /// The bucket after charging `cost` tokens at `at_ms` whatever it holds (a negative
    /// cost is a refund, which never fills it past full).
    pub fn charge(self, limit: RateLimit, at_ms: u64, cost: f64) -> Self {
        let now = at_ms as f64;
        let tat = self.tat_ms.map_or(now, |tat| tat.max(now)) + cost * interval_ms(limit);
        Self {
            tat_ms: Some(tat.max(now)),
        }
    }
}

/// Milliseconds for one token to refill.
fn interval_ms(limit: RateLimit) -> f64 {
    1000.0 / limit.per_second
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

/// Buckets as [`Store::read_buckets`] found them, each holding the tokens asked for.
#[derive(Debug)]
pub struct ReadBuckets(Vec<Bucket>);

/// What to do to a bucket.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Take tokens, or refuse when there are too few.
    Take(f64),
    /// Charge tokens, into debt if need be (negative: a refund).
    Charge(f64),
}

/// Writes tried on one request before it gives up: each failed write means the bucket
/// crossed between full and not full meanwhile, which takes time to happen again.
const MAX_BUCKET_WRITES: u32 = 4;

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

    /// Takes tokens from each of `buckets` (`(bucket, limit, cost)`) as of `at_ms`, as
    /// [`Self::take_tokens`] does for one, with the buckets read at once and then written
    /// at once: two round trips, however many buckets. Returns the place of a bucket that
    /// holds too few, or `None` when every bucket gave its tokens. When a bucket is short
    /// as read, nothing is written; one found short only when written (another request
    /// took its tokens meanwhile) leaves the others' tokens spent.
    pub async fn take_tokens_from_all(
        &self,
        buckets: &[(BucketOf<'_>, RateLimit, f64)],
        at_ms: u64,
    ) -> Result<Option<usize>, StoreError> {
        match self.read_buckets(buckets, at_ms).await? {
            Err(short) => Ok(Some(short)),
            Ok(read) => self.take_read_tokens(buckets, read, at_ms).await,
        }
    }

    /// The first half of [`Self::take_tokens_from_all`]: reads `buckets` at once, and
    /// returns the place of one that holds too few as of `at_ms`, or the buckets as read,
    /// for [`Self::take_read_tokens`] (a request may check something else in between,
    /// knowing its sender has the tokens, before it spends them).
    pub async fn read_buckets(
        &self,
        buckets: &[(BucketOf<'_>, RateLimit, f64)],
        at_ms: u64,
    ) -> Result<Result<ReadBuckets, usize>, StoreError> {
        let reads = buckets
            .iter()
            .map(|(bucket, _, _)| self.read_bucket(*bucket));
        let states = futures::future::try_join_all(reads).await?;
        Ok(
            match buckets
                .iter()
                .zip(&states)
                .position(|((_, limit, cost), state)| state.take(*limit, at_ms, *cost).is_none())
            {
                Some(short) => Err(short),
                None => Ok(ReadBuckets(states)),
            },
        )
    }

    /// The second half of [`Self::take_tokens_from_all`]: takes the tokens of `buckets`
    /// as `read` found them, all at once. Returns the place of a bucket found short only
    /// now (another request took its tokens meanwhile), or `None`.
    pub async fn take_read_tokens(
        &self,
        buckets: &[(BucketOf<'_>, RateLimit, f64)],
        read: ReadBuckets,
        at_ms: u64,
    ) -> Result<Option<usize>, StoreError> {
        let ReadBuckets(states) = read;
        let writes = buckets
            .iter()
            .zip(states)
            .map(|((bucket, limit, cost), state)| {
                self.update_bucket(*bucket, state, at_ms, *limit, Change::Take(*cost))
            });
        let taken = futures::future::try_join_all(writes).await?;
        Ok(taken.iter().position(|taken| !taken))
    }

    /// A bucket as stored; a connection's refuses with [`StoreError::ConnectionGone`] when
    /// the connection has no liveness item.
    async fn read_bucket(&self, bucket: BucketOf<'_>) -> Result<Bucket, StoreError> {
        let (pk, sk) = key(bucket);
        let item = self
            .send(self.read_item(&pk, sk).projection_expression("tat"))
            .await
            .map_err(dynamo)?
            .item;
        if item.is_none()
            && let BucketOf::Connection(id) = bucket
        {
            return Err(gone(id));
        }
        Ok(Bucket {
            tat_ms: item.as_ref().and_then(|i| number::<f64>(i, "tat")),
        })
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
        let state = self.read_bucket(bucket).await?;
        self.update_bucket(bucket, state, at_ms, limit, change)
            .await
    }

    /// Writes `change` to `bucket`, starting from `state` as read, until a
    /// write holds or the bucket refuses (see the module docs).
    async fn update_bucket(
        &self,
        bucket: BucketOf<'_>,
        mut state: Bucket,
        at_ms: u64,
        limit: RateLimit,
        change: Change,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = key(bucket);
        let now = at_ms as f64;
        let interval = interval_ms(limit);
        for _ in 0..MAX_BUCKET_WRITES {
            let full = state.tat_ms.is_none_or(|tat| tat <= now);
            let cost = match change {
                Change::Take(cost) => {
                    if state.take(limit, at_ms, cost).is_none() {
                        return Ok(false);
                    }
                    cost
                }
                // A refund to a full bucket changes nothing.
                Change::Charge(cost) if full && cost <= 0.0 => return Ok(true),
                Change::Charge(cost) => cost,
            };
            let step = cost * interval;
            let mut request = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(pk.clone()))
                .key("sk", AttributeValue::S(sk.into()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .expression_attribute_values(":now", decimal(now));
            let (mut set, mut condition) = if full {
                request = request.expression_attribute_values(":fresh", decimal(now + step));
                (
                    "SET tat = :fresh".to_owned(),
                    "(attribute_not_exists(tat) OR tat <= :now)".to_owned(),
                )
            } else {
                request = request.expression_attribute_values(":step", decimal(step));
                let mut condition = "tat > :now".to_owned();
                if let Change::Take(_) = change {
                    // Within the burst once taken: tat + step − now ≤ burst × interval.
                    request = request.expression_attribute_values(
                        ":most",
                        decimal(now + limit.burst * interval - step),
                    );
                    condition.push_str(" AND tat <= :most");
                }
                ("SET tat = tat + :step".to_owned(), condition)
            };
            request = match bucket {
                BucketOf::Connection(_) => {
                    set.push_str(", seen = :seen");
                    condition.push_str(" AND attribute_exists(pk)");
                    request.expression_attribute_values(":seen", n(clock::now_ms()))
                }
                // A user's bucket is worth keeping only until it is full again.
                BucketOf::User(_) => {
                    set.push_str(", #ttl = :ttl");
                    let full_again = state.charge(limit, at_ms, cost).tat_ms.unwrap_or(now);
                    request
                        .expression_attribute_names("#ttl", "ttl")
                        .expression_attribute_values(
                            ":ttl",
                            n((full_again / 1000.0) as u64 + USER_BUCKET_GRACE_SECONDS),
                        )
                }
            };
            let request = request
                .update_expression(set)
                .condition_expression(condition);
            match conditional(self.send(request).await)? {
                Conditional::Written(_) => return Ok(true),
                Conditional::Refused(None) => match bucket {
                    BucketOf::Connection(id) => return Err(gone(id)),
                    // Deleted by TTL meanwhile: a full bucket.
                    BucketOf::User(_) => state = Bucket::full(),
                },
                // The bucket is not as read: go on from what it is now.
                Conditional::Refused(Some(found)) => {
                    state = Bucket {
                        tat_ms: number::<f64>(&found, "tat"),
                    }
                }
            }
        }
        debug!(
            ?bucket,
            ?change,
            "the bucket kept changing under this request"
        );
        Ok(false)
    }
}

/// Where `bucket` is kept.
fn key(bucket: BucketOf<'_>) -> (String, &'static str) {
    match bucket {
        BucketOf::Connection(id) => (connection_pk(id), LIVE_SK),
        BucketOf::User(sub) => (user_pk(sub), USER_BUCKET_SK),
    }
}

/// The refusal of a frame from a connection without a liveness item: it closed
/// ($disconnect removed it) or never was stored; otherwise closing right after a flood
/// would lift the limit.
fn gone(connection_id: &str) -> StoreError {
    debug!(connection_id, "no liveness item; frame refused");
    StoreError::ConnectionGone {
        connection_id: connection_id.to_owned(),
    }
}

/// A number attribute with a fraction of a millisecond.
fn decimal(value: f64) -> AttributeValue {
    AttributeValue::N(format!("{value:.3}"))
}

/// Slack past a user bucket's refill time before DynamoDB TTL may delete it.
const USER_BUCKET_GRACE_SECONDS: u64 = 3600;

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 20.0,
        burst: 50.0,
    };

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = Bucket::full();
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
        let empty = Bucket {
            tat_ms: Some(2_500.0),
        };
        assert_eq!(empty.tokens(LIMIT, 0), 0.0);
        assert_eq!(empty.tokens(LIMIT, 3_600_000), 50.0, "full, never more");
        let idle = empty.take(LIMIT, 3_600_000, 1.0).unwrap();
        assert_eq!(idle.tokens(LIMIT, 3_600_000), 49.0);
        let late = Bucket {
            tat_ms: Some(3_250.0),
        };
        // 5 tokens at 1000 ms; a frame that arrived at 400 ms sees no more than that.
        assert_eq!(late.tokens(LIMIT, 1000), 5.0);
        assert!(late.tokens(LIMIT, 400) < 5.0);
    }

    #[test]
    fn a_charge_goes_into_debt_that_refuses_until_repaid() {
        let bucket = Bucket::full().charge(LIMIT, 0, 60.0);
        assert_eq!(bucket.tokens(LIMIT, 0), -10.0);
        assert!(bucket.take(LIMIT, 549, 1.0).is_none(), "10.98 tokens back");
        let repaid = bucket.take(LIMIT, 550, 1.0).expect("11 tokens back");
        assert!(repaid.tokens(LIMIT, 550).abs() < 1e-9, "{repaid:?}");
        let refund = Bucket {
            tat_ms: Some(250.0),
        }
        .charge(LIMIT, 0, -7.5);
        assert_eq!(
            refund.tokens(LIMIT, 0),
            50.0,
            "a refund fills the bucket at most"
        );
    }

    #[test]
    fn a_take_larger_than_what_is_left_is_refused_whole() {
        let bucket = Bucket {
            tat_ms: Some(2_375.0),
        };
        assert_eq!(bucket.tokens(LIMIT, 0), 2.5);
        assert!(bucket.take(LIMIT, 0, 3.0).is_none());
        assert_eq!(bucket.take(LIMIT, 0, 2.5).unwrap().tokens(LIMIT, 0), 0.0);
    }
}
