//! The table's keys and item shapes, and their conversions to domain types. The README's
//! Data model section mirrors this file.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | connection | `c#<connectionId>` | `meta` | `sub`, `caps`, `exp`, `at`, `ip`, `ttl` |
//! | connection liveness | `c#<connectionId>` | `live` | `seen`, `ttl`; rate-limit bucket `tat`; subscription count `subs` and its last writer's tag `sw`; `xn`, the tag of the fan-out that told the connection its token expired |
//! | subscription, by connection | `c#<connectionId>` | `s#<channel>` | `ttl`, `tag` (its writer's) |
//! | subscription, by channel | `h#<channel>` | `s#<connectionId>` | `sub`, `exp` (token expiry, Unix seconds; absent on items written before it was stored: never expires), `co` (true when subscribed with `coalesce`; absent: one frame per delta), `ttl` |
//! | delta | `h#<channel>` | `d#<epoch>#<seq, 12 digits>` | `seq`, `ep`, `id`, `from`, `ts`, `data`, `ttl`; `tat`, the channel's rate-limit bucket after this delta; `adm`, the door's admission share while the channel is over its limit or behind |
//! | inbox (a publish, and its idempotency claim) | `q#<channel>` | `m#<len(sub)>:<sub>#<messageId>` | `id`, `from`, `data`, `conn`, `ep`, `after`, `exp`, `lease`, `ttl` |
//! | channel epoch | `h#<channel>` | `epoch` | `ep`, `at` |
//! | user rate-limit bucket | `u#<sub>` | `rate` | `tat`, `ttl` |
//!
//! Every item that names a connection lives under `c#<connectionId>` or is listed there
//! (the `s#` items), so removing a connection is one Query on its own partition; only
//! its publishes' inbox items keep its id (`conn`, whom to ack) for their retention. The
//! liveness item is the connection's presence: frames whose connection has none any more
//! write nothing.
//!
//! A publish is first written to the channel's inbox, keyed by its message id, then given
//! its seq by the sequencer, which writes the delta (see `sequence`). The inbox has its own
//! partition key, so a channel's publishes and its history do not share one partition's
//! write rate.
//!
//! A message id is the publisher's idempotency key, so the claim names the publisher too:
//! the same id from another `sub` is another message. A `sub` may hold any character (`#`
//! and `:` included, up to `MAX_SUB_LEN` bytes), so it is written with its length in bytes
//! first: the key is read from the left as digits up to the first `:`, exactly that many
//! bytes of `sub`, `#`, then the id, which makes it collision-free for any `sub` and id
//! without escaping (and keeps it under 200 bytes, far from DynamoDB's 1 KB sort key
//! limit). Claims written before the inbox (`h#<channel>` / `m#...`) are never read again (a
//! retry spanning the upgrade may store its message twice); they expire with their retention.

use crate::protocol::{Delta, Payload};
use serde::{Deserialize, Serialize};

/// Partition key of a connection's items.
pub fn connection_pk(connection_id: &str) -> String {
    format!("c#{connection_id}")
}

/// Partition key of a channel's items.
pub fn channel_pk(channel: &str) -> String {
    format!("h#{channel}")
}

/// Partition key of a channel's inbox: publishes waiting for their seq, and the
/// idempotency claims of those that have one.
pub fn inbox_pk(channel: &str) -> String {
    format!("{INBOX_PREFIX}{channel}")
}

/// Partition key prefix of inbox items; the sequencer's stream filter selects on it.
pub const INBOX_PREFIX: &str = "q#";

/// Partition key of a user's rate-limit bucket.
pub fn user_pk(sub: &str) -> String {
    format!("u#{sub}")
}

/// Sort key prefix shared by subscription items.
pub const SUBSCRIPTION_PREFIX: &str = "s#";
/// Sort key prefix of delta items; the stream filter selects on it.
pub const DELTA_PREFIX: &str = "d#";
/// Sort key of a connection's main item.
pub const META_SK: &str = "meta";
/// Sort key of a connection's liveness item.
pub const LIVE_SK: &str = "live";
/// Sort key of a user's rate-limit bucket.
pub const USER_BUCKET_SK: &str = "rate";
/// Sort key of a channel's epoch item.
pub const EPOCH_SK: &str = "epoch";

