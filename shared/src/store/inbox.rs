//! The first half of a publish: the message's claim on its id, written to its channel's
//! inbox. A quiet channel's publish is then stored by the message function itself
//! ([`Store::sequence_now`], the fast path); a busy channel's goes to the sequencer, which
//! gives a whole batch its seqs (`sequence`). Nothing here races for a seq.
//!
//! ## Who stores a message
//! A claim written without `q` is the message function's to store: it writes the delta at
//! the head it read, and if another writer took that seq, it hands the claim over (sets
//! `q`, [`Store::hand_over`]). A claim with `q` is the sequencer's: its stream filter
//! passes only those. A channel is busy for up to [`BUSY_WINDOW_MS`] after the sequencer's
//! last batch or a fast path's lost seq (`busy` on its epoch item, which every publish reads
//! anyway); a claim on a busy channel is written with `q` at once, so under contention the
//! fast path stops racing the sequencer (which would otherwise lose seq after seq to it),
//! and a channel the sequencer has left alone for that long goes back to the fast path by
//! itself. The sequencer renews the mark with a batch once half of it has run out (beside
//! the batch's writes, not before them), in a new epoch it starts, and at each seq it
//! loses; so a channel whose batches keep coming stays busy, and one left alone goes
//! quiet half a window to a window after its last batch.
//!
//! ## The same id again
//! When the put finds the id already claimed (a retry, or the same id sent twice), the
//! message has either been stored, and the publisher gets its original ack, or is still
//! on its way: then the answer is [`Enqueued::InFlight`] while its lease lasts (retry
//! after the rest of the lease: the ack comes by itself before that), and a retry
//! after the lease takes the claim over for the sequencer, so a message whose writer gave
//! up (a crash between the claim and the delta, a stream batch given up on) is not lost.
//! Whether it was stored is a bounded read: its seq is above the head its claim recorded
//! (`after`), and no writer stores a message more than [`MAX_BACKLOG`] above it, so the
//! answer lies in at most that many deltas.

use tracing::{debug, warn};

use std::collections::HashMap;

use super::attributes::{Conditional, conditional, dynamo, n, number, s, text};
use super::door::ChannelRead;
use super::history::{ChannelState, Head};
use super::items::{EPOCH_SK, InboxItem, channel_pk, claim_sk, inbox_pk};
use super::{Store, StoreError};
use crate::clock;
use crate::config::RateLimit;
use crate::protocol::{Channel, MessageId, Payload};
use crate::store::Bucket;

/// Most seqs a message may end up above the head its inbox item recorded; beyond, the
/// sequencer refuses it as `rate_limited` (the channel is that far behind), so a
/// message's seq, when it has one, is always within this many deltas of `after`.
pub const MAX_BACKLOG: u64 = 1000;

/// How long a publisher is asked to wait before sending a publish again when a retry
/// raced another for its claim, or a busy channel could not store it (a stream poll and a
/// batch or two).
pub const IN_FLIGHT_RETRY_MS: u64 = 1000;

/// How long a channel counts as busy after the sequencer's last batch or a fast path's
/// lost seq, so that publishes go straight to the sequencer instead of racing it for
/// seqs: about four stream polls on AWS. A channel quiet that long goes back to the fast
/// path.
pub const BUSY_WINDOW_MS: u64 = 1000;

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

/// A claim the caller stores itself ([`Store::sequence_now`]), with the channel as it
/// was read for it.
#[derive(Debug)]
pub struct Claim {
    /// The claim, as written (without `q`).
    pub item: InboxItem,
    /// The channel when it was claimed.
    pub(crate) state: ChannelState,
}

