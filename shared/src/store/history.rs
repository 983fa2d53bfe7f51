//! A channel's retained history: its head (live epoch and newest seq) and the deltas
//! after a seq. History is addressed by seq within an epoch; a channel whose newest delta
//! has expired starts a new epoch, so a client that reconnects learns whether its gap
//! could be recovered.

use super::attributes::{Item, dynamo, required_number, s};
use super::items::{DELTA_PREFIX, DeltaItem, EPOCH_SK, EpochItem, channel_pk, delta_sk};
use super::{Store, StoreError};
use crate::clock;
use crate::protocol::{Delta, MAX_SEQ};

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
    /// Whether more retained deltas follow.
    pub more: bool,
    /// About how many bytes the deltas take as frames (what the page is capped by).
    pub bytes: usize,
}

/// What a publish needs to know about a channel.
pub(crate) struct ChannelState {
    /// The epoch item's value, live or not.
    pub(crate) recorded: Option<String>,
    /// The live epoch and its newest seq.
    pub(crate) live: Option<(String, u64)>,
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
                    .projection_expression("sk, seq, #ttl")
                    .expression_attribute_names("#ttl", "ttl")
                    .scan_index_forward(false)
                    .limit(1)
                    .consistent_read(true),
            )
            .await
            .map_err(dynamo)?;
        let now = clock::now_secs();
        let newest = match out.items().first() {
            Some(item) => Some((
                required_number(item, &pk, "seq")?,
                required_number(item, &pk, "ttl")?,
            )),
            None => None,
        };
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
            recorded: Some(epoch.ep),
        })
    }

    /// Reads deltas with seq > `after` in `epoch`, in order: at most `limit`, and no more
    /// than about `max_bytes` of frames. Expired deltas are skipped.
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
        loop {
            let want = (limit + 1 - page.deltas.len()).min(200) as i32;
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
            for item in out.items.unwrap_or_default() {
                let item: DeltaItem = serde_dynamo::from_item(item)?;
                if item.expired(now) {
                    continue;
                }
                // Envelope: type, channel, seq, epoch, id, from, ts and punctuation.
                let size = item.data.len() + item.id.len() + item.from.len() + channel.len() + 128;
                if page.deltas.len() == limit
                    || (!page.deltas.is_empty() && page.bytes + size > max_bytes)
                {
                    page.more = true;
                    return Ok(page);
                }
                page.bytes += size;
                page.deltas.push(Delta::try_from(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(page),
            }
        }
    }

    /// The delta at `seq` of `epoch`, expired or not.
    pub(crate) async fn delta(
        &self,
        channel: &str,
        epoch: &str,
        seq: u64,
    ) -> Result<Option<DeltaItem>, StoreError> {
        let out = self
            .send(self.read_item(channel_pk(channel), delta_sk(epoch, seq)))
            .await
            .map_err(dynamo)?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }
}
