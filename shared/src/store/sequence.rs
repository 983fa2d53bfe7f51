//! The second half of a publish: giving claimed messages their seqs and writing their
//! deltas. On a quiet channel the message function does it for its own message, at the
//! head it read for the claim ([`Store::sequence_now`], one write); the sequencer function
//! does it for a busy channel's messages, a batch at a time ([`Store::sequence`] with what
//! the stream brought): one read of the head serves the whole batch, so a busy channel
//! costs one head read per batch instead of a race per publish. The sequencer keeps the
//! channel marked busy while its batches come (renewing the mark once half of it has run
//! out), which sends its publishes straight to it (see `inbox`).
//!
//! ## Exactly once, gap-free, in order
//! Each delta is written at the head + 1 with `attribute_not_exists`, either after the
//! one below it or in one transaction with it (the sequencer writes a batch's deltas in
//! one `TransactWriteItems` per 100, all or none: one round trip per batch instead of one
//! per delta), so a seq exists only once the one below it does; the fan-out sorts each
//! batch of stream records by seq. Before it writes, the sequencer looks for the batch's messages among the
//! deltas above the lowest `after` they recorded (a stream batch delivered again, a claim
//! taken over after its lease): those are acked with their stored seq, not stored again.
//! One invocation at a time works on a channel's records (a partition key's records come
//! in order, one batch at a time, whatever the `ParallelizationFactor`). Writes do not
//! depend on it: a writer that finds its seq taken (a tool publishing through
//! [`Store::publish`] beside the sequencer) reads the head again and looks again, and
//! since it only ever writes the seq right after one it saw or wrote, no message escapes
//! that look. Before anything, a batch keeps only the messages still in the inbox as the
//! stream showed them ([`Store::still_queued`], one `BatchGetItem` per 100): a message refused and
//! deleted since must not be stored when Lambda delivers its record again.
//!
//! ## Refusals
//! A message is refused, and its inbox item deleted so its id may be sent again, when
//! - its `expectSeq` is not the head when its turn comes (`conflict`);
//! - the channel's bucket (kept on the newest delta as `tat`) holds no token
//!   (`rate_limited`, with how long until it does);
//! - its seq would be more than [`MAX_BACKLOG`] above the head it recorded: the channel is
//!   that far behind (`rate_limited`). This bound is also what keeps the duplicate
//!   search of [`Store::enqueue`] short.

use std::collections::HashMap;

use tracing::{debug, warn};

use super::attributes::{Conditional, conditional, n, number, s, text};
use super::history::ChannelState;
use super::history::Head;
use super::inbox::{
    BUSY_WINDOW_MS, Claim, Enqueued, IN_FLIGHT_RETRY_MS, MAX_BACKLOG, NewDelta, Published,
};
use super::items::{DeltaItem, EPOCH_SK, EpochItem, InboxItem, channel_pk, delta_sk};
use super::plan::{Batch, Plan, Sequenced, Step, effective_after, latest_per_claim};
use super::{Store, StoreError, backoff};
use crate::clock;
use crate::config::RateLimit;

