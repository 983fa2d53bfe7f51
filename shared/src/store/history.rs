//! A channel's retained history: its head (live epoch and newest seq) and the deltas
//! after a seq. History is addressed by seq within an epoch; a channel whose newest delta
//! has expired starts a new epoch, so a client that reconnects learns whether its gap
//! could be recovered.
//!
//! ## Expired deltas cost a bounded read
//! DynamoDB TTL deletes expired items late (by days, at times), so reads skip deltas whose
//! `ttl` has passed. A channel with a long backlog of such deltas would otherwise make one
//! `history` or catch-up read page after page of them. [`Store::deltas_after`] reads at most
//! [`EXPIRED_READ_BUDGET`] items beyond the page it returns; when the budget runs out first
//! it answers with what it found, `more`, and [`DeltaPage::next`] past the last delta it
//! read (expired or not), so a client paging with `since = next` always moves forward and
//! reaches the live deltas. Expired deltas are the oldest ones (`ttl` is the publish time
//! plus the retention, while that setting stays the same), so they come first in a read
//! and a few pages get past them.

use std::collections::HashMap;

use super::admission::SHARE_LIFETIME_MS;
use super::attributes::{Item, dynamo, number, required_number, s, text};
use super::items::{DELTA_PREFIX, DeltaItem, EPOCH_SK, EpochItem, channel_pk, delta_sk};
use super::{Store, StoreError};
use crate::clock;
use crate::protocol::{Delta, MAX_SEQ};
use tracing::debug;

/// A channel's head: its live epoch and newest seq (`None` and 0 when the channel has no
/// retained history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The live epoch.
    pub epoch: Option<String>,
    /// Newest seq in the epoch.
    pub seq: u64,
}

/// A page of retained deltas.
#[derive(Debug, Default)]
pub struct DeltaPage {
    /// Deltas in seq order.
    pub deltas: Vec<Delta>,
    /// Whether more retained deltas may follow.
    pub more: bool,
    /// About how many bytes the deltas take as frames (what the page is capped by).
    pub bytes: usize,
    /// With `more`: the seq to read after next, the last one this read got past (the last
    /// delta returned, or an expired one beyond it when the read budget ran out).
    pub next: Option<u64>,
}

/// Most items one [`Store::deltas_after`] call reads beyond the `limit + 1` it needs (the
/// page and the item that tells `more`): what expired deltas may cost a call. An item
/// count, not bytes, because Query's `Limit` counts items, so the budget holds before a
/// request is sent (a byte budget could only be checked after a Query had read up to
/// 1 MB). 200 items are one Query page: at most about 5 MB (200 deltas of 24 KiB) or
/// 1,200 read units in the worst case, about 8 read units for small deltas, and a paging
/// client gets past 10,000 expired deltas in at most 50 requests.
pub const EXPIRED_READ_BUDGET: usize = 200;

/// Most items one Query of [`Store::deltas_after`] asks for.
const QUERY_ITEMS: usize = 200;

/// What a publish needs to know about a channel.
#[derive(Clone, Debug)]
pub(crate) struct ChannelState {
    /// The epoch item's value, live or not.
    pub(crate) recorded: Option<String>,
    /// The live epoch and its newest seq.
    pub(crate) live: Option<(String, u64)>,
    /// The channel's rate-limit bucket, as the newest delta left it.
    pub(crate) tat: Option<u64>,
    /// The door's admission share, per mille, as the newest delta left it (`admission`).
    pub(crate) admit: Option<u16>,
    /// Until when (Unix ms) the channel is busy, as its epoch item says.
    pub(crate) busy_until: Option<u64>,
}

impl ChannelState {
    /// The head as clients see it.
    pub(crate) fn head(&self) -> Head {
        match &self.live {
            Some((epoch, seq)) => Head {
                epoch: Some(epoch.clone()),
                seq: *seq,
            },
            None => Head::default(),
        }
    }

    /// Whether the sequencer is storing this channel's publishes at `now_ms`.
    pub(crate) fn busy(&self, now_ms: u64) -> bool {
        self.busy_until.is_some_and(|until| until > now_ms)
    }
}

impl Store {
    /// The channel's head.
    pub async fn head(&self, channel: &str) -> Result<Head, StoreError> {
        Ok(self.channel_state(channel).await?.head())
    }

    /// Reads the epoch item, then the newest delta of that epoch.
    pub(crate) async fn channel_state(&self, channel: &str) -> Result<ChannelState, StoreError> {
        let pk = channel_pk(channel);
        let epoch = self
            .send(self.read_item(&pk, EPOCH_SK))
            .await
            .map_err(dynamo)?
            .item
            .map(serde_dynamo::from_item::<_, EpochItem>)
            .transpose()?;
        let Some(epoch) = epoch else {
            return Ok(ChannelState {
                recorded: None,
                live: None,
                tat: None,
                admit: None,
                busy_until: None,
            });
        };
        let out = self
            .send(
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
                    .expression_attribute_values(":pk", s(&pk))
                    .expression_attribute_values(":d", s(format!("{DELTA_PREFIX}{}#", epoch.ep)))
                    .projection_expression("sk, seq, #ttl, #ts, tat, adm")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_names("#ts", "ts")
                    .scan_index_forward(false)
                    .limit(1)
                    .consistent_read(true),
            )
            .await
            .map_err(dynamo)?;
        let now_ms = clock::now_ms();
        let now = now_ms / 1000;
        let newest = match out.items().first() {
            Some(item) => Some((
                required_number(item, &pk, "seq")?,
                required_number(item, &pk, "ttl")?,
            )),
            None => None,
        };
        let tat = out.items().first().and_then(|item| number(item, "tat"));
        // A share is applied only while fresh (`admission`).
        let admit = out
            .items()
            .first()
            .filter(|item| {
                number::<u64>(item, "ts").is_some_and(|ts| now_ms <= ts + SHARE_LIFETIME_MS)
            })
            .and_then(|item| number(item, "adm"));
        let live = match newest {
            // History starts over once the newest delta has expired.
            Some((_, ttl)) if ttl <= now => None,
            Some((seq, _)) => Some(seq),
            // An epoch whose first publish never completed is still usable while recent.
            None if epoch.at / 1000 + self.lifetimes.retention.as_secs() > now => Some(0),
            None => None,
        };
        Ok(ChannelState {
            live: live.map(|seq| (epoch.ep.clone(), seq)),
            busy_until: epoch.busy,
            recorded: Some(epoch.ep),
            tat,
            admit,
        })
    }