/// What [`Store::enqueue`] did.
#[derive(Debug)]
pub enum Enqueued {
    /// Claimed on a quiet channel: the caller stores it with [`Store::sequence_now`].
    Claimed(Box<Claim>),
    /// Claimed for the sequencer (the channel is busy, or a retry took an unstored claim
    /// over): the sequencer acks the connection (or refuses) once it has a seq.
    Queued(Box<InboxItem>),
    /// The same publisher's message with this id is stored already: its original ack.
    Published(Published),
    /// The same publisher's message with this id is on its way; retry with the same id
    /// after this many milliseconds.
    InFlight {
        /// Milliseconds.
        retry_after_ms: u64,
    },
    /// The channel takes no more publishes for now; retry after this many milliseconds.
    RateLimited {
        /// Milliseconds.
        retry_after_ms: u64,
    },
    /// `expectSeq` does not match the head; nothing was written.
    Conflict {
        /// The head.
        head: Head,
    },
}

impl Store {
    /// Claims a publish's id in its channel's inbox, for connection `conn` to be acked,
    /// unless its id is claimed already, the channel is over `channel_limit` or
    /// `expectSeq` does not hold (checked again by whoever stores it, which decides). On a
    /// busy channel the claim is the sequencer's at once (see the module docs).
    pub async fn enqueue(
        &self,
        new: NewDelta<'_>,
        conn: &str,
        channel_limit: Option<RateLimit>,
    ) -> Result<Enqueued, StoreError> {
        let state = self.channel_state(new.channel.as_str()).await?;
        self.enqueue_read(ChannelRead(state), new, conn, channel_limit)
            .await
    }

