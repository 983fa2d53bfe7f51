//! Folding a batch's op records into their state channel's document (the sequencer does
//! it, fed by the stream): read the document, apply the ops it has not seen, and write it
//! back only if nobody wrote it meanwhile; otherwise start over from the new document.
//!
//! ## Exactly once
//! An op item is inserted once (its key is its claim), but Lambda may deliver its stream
//! record again (a retried batch). The document keeps, per op shard, the stream sequence
//! number of the last record it folded (`cp`); a shard's records come in order, one batch
//! at a time, whatever the `ParallelizationFactor`, so a record at or below that number
//! has been folded and is skipped. The checkpoint is written with the value, in the same
//! put, so a fold either happened with its checkpoint or not at all.
//!
//! ## At most `STATE_PATCH_RATE` patches a second
//! Each write that changes the value raises the version and carries the merge patch from
//! the one before, which the fan-out sends to subscribers. A fold that changes the value
//! less than `1/STATE_PATCH_RATE` s after the last change waits for its turn first, so
//! ops that arrive meanwhile pile up in the stream and are folded, and patched, together:
//! subscribers get at most `STATE_PATCH_RATE` patches a second whatever the write rate.

use std::cmp::Ordering;
use std::time::Duration;

use super::state_doc::StoredState;
use super::state_items::OpItem;
use super::{Store, StoreError};
use crate::clock;
use crate::config::StateSettings;
use crate::state::{Folded, Op, Stamp, check, merge_patch};

/// How long a fold keeps starting over after other writers got in first (each lane of a
/// busy channel wins a patch slot in turn; the sequencer's timeout is 60 s).
pub(super) const FOLD_DEADLINE: Duration = Duration::from_secs(40);

/// One op record of a stream batch.
#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Its op shard (from the item's key).
    pub shard: u32,
    /// The stream record's sequence number.
    pub sequence_number: String,
    /// The op item.
    pub item: OpItem,
}

/// Ops the fold could not apply (the document is unchanged by them): their sender is told,
/// and their op item is deleted, so that the id may be sent again.
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The op item's keys.
    pub key: (String, String),
    /// The connection that sent them.
    pub conn: String,
    /// Their message id.
    pub id: String,
    /// Why, for the sender.
    pub reason: String,
    /// Whether the document's size limit was the reason.
    pub too_large: bool,
}

/// What a fold did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FoldDone {
    /// The document's version after it.
    pub version: u64,
    /// Records folded now (the rest had been folded before).
    pub folded: usize,
    /// Whether the value changed (and so a patch went out).
    pub changed: bool,
    /// Messages not applied.
    pub rejected: Vec<Rejection>,
}

/// Waits for a channel's next patch slot: 1/`STATE_PATCH_RATE` s after the change
/// written at `written_at` (see the module docs).
pub(super) async fn wait_for_slot(written_at: u64, settings: &StateSettings) {
    let slot = written_at + settings.patch_interval_ms();
    let now = clock::now_ms();
    if now < slot {
        tokio::time::sleep(Duration::from_millis(slot - now)).await;
    }
}

/// Whether stream sequence number `a` comes after `b` (both decimal, of any length).
pub(super) fn after(a: &str, b: &str) -> bool {
    (a.len(), a).cmp(&(b.len(), b)) == Ordering::Greater
}

impl Store {
    /// Folds `records` (one channel's, in stream order) into `channel`'s document.
    pub async fn fold(
        &self,
        channel: &str,
        records: &[OpRecord],
        settings: &StateSettings,
    ) -> Result<FoldDone, StoreError> {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        while started.elapsed() < FOLD_DEADLINE {
            attempts += 1;
            let read = self.state(channel).await?;
            let fresh: Vec<&OpRecord> = records
                .iter()
                .filter(|r| {
                    read.checkpoint
                        .get(&r.shard.to_string())
                        .is_none_or(|done| after(&r.sequence_number, done))
                })
                .collect();
            if fresh.is_empty() {
                return Ok(FoldDone {
                    version: read.document.version,
                    ..FoldDone::default()
                });
            }
            let (mut next, rejected, patch) = fold_into(&read, &fresh, settings);
            if patch.is_some() {
                wait_for_slot(read.written_at, settings).await;
                next.written_at = clock::now_ms();
            }
            if self
                .write_state(channel, &next, read.writes, patch.as_ref())
                .await?
            {
                self.release_refused(&rejected).await;
                return Ok(FoldDone {
                    version: next.document.version,
                    folded: fresh.len(),
                    changed: patch.is_some(),
                    rejected,
                });
            }
        }
        Err(StoreError::Contended {
            what: format!("state document of {channel}"),
            attempts,
        })
    }
}

impl Store {
    /// Deletes the op items of refused messages (their ids free again). A failure is only
    /// logged: the document is right either way, and the id stays taken.
    async fn release_refused(&self, rejected: &[Rejection]) {
        if rejected.is_empty() {
            return;
        }
        let deletes = rejected
            .iter()
            .map(|r| super::attributes::delete_request(&r.key.0, &r.key.1))
            .collect();
        if let Err(err) = self.write_batch(deletes).await {
            tracing::warn!(error = %err, "could not free the ids of refused ops");
        }
    }
}