    /// Reads deltas with seq > `after` in `epoch`, in order: at most `limit`, and no more
    /// than about `max_bytes` of frames. Expired deltas are skipped, reading at most
    /// `limit + 1 +` [`EXPIRED_READ_BUDGET`] items in all (see the module docs).
    pub async fn deltas_after(
        &self,
        channel: &str,
        epoch: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<DeltaPage, StoreError> {
        let mut page = DeltaPage::default();
        if after >= MAX_SEQ {
            // No seq follows; the key range below would be empty (and invalid).
            return Ok(page);
        }
        let now = clock::now_secs();
        let mut start: Option<Item> = None;
        // Items this call may read, and has read; how many were expired; the last seq read.
        let cap = limit + 1 + EXPIRED_READ_BUDGET;
        let (mut read, mut expired, mut last) = (0usize, 0usize, after);
        loop {
            let needed = limit + 1 - page.deltas.len();
            // What the page still needs; once expired deltas turn up, as many as the budget
            // allows, since more of them are likely to follow (they are the oldest).
            let want = if expired == 0 { needed } else { cap - read }
                .min(cap - read)
                .min(QUERY_ITEMS) as i32;
            let out = self
                .send(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                        .expression_attribute_values(":pk", s(channel_pk(channel)))
                        .expression_attribute_values(
                            ":from",
                            s(delta_sk(epoch, after.saturating_add(1))),
                        )
                        .expression_attribute_values(":to", s(delta_sk(epoch, MAX_SEQ)))
                        .consistent_read(true)
                        .limit(want)
                        .set_exclusive_start_key(start.take()),
                )
                .await
                .map_err(dynamo)?;
            let items = out.items.unwrap_or_default();
            read += items.len();
            for item in items {
                let item: DeltaItem = serde_dynamo::from_item(item)?;
                if item.expired(now) {
                    expired += 1;
                    last = item.seq;
                    continue;
                }
                // Envelope: type, channel, seq, epoch, id, from, ts and punctuation.
                let size = item.data.len() + item.id.len() + item.from.len() + channel.len() + 128;
                if page.deltas.len() == limit
                    || (!page.deltas.is_empty() && page.bytes + size > max_bytes)
                {
                    page.more = true;
                    page.next = Some(last);
                    return Ok(page);
                }
                page.bytes += size;
                last = item.seq;
                page.deltas.push(Delta::try_from(item)?);
            }
            match out.last_evaluated_key.filter(|key| !key.is_empty()) {
                Some(_) if read >= cap => {
                    debug!(
                        channel,
                        after, expired, "read budget spent on expired deltas"
                    );
                    page.more = true;
                    page.next = Some(last);
                    return Ok(page);
                }
                Some(key) => start = Some(key),
                None => return Ok(page),
            }
        }
    }

    /// The seqs of the deltas in `epoch` with `after < seq <= to`, expired or not, by
    /// `(from, id)`; only the one message `only` when given (the others are filtered out
    /// by DynamoDB, though read and billed all the same).
    pub(crate) async fn seqs_of(
        &self,
        channel: &str,
        epoch: &str,
        after: u64,
        to: u64,
        only: Option<(&str, &str)>,
    ) -> Result<HashMap<(String, String), u64>, StoreError> {
        let mut found = HashMap::new();
        let to = to.min(MAX_SEQ);
        if after >= to {
            return Ok(found);
        }
        let mut start: Option<Item> = None;
        loop {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(channel_pk(channel)))
                .expression_attribute_values(":from", s(delta_sk(epoch, after + 1)))
                .expression_attribute_values(":to", s(delta_sk(epoch, to)))
                .projection_expression("seq, id, #from")
                .expression_attribute_names("#from", "from")
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            if let Some((from, id)) = only {
                request = request
                    .filter_expression("id = :id AND #from = :sender")
                    .expression_attribute_values(":id", s(id))
                    .expression_attribute_values(":sender", s(from));
            }
            let out = self.send(request).await.map_err(dynamo)?;
            for item in out.items() {
                if let (Some(from), Some(id), Some(seq)) =
                    (text(item, "from"), text(item, "id"), number(item, "seq"))
                {
                    found.insert((from.to_owned(), id.to_owned()), seq);
                }
            }
            match out.last_evaluated_key.filter(|key| !key.is_empty()) {
                Some(key) => start = Some(key),
                None => return Ok(found),
            }
        }
    }
}
