//! Appending a delta exactly once per `(channel, publisher, id)`, with gap-free seqs and
//! without transactions: a claim on the publisher's message id, then a conditional delta
//! write (the algorithm is in the [module docs](super)). The id is the publisher's own
//! idempotency key: the same id from another `sub` is another message, so nobody can be
//! answered with someone else's delta.

use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::attributes::{Conditional, Item, conditional, dynamo, n, number, s, text};
use super::history::Head;
use super::items::{ClaimItem, DeltaItem, EPOCH_SK, EpochItem, channel_pk, claim_sk};
use super::{Store, StoreError, backoff};

use crate::clock;
use crate::protocol::{Channel, Delta, MessageId, Payload};

/// A publish request.
#[derive(Clone, Copy, Debug)]
pub struct NewDelta<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// Idempotency key, within the publisher's own messages on the channel.
    pub id: &'a MessageId,
    /// Publisher's `sub`.
    pub from: &'a str,
    /// Payload.
    pub data: &'a Payload,
    /// Publish only if the head seq equals this.
    pub expect_seq: Option<u64>,
}

/// Where a publish's delta is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Its seq.
    pub seq: u64,
    /// Its epoch.
    pub epoch: String,
    /// Whether an earlier publish with the same id, by the same publisher, stored it.
    pub duplicate: bool,
}

/// Why a publish stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `expectSeq` did not match.
    #[error("head is {}, not the expected seq", .head.seq)]
    Conflict {
        /// The head at the time of the check.
        head: Head,
    },
    /// Another attempt with the same id (by the same publisher) holds a live lease.
    #[error("a publish with this id is still in progress")]
    InProgress,
    /// The channel was too busy to find a free seq in the allotted attempts.
    #[error("the channel is too contended; retry")]
    Contended,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Attempts at a publish: enough for dozens of publishers racing on one channel.
const MAX_PUBLISH_ATTEMPTS: u32 = 32;

/// How long a publish waits for another attempt's live lease on its id before answering
/// [`PublishError::InProgress`]: well inside the message function's 10 s timeout.
const LEASE_WAIT: Duration = Duration::from_secs(2);

impl Store {
    /// Appends a delta, exactly once per `(channel, publisher, id)`; see the module docs.
    pub async fn publish(&self, new: NewDelta<'_>) -> Result<Published, PublishError> {
        let channel = new.channel.as_str();
        let id = new.id.as_str();
        let from = new.from;
        // The lease of the claim this call holds, once it holds one.
        let mut held: Option<u64> = None;
        // Waiting helps when another attempt holds the id or won a race for the claim or
        // the epoch; a seq lost to another message is retried at once with a fresh head.
        let mut pause = false;
        let started = Instant::now();
        for attempt in 0..MAX_PUBLISH_ATTEMPTS {
            if std::mem::take(&mut pause) {
                tokio::time::sleep(backoff(attempt)).await;
            }
            // Who else is working on this id?
            let mut stale_lease = None;
            if held.is_none()
                && let Some(claim) = self.claim(new).await?
            {
                if let Some(delta) = self.delta(channel, &claim.ep, claim.seq).await?
                    && delta.id == id
                    && delta.from == from
                {
                    return Ok(Published {
                        seq: delta.seq,
                        epoch: delta.ep,
                        duplicate: true,
                    });
                }
                if claim.lease > clock::now_ms() {
                    // Bounded by time, not attempts: the caller must answer before the
                    // function times out.
                    if started.elapsed() >= LEASE_WAIT || attempt + 1 == MAX_PUBLISH_ATTEMPTS {
                        return Err(PublishError::InProgress);
                    }
                    pause = true;
                    continue;
                }
                stale_lease = Some(claim.lease);
            }

            let state = self.channel_state(channel).await?;
            let head = state.head();
            if let Some(expected) = new.expect_seq
                && expected != head.seq
            {
                if let Some(lease) = held {
                    self.release_claim(new, lease).await?;
                }
                return Err(PublishError::Conflict { head });
            }
            let (epoch, seq, fresh) = match &state.live {
                Some((epoch, seq)) => (epoch.clone(), seq + 1, false),
                None => (new_epoch(), 1, true),
            };

            let lease = clock::now_ms() + self.lifetimes.publish_lease.as_millis() as u64;
            let previous_lease = held.or(stale_lease);
            if !self
                .write_claim(new, &epoch, seq, lease, previous_lease)
                .await?
            {
                held = None;
                pause = true;
                continue;
            }
            held = Some(lease);

            if fresh
                && !self
                    .start_epoch(channel, &epoch, state.recorded.as_deref())
                    .await?
            {
                pause = true;
                continue;
            }

            let delta = Delta {
                channel: channel.to_owned(),
                seq,
                epoch: epoch.clone(),
                id: id.to_owned(),
                from: from.to_owned(),
                ts: clock::now_ms(),
                data: new.data.clone(),
            };
            let ttl = delta.ts / 1000 + self.lifetimes.retention.as_secs();
            let item =
                serde_dynamo::to_item(DeltaItem::new(&delta, ttl)).map_err(StoreError::from)?;
            if self.put_delta(item, from, id, &epoch, seq).await? {
                debug!(channel, seq, "delta stored");
                return Ok(Published {
                    seq,
                    epoch,
                    duplicate: false,
                });
            }
            debug!(channel, seq, attempt, "seq taken; retrying");
        }
        if let Some(lease) = held {
            self.release_claim(new, lease).await?;
        }
        Err(PublishError::Contended)
    }

