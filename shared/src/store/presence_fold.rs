//! Folding a batch's member records (a member item written or removed: `enter`,
//! `update`, `leave`, `$disconnect`, a gone connection pruned, TTL) into the channel's
//! presence document: the member count, the version, and the merge patch of the member
//! map that watchers get. Exactly once and at most `STATE_PATCH_RATE` patches a second,
//! as `state_fold` explains for documents: the records of one channel's members are one
//! partition key's, so they come in order and one sequence number is the checkpoint.
//!
//! A patch larger than [`MAX_PRESENCE_PATCH_BYTES`] (hundreds of members changing within
//! one patch interval) is not sent: the document says `resync`, and watchers read the
//! member list again.

use serde_json::{Map, Value};

use super::attributes::dynamo;
use super::state_fold::{FOLD_DEADLINE, after, wait_for_slot};
use super::state_items::{PRESENCE_SK, PresenceItem, state_pk};
use super::{Store, StoreError};
use crate::clock;
use crate::config::StateSettings;

/// The largest member patch sent; a larger one becomes `resync`.
pub const MAX_PRESENCE_PATCH_BYTES: usize = 32 * 1024;

/// One member record of a stream batch.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberRecord {
    /// The stream record's sequence number.
    pub sequence_number: String,
    /// The member id (its connection id).
    pub member: String,
    /// What happened to it.
    pub change: MemberChange,
}

/// What a member record says.
#[derive(Clone, Debug, PartialEq)]
pub enum MemberChange {
    /// A new member, as watchers see it (`{sub, data, at}`).
    Entered(Value),
    /// A member's new data, as watchers see it.
    Updated(Value),
    /// The member is gone.
    Left,
}

/// What a presence fold did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PresenceFolded {
    /// The presence version after it.
    pub version: u64,
    /// Members after it.
    pub members: u64,
    /// Records folded now (the rest had been folded before).
    pub folded: usize,
}

/// The presence document as read.
#[derive(Clone, Debug, Default)]
struct Read {
    version: u64,
    members: u64,
    checkpoint: Option<String>,
    writes: u64,
    written_at: u64,
}

impl Store {
    /// Folds `records` (one channel's member records, in stream order) into its presence.
    pub async fn fold_presence(
        &self,
        channel: &str,
        records: &[MemberRecord],
        settings: &StateSettings,
    ) -> Result<PresenceFolded, StoreError> {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        while started.elapsed() < FOLD_DEADLINE {
            attempts += 1;
            let read = self.read_presence(channel).await?;
            let fresh = unfolded(records, read.checkpoint.as_deref());
            let Some(last) = fresh.last() else {
                return Ok(PresenceFolded {
                    version: read.version,
                    members: read.members,
                    folded: 0,
                });
            };
            let (members, patch) = fold_members(read.members, &fresh);
            wait_for_slot(read.written_at, settings).await;
            let text = Value::Object(patch).to_string();
            let item = PresenceItem {
                pk: state_pk(channel),
                sk: PRESENCE_SK.into(),
                v: read.version + 1,
                n: members,
                cp: Some(last.sequence_number.clone()),
                w: read.writes + 1,
                wat: clock::now_ms(),
                resync: (text.len() > MAX_PRESENCE_PATCH_BYTES).then_some(true),
                patch: (text.len() <= MAX_PRESENCE_PATCH_BYTES).then_some(text),
            };
            if self.put_unless_written(&item, read.writes).await? {
                return Ok(PresenceFolded {
                    version: item.v,
                    members,
                    folded: fresh.len(),
                });
            }
        }
        Err(StoreError::Contended {
            what: format!("presence of {channel}"),
            attempts,
        })
    }

    async fn read_presence(&self, channel: &str) -> Result<Read, StoreError> {
        let out = self
            .send(self.read_item(state_pk(channel), PRESENCE_SK))
            .await
            .map_err(dynamo)?;
        let Some(item) = out.item else {
            return Ok(Read::default());
        };
        let item: PresenceItem = serde_dynamo::from_item(item)?;
        Ok(Read {
            version: item.v,
            members: item.n,
            checkpoint: item.cp,
            writes: item.w,
            written_at: item.wat,
        })
    }
}

/// The records after `checkpoint`, each once (a batch may hold a record twice).
fn unfolded<'a>(records: &'a [MemberRecord], checkpoint: Option<&str>) -> Vec<&'a MemberRecord> {
    let mut done = checkpoint.map(str::to_owned);
    let mut fresh = Vec::new();
    for record in records {
        if done
            .as_deref()
            .is_none_or(|cp| after(&record.sequence_number, cp))
        {
            done = Some(record.sequence_number.clone());
            fresh.push(record);
        }
    }
    fresh
}

/// The member count after `records`, and the merge patch of the member map they make.
fn fold_members(members: u64, records: &[&MemberRecord]) -> (u64, Map<String, Value>) {
    let mut count = members;
    let mut patch = Map::new();
    for record in records {
        let value = match &record.change {
            MemberChange::Entered(value) => {
                count += 1;
                value.clone()
            }
            MemberChange::Updated(value) => value.clone(),
            MemberChange::Left => {
                count = count.saturating_sub(1);
                Value::Null
            }
        };
        patch.insert(record.member.clone(), value);
    }
    (count, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: &str, member: &str, change: MemberChange) -> MemberRecord {
        MemberRecord {
            sequence_number: seq.into(),
            member: member.into(),
            change,
        }
    }

    #[test]
    fn members_are_counted_and_the_last_change_of_each_is_patched() {
        let a = record(
            "1",
            "a",
            MemberChange::Entered(json!({"sub": "ann", "at": 1})),
        );
        let b = record(
            "2",
            "b",
            MemberChange::Entered(json!({"sub": "bo", "at": 1})),
        );
        let a2 = record(
            "3",
            "a",
            MemberChange::Updated(json!({"sub": "ann", "data": 1, "at": 2})),
        );
        let b2 = record("4", "b", MemberChange::Left);
        let c = record("5", "c", MemberChange::Left);
        let (count, patch) = fold_members(1, &[&a, &b, &a2, &b2, &c]);
        assert_eq!(count, 1, "1 + 2 entered - 2 left");
        let twice = [a.clone(), a.clone(), b.clone()];
        assert_eq!(
            unfolded(&twice, None).len(),
            2,
            "a record held twice is folded once"
        );
        assert_eq!(unfolded(&twice, Some("1")).len(), 1);
        assert_eq!(
            Value::Object(patch),
            json!({"a": {"sub": "ann", "data": 1, "at": 2}, "b": null, "c": null})
        );
    }
}
