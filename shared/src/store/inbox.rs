//! The first half of a publish: writing the message to its channel's inbox, where the
//! sequencer gives it a seq (`sequence`). The inbox item is also the message's claim on
//! its id, so a publish is one conditional put, however many publishers share the channel:
//! nothing here races for a seq.
//!
//! When the put finds the id already claimed (a retry, or the same id sent twice), the
//! message has either been sequenced, and the publisher gets its original ack, or is still
//! on its way: then the answer is [`Enqueued::InFlight`] while its lease lasts, and a retry
//! after the lease takes the claim over, so a message the sequencer never got (its stream
//! batch given up on) is not lost. Whether it was sequenced is a bounded read: its seq is
//! above the head its inbox item recorded (`after`), and the sequencer refuses a message
//! whose seq would be more than [`MAX_BACKLOG`] above it, so the answer lies in at most
//! that many deltas.

use tracing::debug;

use futures::{StreamExt, TryStreamExt};

use super::attributes::{Conditional, conditional, dynamo, n, number, s};
use super::history::{ChannelState, Head};
use super::items::{InboxItem, claim_sk, inbox_pk};
use super::{Store, StoreError};
use crate::clock;
use crate::config::RateLimit;
use crate::protocol::{Channel, MessageId, Payload};
use crate::store::Bucket;

/// Most seqs a message may end up above the head its inbox item recorded; beyond, the
/// sequencer refuses it as `rate_limited` (the channel is that far behind), so a
/// message's seq, when it has one, is always within this many deltas of `after`.
pub const MAX_BACKLOG: u64 = 1000;

/// How long a publisher whose id is in flight is asked to wait before sending it again:
/// about what the sequencer takes on a busy channel (a stream poll and a batch or two).
pub const IN_FLIGHT_RETRY_MS: u64 = 1000;

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

/// What [`Store::enqueue`] did.
#[derive(Debug, PartialEq)]
pub enum Enqueued {
    /// In the inbox: the sequencer acks the connection (or refuses) once it has a seq.
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
    /// Writes a publish to its channel's inbox, for connection `conn` to be acked by the
    /// sequencer, unless its id is claimed already, the channel is over `channel_limit`
    /// or `expectSeq` does not hold (checked again by the sequencer, which decides).
    pub async fn enqueue(
        &self,
        new: NewDelta<'_>,
        conn: &str,
        channel_limit: Option<RateLimit>,
    ) -> Result<Enqueued, StoreError> {
        let channel = new.channel.as_str();
        let state = self.channel_state(channel).await?;
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
        };
        let request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(&item)?))
            .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(now / 1000));
        let found = match self.put_or_find(request).await? {
            Conditional::Written(()) => return Ok(Enqueued::Queued(Box::new(item))),
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
            return Ok(Enqueued::Queued(Box::new(item)));
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
            debug!(channel, "publish with this id in flight");
            return Ok(Some(Enqueued::InFlight {
                retry_after_ms: (claimed.lease - now).min(IN_FLIGHT_RETRY_MS),
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
    async fn find_published(
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
    /// message (its first data) goes to the sequencer again, acked to the new connection.
    async fn take_over(&self, claimed: InboxItem, new: InboxItem) -> Result<Enqueued, StoreError> {
        let mut set = vec![
            "#conn = :conn",
            "#lease = :lease",
            "#after = :after",
            "#ttl = :ttl",
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
    /// The items of `images` (inbox items as the stream showed them) that are still in the
    /// inbox as shown: an item refused and deleted since, or taken over (another lease,
    /// whose own image comes later), must not be sequenced from an old image, or a batch
    /// delivered again would store a message its publisher was told was not stored.
    pub(crate) async fn still_queued(
        &self,
        images: Vec<InboxItem>,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let leases = futures::stream::iter(&images)
            .map(|image| async move {
                let out = self
                    .send(
                        self.read_item(&image.pk, &image.sk)
                            .projection_expression("lease"),
                    )
                    .await
                    .map_err(dynamo)?;
                Ok::<_, StoreError>(out.item.and_then(|item| number::<u64>(&item, "lease")))
            })
            .buffered(32)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(images
            .into_iter()
            .zip(leases)
            .filter_map(|(image, lease)| (lease == Some(image.lease)).then_some(image))
            .collect())
    }
}

/// How long until the channel's bucket (as its newest delta left it) takes one more
/// publish, or `None` when it takes one now.
pub(crate) fn channel_wait_ms(state: &ChannelState, limit: RateLimit, now_ms: u64) -> Option<u64> {
    Bucket::from_stored(state.tat).wait_ms(limit, now_ms, 1.0)
}