/// Sort key of a subscription item.
pub fn subscription_sk(name: &str) -> String {
    format!("{SUBSCRIPTION_PREFIX}{name}")
}

/// Sort key of a delta item. Seqs are zero-padded so that they sort as numbers.
pub fn delta_sk(epoch: &str, seq: u64) -> String {
    format!("{DELTA_PREFIX}{epoch}#{seq:012}")
}

/// Sort key of a publish claim: message `message_id` of publisher `sub`, length-prefixed
/// so that no two `(sub, id)` pairs share a key (see the module docs).
pub fn claim_sk(sub: &str, message_id: &str) -> String {
    format!("m#{}:{sub}#{message_id}", sub.len())
}

/// A connection's main item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionItem {
    /// `c#<connectionId>`.
    pub pk: String,
    /// `meta`.
    pub sk: String,
    /// The user.
    pub sub: String,
    /// Capabilities, as JSON text.
    pub caps: String,
    /// Token expiry, Unix seconds.
    pub exp: u64,
    /// Connected at, Unix milliseconds.
    pub at: u64,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Expiry for DynamoDB TTL, Unix seconds.
    pub ttl: u64,
}

/// A delta item as stored (and as it arrives in the stream's `NewImage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaItem {
    /// `h#<channel>`.
    pub pk: String,
    /// `d#<epoch>#<seq>`.
    pub sk: String,
    /// Position in the channel.
    pub seq: u64,
    /// Epoch.
    pub ep: String,
    /// Message id.
    pub id: String,
    /// Publisher's `sub`.
    pub from: String,
    /// Publish time, Unix milliseconds.
    pub ts: u64,
    /// The payload, as JSON text.
    pub data: String,
    /// Expiry for DynamoDB TTL, Unix seconds.
    pub ttl: u64,
    /// The channel's rate-limit bucket after this delta (`tat`, Unix ms; see
    /// `rate_limit`): the newest delta carries the channel's bucket, so keeping it costs
    /// no write of its own. Absent on deltas written before the channel limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tat: Option<u64>,
    /// The share of publishes the door admits while the channel is over its limit or
    /// behind, per mille (`adm`; see `admission`): absent, all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adm: Option<u16>,
}

/// A stored item could not be read back as what its key says it is.
#[derive(Debug, thiserror::Error)]
#[error("item {key} is malformed: {reason}")]
pub struct MalformedItem {
    /// The item's keys.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl DeltaItem {
    /// Whether a stream record's keys are a delta item's.
    pub fn is_delta_key(keys: &serde_dynamo::Item) -> bool {
        matches!(keys.get("sk"), Some(serde_dynamo::AttributeValue::S(sk)) if sk.starts_with(DELTA_PREFIX))
    }

    /// Reads a delta item from a stream record's `NewImage`.
    pub fn from_image(image: serde_dynamo::Item) -> Result<Self, serde_dynamo::Error> {
        serde_dynamo::from_item(image)
    }

    /// Builds the item for a new delta.
    pub fn new(delta: &Delta, ttl: u64) -> Self {
        Self {
            pk: channel_pk(&delta.channel),
            sk: delta_sk(&delta.epoch, delta.seq),
            seq: delta.seq,
            ep: delta.epoch.clone(),
            id: delta.id.clone(),
            from: delta.from.clone(),
            ts: delta.ts,
            data: delta.data.get().to_owned(),
            ttl,
            tat: None,
            adm: None,
        }
    }

    /// Whether DynamoDB TTL may already have deleted it (deletion can lag by days, so
    /// expired items are filtered on read).
    pub fn expired(&self, now_secs: u64) -> bool {
        self.ttl <= now_secs
    }
}

impl TryFrom<DeltaItem> for Delta {
    type Error = MalformedItem;

    fn try_from(item: DeltaItem) -> Result<Self, Self::Error> {
        let malformed = |reason: String| MalformedItem {
            key: format!("{}/{}", item.pk, item.sk),
            reason,
        };
        let channel = item
            .pk
            .strip_prefix("h#")
            .ok_or_else(|| malformed("partition key is not a channel".into()))?
            .to_owned();
        let data = Payload::from_json(item.data.clone())
            .map_err(|e| malformed(format!("data is not JSON: {e}")))?;
        Ok(Delta {
            channel,
            seq: item.seq,
            epoch: item.ep,
            id: item.id,
            from: item.from,
            ts: item.ts,
            data,
        })
    }
}