    /// The unexpired claim on the publisher's message id, if any.
    async fn claim(&self, new: NewDelta<'_>) -> Result<Option<ClaimItem>, StoreError> {
        let out = self
            .send(self.read_item(
                channel_pk(new.channel.as_str()),
                claim_sk(new.from, new.id.as_str()),
            ))
            .await
            .map_err(dynamo)?;
        let claim: Option<ClaimItem> = out.item.map(serde_dynamo::from_item).transpose()?;
        Ok(claim.filter(|c| c.ttl > clock::now_secs()))
    }

    /// Creates or moves the claim. `previous_lease` is the lease of the claim being
    /// moved or taken over; without it the claim must not exist yet (or have expired).
    async fn write_claim(
        &self,
        new: NewDelta<'_>,
        epoch: &str,
        seq: u64,
        lease: u64,
        previous_lease: Option<u64>,
    ) -> Result<bool, StoreError> {
        let ttl = clock::now_secs() + self.lifetimes.retention.as_secs();
        let claim = ClaimItem {
            pk: channel_pk(new.channel.as_str()),
            sk: claim_sk(new.from, new.id.as_str()),
            ep: epoch.into(),
            seq,
            lease,
            ttl,
        };
        let mut request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(&claim)?))
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(clock::now_secs()));
        request = match previous_lease {
            Some(previous) => request
                .condition_expression("lease = :previous OR #ttl < :now")
                .expression_attribute_values(":previous", n(previous)),
            None => request.condition_expression("attribute_not_exists(pk) OR #ttl < :now"),
        };
        match self.put_or_find(request).await? {
            Conditional::Written(_) => Ok(true),
            // A retry by the SDK (after a timeout or a 5xx) of a write that took effect
            // finds this very claim; it is held, not lost to another attempt.
            Conditional::Refused(Some(found)) => Ok(
                serde_dynamo::from_item::<_, ClaimItem>(found).is_ok_and(|found| found == claim)
            ),
            Conditional::Refused(None) => Ok(false),
        }
    }

    /// Deletes a claim this call holds, so a refused publish leaves nothing behind.
    async fn release_claim(&self, new: NewDelta<'_>, lease: u64) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(channel_pk(new.channel.as_str())))
            .key("sk", s(claim_sk(new.from, new.id.as_str())))
            .condition_expression("lease = :lease")
            .expression_attribute_values(":lease", n(lease));
        // Refused: the claim was taken over (or has gone); it is not this call's to delete.
        conditional(self.send(request).await)?;
        Ok(())
    }

    /// Records a new epoch, unless another publisher replaced `previous` first.
    async fn start_epoch(
        &self,
        channel: &str,
        epoch: &str,
        previous: Option<&str>,
    ) -> Result<bool, StoreError> {
        let item = serde_dynamo::to_item(EpochItem {
            pk: channel_pk(channel),
            sk: EPOCH_SK.into(),
            ep: epoch.into(),
            at: clock::now_ms(),
        })?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = match previous {
            Some(previous) => request
                .condition_expression("ep = :previous")
                .expression_attribute_values(":previous", s(previous)),
            None => request.condition_expression("attribute_not_exists(pk)"),
        };
        match conditional(self.send(request).await)? {
            Conditional::Written(_) => Ok(true),
            Conditional::Refused(_) => Ok(false),
        }
    }

    /// Writes the delta of publisher `from`'s message `id` at `seq` unless the seq is
    /// taken. Returns whether the seq holds this message's delta, which is also the case
    /// when the SDK retried (after a timeout or a 5xx) a write that had taken effect: the
    /// retry then finds its own delta. Another publisher's delta with the same id is not.
    async fn put_delta(
        &self,
        item: Item,
        from: &str,
        id: &str,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .put_item()
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        match self.put_or_find(request).await? {
            Conditional::Written(_) => Ok(true),
            Conditional::Refused(Some(found)) => {
                let ours = text(&found, "id") == Some(id)
                    && text(&found, "from") == Some(from)
                    && text(&found, "ep") == Some(epoch)
                    && number(&found, "seq") == Some(seq);
                if ours {
                    debug!(seq, "the delta at this seq is already this message's");
                }
                Ok(ours)
            }
            Conditional::Refused(None) => Ok(false),
        }
    }
}

/// A fresh epoch: the creation time and randomness, as an opaque string.
fn new_epoch() -> String {
    format!("{:x}{:04x}", clock::now_ms(), rand::random::<u16>())
}