    /// [`Store::enqueue`] with the channel as [`Store::door`] read it.
    pub async fn enqueue_read(
        &self,
        read: ChannelRead,
        new: NewDelta<'_>,
        conn: &str,
        channel_limit: Option<RateLimit>,
    ) -> Result<Enqueued, StoreError> {
        let channel = new.channel.as_str();
        let ChannelRead(state) = read;
        let head = state.head();
        let now = clock::now_ms();
        let refusal = match (new.expect_seq, channel_limit) {
            (Some(expected), _) if expected != head.seq => {
                Some(Enqueued::Conflict { head: head.clone() })
            }
            (_, Some(limit)) => {
                channel_wait_ms(&state, limit, now).map(|wait| Enqueued::RateLimited {
                    retry_after_ms: wait,
                })
            }
            _ => None,
        };
        if let Some(refusal) = refusal {
            // The same id again is answered as before, whatever the head or the limit.
            let claim = self
                .send(self.read_item(inbox_pk(channel), claim_sk(new.from, new.id.as_str())))
                .await
                .map_err(dynamo)?
                .item
                .map(serde_dynamo::from_item::<_, InboxItem>)
                .transpose()?
                .filter(|claim| claim.ttl >= now / 1000);
            return match claim {
                Some(claim) => Ok(self
                    .claimed(channel, claim, &state, None)
                    .await?
                    .unwrap_or(refusal)),
                None => Ok(refusal),
            };
        }
        let item = InboxItem {
            pk: inbox_pk(channel),
            sk: claim_sk(new.from, new.id.as_str()),
            id: new.id.as_str().to_owned(),
            from: new.from.to_owned(),
            data: new.data.get().to_owned(),
            conn: conn.to_owned(),
            ep: head.epoch.clone(),
            after: head.seq,
            exp: new.expect_seq,
            lease: now + self.lifetimes.publish_lease.as_millis() as u64,
            ttl: now / 1000 + self.lifetimes.retention.as_secs(),
            q: state.busy(now).then_some(1),
        };
        let request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(&item)?))
            .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(now / 1000));
        let found = match self.put_or_find(request).await? {
            Conditional::Written(()) => return Ok(claimed_now(item, state)),
            Conditional::Refused(found) => found,
        };
        let Some(found) = found else {
            // Refused, yet nothing in the way: it expired between the check and now.
            return Ok(Enqueued::InFlight {
                retry_after_ms: IN_FLIGHT_RETRY_MS,
            });
        };
        let claimed: InboxItem = serde_dynamo::from_item(found)?;
        // The SDK retried a put that had taken effect: this very publish is queued.
        if claimed == item {
            return Ok(claimed_now(item, state));
        }
        Ok(self
            .claimed(channel, claimed, &state, Some(item))
            .await?
            .expect("with a new item, a claim is always answered"))
    }

    /// The answer to a publish whose id is `claimed` already: the original ack if it is
    /// stored, "in flight" while its lease lasts, and once the lease has run out, the
    /// claim taken over by `new` (queued again), or `None` without one.
    async fn claimed(
        &self,
        channel: &str,
        claimed: InboxItem,
        state: &ChannelState,
        new: Option<InboxItem>,
    ) -> Result<Option<Enqueued>, StoreError> {
        let now = clock::now_ms();
        if let Some(published) = self.find_published(channel, &claimed, state).await? {
            return Ok(Some(Enqueued::Published(published)));
        }
        if claimed.lease > now {
            // Its ack comes by itself once it is stored; asking again before its lease is
            // out would only add work to a channel that is behind.
            debug!(channel, "publish with this id in flight");
            return Ok(Some(Enqueued::InFlight {
                retry_after_ms: claimed.lease - now,
            }));
        }
        // Not sequenced up to the head read before, and its lease ran out: take the claim
        // over and queue it again. The new `after` is that head, since anything at or
        // below it was searched.
        match new {
            Some(new) => self.take_over(claimed, new).await.map(Some),
            None => Ok(None),
        }
    }

    /// Where the claimed message's delta is, if the sequencer has stored it: among the
    /// [`MAX_BACKLOG`] seqs after the head its inbox item recorded, in that epoch, or from
    /// the start of the live epoch if the channel started one since.
    pub(super) async fn find_published(
        &self,
        channel: &str,
        claimed: &InboxItem,
        state: &ChannelState,
    ) -> Result<Option<Published>, StoreError> {
        let live = state.live.as_ref().map(|(epoch, _)| epoch.as_str());
        let mut places: Vec<(&str, u64)> = Vec::new();
        if let Some(epoch) = claimed.ep.as_deref() {
            places.push((epoch, claimed.after));
        }
        if let Some(live) = live
            && claimed.ep.as_deref() != Some(live)
        {
            places.push((live, 0));
        }
        for (epoch, after) in places {
            let found = self
                .seqs_of(
                    channel,
                    epoch,
                    after,
                    after + MAX_BACKLOG,
                    Some((&claimed.from, &claimed.id)),
                )
                .await?;
            if let Some(seq) = found.values().next() {
                return Ok(Some(Published {
                    seq: *seq,
                    epoch: epoch.to_owned(),
                    duplicate: true,
                }));
            }
        }
        Ok(None)
    }

    /// Takes over a claim whose lease ran out with its message unsequenced: the same
    /// message (its first data) goes to the sequencer (`q`), acked to the new connection.
    async fn take_over(&self, claimed: InboxItem, new: InboxItem) -> Result<Enqueued, StoreError> {
        let mut set = vec![
            "#conn = :conn",
            "#lease = :lease",
            "#after = :after",
            "#ttl = :ttl",
            "q = :q",
        ];
        let mut remove = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&claimed.pk))
            .key("sk", s(&claimed.sk))
            .condition_expression("#lease = :previous")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#conn", "conn")
            .expression_attribute_names("#lease", "lease")
            .expression_attribute_names("#after", "after")
            .expression_attribute_names("#ep", "ep")
            .expression_attribute_names("#exp", "exp")
            .expression_attribute_values(":conn", s(&new.conn))
            .expression_attribute_values(":lease", n(new.lease))
            .expression_attribute_values(":after", n(new.after))
            .expression_attribute_values(":ttl", n(new.ttl))
            .expression_attribute_values(":q", n(1))
            .expression_attribute_values(":previous", n(claimed.lease));
        match &new.ep {
            Some(epoch) => {
                set.push("#ep = :ep");
                request = request.expression_attribute_values(":ep", s(epoch));
            }
            None => remove.push("#ep"),
        }
        match new.exp {
            Some(exp) => {
                set.push("#exp = :exp");
                request = request.expression_attribute_values(":exp", n(exp));
            }
            None => remove.push("#exp"),
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match conditional(self.send(request.update_expression(expression)).await)? {
            Conditional::Written(_) => {
                debug!("publish taken over after its lease");
                Ok(Enqueued::Queued(Box::new(InboxItem {
                    conn: new.conn,
                    ep: new.ep,
                    after: new.after,
                    exp: new.exp,
                    lease: new.lease,
                    ttl: new.ttl,
                    q: Some(1),
                    ..claimed
                })))
            }
            // Another retry took it over first.
            Conditional::Refused(_) => Ok(Enqueued::InFlight {
                retry_after_ms: IN_FLIGHT_RETRY_MS,
            }),
        }
    }
}