/// A publish in the channel's inbox: the message, and its claim on the id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxItem {
    /// `q#<channel>`.
    pub pk: String,
    /// `m#<len(sub)>:<sub>#<messageId>`.
    pub sk: String,
    /// The message id.
    pub id: String,
    /// The publisher's `sub`.
    pub from: String,
    /// The payload, as JSON text.
    pub data: String,
    /// The connection to ack (the latest one that sent the message).
    pub conn: String,
    /// The channel's live epoch when it was written, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ep: Option<String>,
    /// The channel's head seq in `ep` when it was written: the message's seq is above it,
    /// and at most `MAX_BACKLOG` above it (the sequencer refuses it otherwise).
    pub after: u64,
    /// `expectSeq`, if the publish is guarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Until when (Unix ms) the publish is in flight; after that a retry may take it over.
    pub lease: u64,
    /// Expiry for DynamoDB TTL, Unix seconds: the claim lasts as long as the history.
    pub ttl: u64,
    /// `1` once the message is the sequencer's to store (queued on a busy channel, handed
    /// over by a fast path that lost its seq, or taken over by a retry): the sequencer's
    /// stream filter passes only such items. Absent while the message function's fast
    /// path stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<u8>,
}

impl InboxItem {
    /// The channel, from the partition key.
    pub fn channel(&self) -> Option<&str> {
        self.pk.strip_prefix(INBOX_PREFIX)
    }
}

/// A channel's current epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochItem {
    /// `h#<channel>`.
    pub pk: String,
    /// `epoch`.
    pub sk: String,
    /// The epoch.
    pub ep: String,
    /// Created at, Unix milliseconds.
    pub at: u64,
    /// Until when (Unix ms) the channel is busy: renewed by the sequencer's batches and
    /// set by a fast path that lost its seq; until then publishes go straight to the
    /// sequencer instead of racing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_keys_sort_by_seq() {
        let mut keys: Vec<String> = [10, 9, 100, 1].iter().map(|s| delta_sk("e", *s)).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "d#e#000000000001",
                "d#e#000000000009",
                "d#e#000000000010",
                "d#e#000000000100"
            ]
        );
    }

    #[test]
    fn delta_round_trips_through_its_item() {
        let delta = Delta {
            channel: "chat:lobby".into(),
            seq: 3,
            epoch: "e1".into(),
            id: "m".into(),
            from: "alice".into(),
            ts: 5,
            data: Payload::from_json("[1,2]".into()).unwrap(),
        };
        let item = DeltaItem::new(&delta, 99);
        assert_eq!(item.pk, "h#chat:lobby");
        assert!(item.expired(99) && !item.expired(98));
        assert_eq!(Delta::try_from(item).unwrap(), delta);
    }

    /// Reads a claim key back into its `(sub, id)`: that one exists for every key is
    /// what makes the key collision-free.
    fn split_claim(sk: &str) -> (&str, &str) {
        let rest = sk.strip_prefix("m#").expect("claim prefix");
        let (len, rest) = rest.split_once(':').expect("length");
        let len: usize = len.parse().expect("length is a number");
        let (sub, rest) = rest.split_at(len);
        (sub, rest.strip_prefix('#').expect("separator"))
    }

    #[test]
    fn claim_keys_of_different_publishers_never_collide() {
        // Pairs that an unprefixed `m#<sub>#<id>` (or `m#<sub>:<id>`) would merge.
        let pairs = [
            ("a#b", "c"),
            ("a", "b#c"),
            ("a:b", "c"),
            ("a", "b:c"),
            ("1:a", "b"),
            ("1", "a#b"),
            ("3:a#b", "c"),
            ("3", "a#b#c"),
            ("", "3:a#b#c"),
            ("é#", "x"),
            ("é", "#x"),
            ("alice", "m1"),
            ("mallory", "m1"),
        ];
        let keys: std::collections::HashSet<String> =
            pairs.iter().map(|(sub, id)| claim_sk(sub, id)).collect();
        assert_eq!(keys.len(), pairs.len(), "{keys:?}");
        for (sub, id) in pairs {
            assert_eq!(split_claim(&claim_sk(sub, id)), (sub, id));
        }
        assert_eq!(claim_sk("a#b", "m1"), "m#3:a#b#m1");
    }
}