/// The document after `fresh`, the messages it refused, and the patch (when the value
/// changed).
fn fold_into(
    read: &StoredState,
    fresh: &[&OpRecord],
    settings: &StateSettings,
) -> (StoredState, Vec<Rejection>, Option<serde_json::Value>) {
    let mut next = read.clone();
    let mut rejected = Vec::new();
    for record in fresh {
        let shard = record.shard.to_string();
        // A record the batch holds twice is folded once.
        let done = next.checkpoint.get(&shard);
        if done.is_some_and(|done| !after(&record.sequence_number, done)) {
            continue;
        }
        let item = &record.item;
        let ops = serde_json::from_str::<Vec<Op>>(&item.ops)
            .map_err(|err| format!("stored ops unreadable: {err}"))
            .and_then(|ops| check(&ops).map_err(|err| err.to_string()));
        let stamp = Stamp {
            at: item.at,
            by: format!("{}#{}", item.from, item.id),
        };
        let reason = match ops {
            Err(reason) => Some(reason),
            Ok(ops) => match next.document.fold(&ops, &stamp, settings.max_bytes) {
                Folded::Applied { .. } => None,
                Folded::Rejected(reason) => Some(reason),
            },
        };
        if let Some(reason) = reason {
            rejected.push(Rejection {
                key: (item.pk.clone(), item.sk.clone()),
                conn: item.conn.clone(),
                id: item.id.clone(),
                too_large: reason.contains("STATE_MAX_BYTES"),
                reason,
            });
        }
        let shard = record.shard.to_string();
        let newer = next
            .checkpoint
            .get(&shard)
            .is_none_or(|done| after(&record.sequence_number, done));
        if newer {
            next.checkpoint
                .insert(shard, record.sequence_number.clone());
        }
    }
    next.document.prune_stamps(clock::now_ms());
    let patch = merge_patch(&read.document.value, &next.document.value);
    if patch.is_some() {
        next.document.version += 1;
    }
    (next, rejected, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::state_items::op_pk;
    use serde_json::json;

    fn record(shard: u32, seq: &str, id: &str, ops: serde_json::Value) -> OpRecord {
        OpRecord {
            shard,
            sequence_number: seq.into(),
            item: OpItem {
                pk: op_pk("state:x", shard),
                sk: format!("m#{id}"),
                id: id.into(),
                from: "alice".into(),
                ops: ops.to_string(),
                at: 1,
                conn: "c1".into(),
                ttl: None,
            },
        }
    }

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(after("100", "99") && after("0100", "0099") && !after("99", "99"));
    }

    #[test]
    fn a_fold_applies_moves_the_checkpoint_and_patches_what_changed() {
        let a = record(1, "200", "a", json!([{"op": "inc", "path": "/n", "by": 2}]));
        let c = record(
            1,
            "300",
            "c",
            json!([{"op": "set", "path": "/t", "value": "hi"}]),
        );
        let mut b = record(
            2,
            "150",
            "b",
            json!([{"op": "set", "path": "/u", "value": 1}, {"op": "inc", "path": "/t", "by": 1}]),
        );
        // Newer than c's `set` of /t (an older inc would be outdated by it, not refused).
        b.item.at = 2;
        let read = StoredState::default();
        let (next, rejected, patch) = fold_into(&read, &[&a, &c, &b], &StateSettings::default());
        assert_eq!(
            serde_json::Value::Object(next.document.value.clone()),
            json!({"n": 2, "t": "hi"})
        );
        assert_eq!(next.document.version, 1);
        assert_eq!(patch, Some(json!({"n": 2, "t": "hi"})));
        assert_eq!(next.checkpoint.get("1").map(String::as_str), Some("300"));
        assert_eq!(next.checkpoint.get("2").map(String::as_str), Some("150"));
        assert_eq!(
            rejected.len(),
            1,
            "b's inc meets a string, so b applies nothing"
        );
        assert_eq!(
            (rejected[0].id.as_str(), rejected[0].too_large),
            ("b", false)
        );
        // Nothing changes the value: no new version, no patch, the checkpoint still moves.
        let d = record(
            1,
            "400",
            "d",
            json!([{"op": "set", "path": "/t", "value": "hi"}]),
        );
        let (again, _, patch) = fold_into(&next, &[&d], &StateSettings::default());
        assert_eq!((again.document.version, patch), (1, None));
        assert_eq!(again.checkpoint.get("1").map(String::as_str), Some("400"));
    }

    #[test]
    fn a_record_the_batch_holds_twice_is_folded_once() {
        let a = record(1, "200", "a", json!([{"op": "inc", "path": "/n", "by": 2}]));
        let (next, _, _) = fold_into(
            &StoredState::default(),
            &[&a, &a.clone()],
            &StateSettings::default(),
        );
        assert_eq!(
            serde_json::Value::Object(next.document.value),
            json!({"n": 2})
        );
    }

    #[test]
    fn the_size_limit_is_named() {
        let settings = StateSettings {
            max_bytes: 64,
            ..StateSettings::default()
        };
        let big = record(
            1,
            "1",
            "big",
            json!([{"op": "set", "path": "/a", "value": "x".repeat(100)}]),
        );
        let (next, rejected, patch) = fold_into(&StoredState::default(), &[&big], &settings);
        assert!(next.document.value.is_empty() && patch.is_none());
        assert!(rejected[0].too_large, "{:?}", rejected[0]);
    }
}
