//! The items of live state: a state channel's ops, spread over `STATE_SHARDS` partitions
//! so that writers never contend for one item, and its document, one item per channel
//! kept without expiry; a channel's presence members, one item each, and its presence
//! document (count, version and last patch). See `items` for every key.
//!
//! | item | `pk` | `sk` | other attributes |
//! |---|---|---|---|
//! | state op (a message's ops, and its idempotency claim) | `o#<channel>#<shard>` | `m#<len(sub)>:<sub>#<id>` | `id`, `from`, `ops`, `at`, `conn`; `ttl` only with `STATE_OP_TTL_SECONDS` |
//! | state document | `h#<channel>` | `state` | `v` (version), `val`, `st` (stamps), `cp` (the fold's checkpoint per shard), `w` (write count), `wat` (when `v` last rose), `patch` (from `v - 1`, when this write raised `v`) |
//! | presence member | `p#<channel>` | `<connectionId>` | `sub`, `data` (JSON text), `at` (entered or updated, ms), `exp` and `ttl` (when its connection's items expire, Unix s) |
//! | membership, by connection | `c#<connectionId>` | `p#<channel>` | `ttl` |
//! | presence document | `h#<channel>` | `presence` | `v` (version), `n` (members), `cp` (`{"p": the last member record folded}`), `w`, `wat`, `patch` (the member changes from `v - 1`) or `resync` |
//!
//! The shard of an op is a hash of its publisher and id, so a repeat of the same `(sub,
//! id)` meets its own claim; changing `STATE_SHARDS` moves claims, so a repeat sent across
//! the change may apply again.

use serde::{Deserialize, Serialize};

use super::items::channel_pk;

/// Partition key prefix of op items; the sequencer's stream filter selects on it.
pub const OP_PREFIX: &str = "o#";
/// Sort key of a state channel's document.
pub const STATE_SK: &str = "state";

/// Partition key of a state channel's ops in shard `shard`.
pub fn op_pk(channel: &str, shard: u32) -> String {
    format!("{OP_PREFIX}{channel}#{shard}")
}

/// The shard of `(sub, id)` among `shards`: FNV-1a, stable across builds and versions.
pub fn op_shard(sub: &str, id: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in sub.bytes().chain([0xff]).chain(id.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// Partition key of a state channel's document (the channel's own partition).
pub fn state_pk(channel: &str) -> String {
    channel_pk(channel)
}

/// Partition key prefix of presence members; the sequencer's stream filter selects on it.
pub const MEMBER_PREFIX: &str = "p#";
/// Sort key of a channel's presence document.
pub const PRESENCE_SK: &str = "presence";

/// Partition key of a channel's presence members.
pub fn members_pk(channel: &str) -> String {
    format!("{MEMBER_PREFIX}{channel}")
}

/// Sort key, under the connection, of its membership of `channel`.
pub fn membership_sk(channel: &str) -> String {
    format!("{MEMBER_PREFIX}{channel}")
}

/// A presence member as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberItem {
    /// `p#<channel>`.
    pub pk: String,
    /// The member's connection id.
    pub sk: String,
    /// The member's user.
    pub sub: String,
    /// Its data, as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Entered or last updated, Unix ms.
    pub at: u64,
    /// When its connection's items expire, Unix seconds: a member whose connection
    /// vanished without `$disconnect` is not listed after it.
    pub exp: u64,
    /// Expiry for DynamoDB TTL (the same).
    pub ttl: u64,
}

/// A channel's presence document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceItem {
    /// `h#<channel>`.
    pub pk: String,
    /// `presence`.
    pub sk: String,
    /// Raised by each write that folded member changes.
    pub v: u64,
    /// Members.
    pub n: u64,
    /// The stream sequence number of the last member record folded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cp: Option<String>,
    /// Writes so far: what a writer's condition compares.
    pub w: u64,
    /// When `v` last rose, Unix ms.
    pub wat: u64,
    /// The member changes from `v - 1`, as JSON text (a merge patch of the member map).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Set instead of `patch` when the changes were too many to send: watchers read the
    /// member list again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync: Option<bool>,
}

/// One `update` as stored (and as it reaches the fold in the stream's `NewImage`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpItem {
    /// `o#<channel>#<shard>`.
    pub pk: String,
    /// The claim: `m#<len(sub)>:<sub>#<id>`.
    pub sk: String,
    /// The message id.
    pub id: String,
    /// The publisher's `sub`.
    pub from: String,
    /// The ops, as JSON text (an array).
    pub ops: String,
    /// When API Gateway received the update, Unix ms: the ops' time in last-writer-wins.
    pub at: u64,
    /// The connection to tell if the fold cannot apply the ops.
    pub conn: String,
    /// Expiry for DynamoDB TTL, Unix seconds; absent: kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}

impl OpItem {
    /// The channel and shard its key names.
    pub fn channel_and_shard(&self) -> Option<(&str, u32)> {
        let rest = self.pk.strip_prefix(OP_PREFIX)?;
        let (channel, shard) = rest.rsplit_once('#')?;
        Some((channel, shard.parse().ok()?))
    }
}

/// A state channel's document item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateItem {
    /// `h#<channel>`.
    pub pk: String,
    /// `state`.
    pub sk: String,
    /// The version subscribers see: raised by each write that changed the value.
    pub v: u64,
    /// The value, as JSON text (an object).
    pub val: String,
    /// The paths' stamps, as JSON text: `{"<pointer>": [at, "by"]}`.
    pub st: String,
    /// The fold's position per op shard: the stream sequence number of the last op
    /// record folded.
    pub cp: std::collections::BTreeMap<String, String>,
    /// Writes so far: what a writer's condition compares.
    pub w: u64,
    /// When `v` last rose, Unix ms (the patch rate counts from it).
    pub wat: u64,
    /// The merge patch from `v - 1` to `v`, as JSON text; absent when this write did not
    /// raise `v`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(op_shard("alice", "vote", 10), op_shard("alice", "vote", 10));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(op_shard("ab", "c", 1 << 20), op_shard("a", "bc", 1 << 20));
        let mut counts = [0u32; 10];
        for i in 0..10_000 {
            counts[op_shard(&format!("user{i}"), "vote", 10) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        let item = OpItem {
            pk: op_pk("state:poll", 7),
            sk: "m".into(),
            id: "i".into(),
            from: "f".into(),
            ops: "[]".into(),
            at: 1,
            conn: "c".into(),
            ttl: None,
        };
        assert_eq!(item.channel_and_shard(), Some(("state:poll", 7)));
    }
}