/// Why a publish through [`Store::publish`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `expectSeq` did not match.
    #[error("head is {}, not the expected seq", .head.seq)]
    Conflict {
        /// The head at the time of the check.
        head: Head,
    },
    /// Another attempt with the same id (by the same publisher) is in flight.
    #[error("a publish with this id is still in flight")]
    InFlight,
    /// The channel is over its limit.
    #[error("the channel is over its rate limit; retry after {retry_after_ms} ms")]
    RateLimited {
        /// Milliseconds.
        retry_after_ms: u64,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Heads read per batch before its remaining messages are refused as `rate_limited`:
/// each extra read follows a seq lost to another writer on the channel.
const MAX_SEQUENCE_ATTEMPTS: u32 = 16;

/// How [`Store::sequence_attempts`] goes about a batch.
struct Attempts {
    /// The channel as already read for the first attempt, if it was.
    first_state: Option<ChannelState>,
    /// Most tries (head reads, the first one included).
    most: u32,
    /// Whether this is the sequencer, which keeps the channel busy while it works: a new
    /// epoch it starts carries the mark, and each seq it loses renews it.
    busy: bool,
}

impl Store {
    /// Gives `inbox` (messages of `channel`, in stream order) their seqs, writes their
    /// deltas and returns what became of each (see the module docs).
    pub async fn sequence(
        &self,
        channel: &str,
        inbox: Vec<InboxItem>,
        limit: Option<RateLimit>,
    ) -> Result<Vec<(InboxItem, Sequenced)>, StoreError> {
        // Which messages are still queued, and the head: two reads at once.
        let (pending, state) = tokio::try_join!(
            self.still_queued(latest_per_claim(inbox)),
            self.channel_state(channel),
        )?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        // The busy mark is renewed beside the batch's writes, not before them, and only
        // once half of it has run out: on a channel that stays busy, batches come every
        // few hundred ms, and a mark written before each one was a write (100-170 ms on
        // a loaded DynamoDB Local) on every batch's path.
        let renew = state
            .busy_until
            .is_none_or(|until| until < clock::now_ms() + BUSY_WINDOW_MS / 2);
        let attempts = Attempts {
            first_state: Some(state),
            most: MAX_SEQUENCE_ATTEMPTS,
            busy: true,
        };
        let mark = async {
            if renew {
                self.mark_busy(channel).await;
            }
        };
        let (sequenced, ()) = tokio::join!(
            self.sequence_attempts(channel, pending, limit, attempts),
            mark
        );
        let (mut done, left) = sequenced?;
        if !left.is_empty() {
            warn!(
                channel,
                left = left.len(),
                "channel too contended; refusing the rest of the batch"
            );
        }
        for item in left {
            self.release(&item).await?;
            done.push((
                item,
                Sequenced::RateLimited {
                    retry_after_ms: IN_FLIGHT_RETRY_MS,
                },
            ));
        }
        Ok(done)
    }

    /// The message function's fast path: stores the message it has just claimed at the
    /// head it read for the claim, so that on a quiet channel the publisher is acked at
    /// once, without waiting for the stream. `None` when another writer took the seq (the
    /// channel is busy): the claim is handed to the sequencer, which acks.
    pub async fn sequence_now(
        &self,
        claim: Claim,
        limit: Option<RateLimit>,
    ) -> Result<Option<Sequenced>, StoreError> {
        let Claim { item, state } = claim;
        let channel = item.channel().unwrap_or_default().to_owned();
        let attempts = Attempts {
            first_state: Some(state),
            most: 1,
            busy: false,
        };
        let (mut done, left) = self
            .sequence_attempts(&channel, vec![item], limit, attempts)
            .await?;
        for item in &left {
            self.hand_over(item).await?;
        }
        Ok(done.pop().map(|(_, outcome)| outcome))
    }

    /// Up to `attempts.most` tries at sequencing `pending`, each against the head as read
    /// then: what became of each, and the messages still without a seq when the attempts
    /// ran out.
    async fn sequence_attempts(
        &self,
        channel: &str,
        mut pending: Vec<InboxItem>,
        limit: Option<RateLimit>,
        attempts: Attempts,
    ) -> Result<(Vec<(InboxItem, Sequenced)>, Vec<InboxItem>), StoreError> {
        let mut done = Vec::with_capacity(pending.len());
        let mut first_state = attempts.first_state;
        for attempt in 0..attempts.most {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let state = match first_state.take() {
                Some(state) => state,
                None => self.channel_state(channel).await?,
            };
            if let Some((epoch, head)) = &state.live {
                let stored = self.stored(channel, epoch, *head, &pending).await?;
                pending.retain(|item| match stored.get(&item.sk) {
                    Some(seq) => {
                        let published = Published {
                            seq: *seq,
                            epoch: epoch.clone(),
                            duplicate: true,
                        };
                        done.push((item.clone(), Sequenced::Published(published)));
                        false
                    }
                    None => true,
                });
            }
            let (epoch, fresh) = match &state.live {
                Some((epoch, _)) => (epoch.clone(), false),
                None => (new_epoch(), true),
            };
            let head = state.live.as_ref().map_or(0, |(_, seq)| *seq);
            let batch = Batch {
                epoch: &epoch,
                fresh,
                head,
                tat: state.tat,
                admit: state.admit,
                limit,
                lease_ms: self.lifetimes.publish_lease.as_millis() as u64,
                now: clock::now_ms(),
            };
            let Plan { steps: plan, admit } = batch.plan(std::mem::take(&mut pending));
            debug!(channel, messages = plan.len(), admit, "planned");
            let writes = plan
                .iter()
                .any(|(_, step)| matches!(step, Step::Write { .. }));
            if fresh
                && writes
                && !self
                    .start_epoch(channel, &epoch, state.recorded.as_deref(), attempts.busy)
                    .await?
            {
                pending = plan.into_iter().map(|(item, _)| item).collect();
                continue;
            }
            if attempts.busy {
                let (stored, left) = self.write_together(channel, &epoch, plan, admit).await?;
                done.extend(stored);
                if !left.is_empty() {
                    debug!(
                        channel,
                        attempt, "a seq of the batch was taken; reading the head again"
                    );
                    self.mark_busy(channel).await;
                }
                pending = left;
                continue;
            }
            let mut lost = false;
            for (item, step) in plan {
                if lost {
                    pending.push(item);
                    continue;
                }
                match step {
                    Step::Write { seq, tat } => {
                        let delta = self.delta_item(channel, &item, &epoch, seq, tat, admit);
                        if let Some(ours) = self.put_delta(delta).await? {
                            let published = Published {
                                seq,
                                epoch: epoch.clone(),
                                duplicate: !ours,
                            };
                            done.push((item, Sequenced::Published(published)));
                        } else {
                            debug!(channel, seq, attempt, "seq taken; reading the head again");
                            lost = true;
                            if attempts.busy {
                                self.mark_busy(channel).await;
                            }
                            pending.push(item);
                        }
                    }
                    Step::Refuse(refusal) => {
                        self.release(&item).await?;
                        done.push((item, refusal));
                    }
                }
            }
        }
        Ok((done, pending))
    }

    /// Which of `pending` are stored already in `epoch` (up to `head`), by claim key: a
    /// message can only be at a seq within [`MAX_BACKLOG`] of the head it recorded, so
    /// only those windows are read (merged where they overlap), and a delta with the same
    /// publisher and id outside its window (an older message that reused the id after
    /// its claim expired) is not taken for it.
    async fn stored(
        &self,
        channel: &str,
        epoch: &str,
        head: u64,
        pending: &[InboxItem],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut windows: Vec<(u64, u64)> = pending
            .iter()
            .map(|item| effective_after(item, epoch))
            .map(|after| (after, head.min(after + MAX_BACKLOG)))
            .filter(|(after, to)| after < to)
            .collect();
        windows.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (after, to) in windows {
            match merged.last_mut() {
                Some(last) if after <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((after, to)),
            }
        }
        let mut seqs = HashMap::new();
        for (after, to) in merged {
            seqs.extend(self.seqs_of(channel, epoch, after, to, None).await?);
        }
        Ok(pending
            .iter()
            .filter_map(|item| {
                let seq = *seqs.get(&(item.from.clone(), item.id.clone()))?;
                let after = effective_after(item, epoch);
                (after < seq && seq <= after + MAX_BACKLOG).then(|| (item.sk.clone(), seq))
            })
            .collect())
    }

    /// Publishes at once, without the sequencer: the claim, then this one message's
    /// sequencing in the caller, up to [`MAX_SEQUENCE_ATTEMPTS`] head reads. For tools and
    /// tests that write through the store; safe beside a running sequencer (see the
    /// module docs), which then acks nobody.
    pub async fn publish(&self, new: NewDelta<'_>) -> Result<Published, PublishError> {
        let (item, first_state) = match self.enqueue(new, "", None).await? {
            Enqueued::Claimed(claim) => (claim.item, Some(claim.state)),
            Enqueued::Queued(item) => (*item, None),
            Enqueued::Published(published) => return Ok(published),
            Enqueued::InFlight { .. } => return Err(PublishError::InFlight),
            Enqueued::RateLimited { retry_after_ms } => {
                return Err(PublishError::RateLimited { retry_after_ms });
            }
            Enqueued::Conflict { head } => return Err(PublishError::Conflict { head }),
        };
        let attempts = Attempts {
            first_state,
            most: MAX_SEQUENCE_ATTEMPTS,
            busy: false,
        };
        let (mut done, left) = self
            .sequence_attempts(new.channel.as_str(), vec![item], None, attempts)
            .await?;
        for item in &left {
            self.release(item).await?;
        }
        match done.pop().map(|(_, outcome)| outcome) {
            Some(Sequenced::Published(published)) => Ok(published),
            Some(Sequenced::Conflict(head)) => Err(PublishError::Conflict { head }),
            Some(Sequenced::RateLimited { retry_after_ms }) => {
                Err(PublishError::RateLimited { retry_after_ms })
            }
            None => Err(PublishError::RateLimited {
                retry_after_ms: IN_FLIGHT_RETRY_MS,
            }),
        }
    }

    /// The delta item of `item` at `seq`, carrying the channel's bucket after it and the
    /// door's admission share.
    pub(super) fn delta_item(
        &self,
        channel: &str,
        item: &InboxItem,
        epoch: &str,
        seq: u64,
        tat: Option<u64>,
        adm: Option<u16>,
    ) -> DeltaItem {
        let ts = clock::now_ms();
        DeltaItem {
            pk: channel_pk(channel),
            sk: delta_sk(epoch, seq),
            seq,
            ep: epoch.to_owned(),
            id: item.id.clone(),
            from: item.from.clone(),
            ts,
            data: item.data.clone(),
            ttl: ts / 1000 + self.lifetimes.retention.as_secs(),
            tat,
            adm,
        }
    }

    /// Writes a delta unless its seq is taken. `Some(true)`: written (a refusal that
    /// finds this very item there is the SDK's retry of a write whose response was lost);
    /// `Some(false)`: the seq holds this message, written by another writer (who acked
    /// it); `None`: another message took the seq (the same id from another publisher
    /// included).
    pub(super) async fn put_delta(&self, delta: DeltaItem) -> Result<Option<bool>, StoreError> {
        let (id, from, ts) = (delta.id.clone(), delta.from.clone(), delta.ts);
        let request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(delta)?))
            .condition_expression("attribute_not_exists(pk)");
        Ok(match self.put_or_find(request).await? {
            Conditional::Written(()) => Some(true),
            Conditional::Refused(Some(found))
                if text(&found, "id") == Some(id.as_str())
                    && text(&found, "from") == Some(from.as_str()) =>
            {
                Some(number::<u64>(&found, "ts") == Some(ts))
            }
            Conditional::Refused(_) => None,
        })
    }

    /// Deletes a refused message's inbox item, so its id may be sent again; unless a
    /// retry has taken it over since (another lease), which is then the sequencer's again.
    pub(super) async fn release(&self, item: &InboxItem) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&item.pk))
            .key("sk", s(&item.sk))
            .condition_expression("lease = :lease")
            .expression_attribute_values(":lease", n(item.lease));
        conditional(self.send(request).await)?;
        Ok(())
    }

    /// Records a new epoch, unless another writer replaced `previous` first; marked busy
    /// when the sequencer starts it (`busy`).
    async fn start_epoch(
        &self,
        channel: &str,
        epoch: &str,
        previous: Option<&str>,
        busy: bool,
    ) -> Result<bool, StoreError> {
        let item = serde_dynamo::to_item(EpochItem {
            pk: channel_pk(channel),
            sk: EPOCH_SK.into(),
            ep: epoch.into(),
            at: clock::now_ms(),
            busy: busy.then(|| clock::now_ms() + BUSY_WINDOW_MS),
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
        Ok(matches!(
            conditional(self.send(request).await)?,
            Conditional::Written(_)
        ))
    }
}

/// A fresh epoch: the creation time and randomness, as an opaque string.
fn new_epoch() -> String {
    format!("{:x}{:04x}", clock::now_ms(), rand::random::<u16>())
}