impl Store {
    /// Hands a claim the fast path could not store (another writer took its seq) to the
    /// sequencer: sets `q`, unless a retry has taken the claim over since (another lease,
    /// the sequencer's already) or it is gone.
    pub(crate) async fn hand_over(&self, item: &InboxItem) -> Result<(), StoreError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&item.pk))
            .key("sk", s(&item.sk))
            .update_expression("SET q = :q")
            .condition_expression("lease = :lease")
            .expression_attribute_values(":q", n(1))
            .expression_attribute_values(":lease", n(item.lease));
        if let Conditional::Refused(_) = conditional(self.send(request).await)? {
            debug!("claim changed before its hand-over; the sequencer has it already");
        }
        self.mark_busy(item.channel().unwrap_or_default()).await;
        Ok(())
    }

    /// Marks `channel` busy for [`BUSY_WINDOW_MS`] from now, on its epoch item (which
    /// every publish reads anyway): its publishes go straight to the sequencer meanwhile.
    /// A channel without an epoch item yet is left as it is (the sequencer's new epoch
    /// carries the mark). The mark is a hint: a failure to write it is logged, not
    /// returned, so it never fails the publish or the batch it goes with.
    pub(crate) async fn mark_busy(&self, channel: &str) {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(channel_pk(channel)))
            .key("sk", s(EPOCH_SK))
            .update_expression("SET busy = :until")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":until", n(clock::now_ms() + BUSY_WINDOW_MS));
        if let Err(err) = conditional(self.send(request).await) {
            warn!(channel, error = %err, "could not mark the channel busy");
        }
    }

    /// The items of `images` (inbox items as the stream showed them) that are still in the
    /// inbox as shown: an item refused and deleted since, or taken over (another lease,
    /// whose own image comes later), must not be sequenced from an old image, or a batch
    /// delivered again would store a message its publisher was told was not stored. One
    /// `BatchGetItem` per 100 images (`read_batch`).
    pub(crate) async fn still_queued(
        &self,
        images: Vec<InboxItem>,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let keys = images
            .iter()
            .map(|image| HashMap::from([("pk".into(), s(&image.pk)), ("sk".into(), s(&image.sk))]))
            .collect();
        let leases: HashMap<(String, String), u64> = self
            .read_batch(keys, "pk, sk, lease")
            .await?
            .iter()
            .filter_map(|item| {
                let key = (text(item, "pk")?.to_owned(), text(item, "sk")?.to_owned());
                Some((key, number::<u64>(item, "lease")?))
            })
            .collect();
        Ok(images
            .into_iter()
            .filter(|image| leases.get(&(image.pk.clone(), image.sk.clone())) == Some(&image.lease))
            .collect())
    }
}

/// The answer to a claim just written: the caller's to store, or the sequencer's.
fn claimed_now(item: InboxItem, state: ChannelState) -> Enqueued {
    if item.q.is_some() {
        Enqueued::Queued(Box::new(item))
    } else {
        Enqueued::Claimed(Box::new(Claim { item, state }))
    }
}

/// How long until the channel's bucket (as its newest delta left it) takes one more
/// publish, or `None` when it takes one now.
pub(crate) fn channel_wait_ms(state: &ChannelState, limit: RateLimit, now_ms: u64) -> Option<u64> {
    Bucket::from_stored(state.tat).wait_ms(limit, now_ms, 1.0)
}
