//! A state channel's document item: reading it (strongly consistent, for the fold and for
//! snapshots), and writing it back only if nobody wrote it since it was read.
//!
//! The item holds the value, the paths' stamps (last writer wins needs them), the fold's
//! checkpoint and the last patch. DynamoDB allows 400 KB per item: the value is held to
//! `STATE_MAX_BYTES` (at most 96 KB) and the patch to the same, so the stamps get what is
//! left of [`MAX_ITEM_BYTES`]; past it the oldest stamps are dropped first (a write older
//! than a dropped stamp can then win over it: only within the stream's 24 hours, and only
//! on a document with thousands of distinct paths written).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::attributes::{Conditional, conditional, n};
use super::state_items::{STATE_SK, StateItem, state_pk};
use super::{Store, StoreError};
use crate::state::{Document, Path, Stamp};

/// The most bytes a document item is allowed, below DynamoDB's 400 KB with room for the
/// keys and numbers.
pub const MAX_ITEM_BYTES: usize = 380 * 1024;

/// A document as read, with what its next write needs.
#[derive(Clone, Debug, Default)]
pub struct StoredState {
    /// The document.
    pub document: Document,
    /// The fold's checkpoint: op shard → the last stream sequence number folded.
    pub checkpoint: BTreeMap<String, String>,
    /// Writes so far (0: no item yet).
    pub writes: u64,
    /// When the version last rose, Unix ms.
    pub written_at: u64,
}

impl Store {
    /// A state channel's document: empty at version 0 when it has never been written.
    pub async fn state(&self, channel: &str) -> Result<StoredState, StoreError> {
        let out = self
            .send(self.read_item(state_pk(channel), STATE_SK))
            .await
            .map_err(super::attributes::dynamo)?;
        let Some(item) = out.item else {
            return Ok(StoredState::default());
        };
        let item: StateItem = serde_dynamo::from_item(item)?;
        decode(item)
    }

    /// Writes `state` as the channel's document unless someone wrote it after `read`
    /// (`false` then: read again). `patch` is the merge patch from the version before,
    /// when this write raises it.
    pub async fn write_state(
        &self,
        channel: &str,
        state: &StoredState,
        read_writes: u64,
        patch: Option<&Value>,
    ) -> Result<bool, StoreError> {
        let item = encode(channel, state, read_writes + 1, patch);
        self.put_unless_written(&item, read_writes).await
    }

    /// Puts a document item (a state channel's or a presence's) unless someone wrote it
    /// after it was read with `read_writes` writes (0: there was none); `false` then.
    pub(super) async fn put_unless_written<T: serde::Serialize>(
        &self,
        item: &T,
        read_writes: u64,
    ) -> Result<bool, StoreError> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(serde_dynamo::to_item(item)?));
        request = if read_writes == 0 {
            request.condition_expression("attribute_not_exists(pk)")
        } else {
            request
                .condition_expression("w = :w")
                .expression_attribute_values(":w", n(read_writes))
        };
        Ok(match conditional(self.send(request).await)? {
            Conditional::Written(_) => true,
            Conditional::Refused(_) => false,
        })
    }
}

/// The item for `state`, trimming the oldest stamps to stay within [`MAX_ITEM_BYTES`].
fn encode(channel: &str, state: &StoredState, writes: u64, patch: Option<&Value>) -> StateItem {
    let val = Value::Object(state.document.value.clone()).to_string();
    let patch = patch.map(Value::to_string);
    let mut stamps: Vec<(&Path, &Stamp)> = state.document.stamps.iter().collect();
    let fixed = val.len() + patch.as_ref().map_or(0, String::len) + 64 * state.checkpoint.len();
    let mut st = stamps_text(&stamps);
    if fixed + st.len() > MAX_ITEM_BYTES {
        stamps.sort_by(|a, b| b.1.cmp(a.1));
        let mut budget = MAX_ITEM_BYTES.saturating_sub(fixed);
        stamps.retain(|(path, stamp)| {
            let cost = path.to_string().len() + stamp.by.len() + 32;
            let keep = cost <= budget;
            budget = budget.saturating_sub(cost);
            keep
        });
        st = stamps_text(&stamps);
    }
    StateItem {
        pk: state_pk(channel),
        sk: STATE_SK.into(),
        v: state.document.version,
        val,
        st,
        cp: state.checkpoint.clone(),
        w: writes,
        wat: state.written_at,
        patch,
    }
}

fn stamps_text(stamps: &[(&Path, &Stamp)]) -> String {
    let map: Map<String, Value> = stamps
        .iter()
        .map(|(path, stamp)| {
            (
                path.to_string(),
                Value::Array(vec![stamp.at.into(), Value::String(stamp.by.clone())]),
            )
        })
        .collect();
    Value::Object(map).to_string()
}

/// The document an item holds.
fn decode(item: StateItem) -> Result<StoredState, StoreError> {
    let malformed = |reason: &str| super::items::MalformedItem {
        key: format!("{}/{}", item.pk, item.sk),
        reason: reason.into(),
    };
    let Ok(Value::Object(value)) = serde_json::from_str(&item.val) else {
        return Err(malformed("`val` is not a JSON object").into());
    };
    let Ok(Value::Object(raw_stamps)) = serde_json::from_str(&item.st) else {
        return Err(malformed("`st` is not a JSON object").into());
    };
    let mut stamps = BTreeMap::new();
    for (pointer, stamp) in raw_stamps {
        let (Ok(path), Some([Value::Number(at), Value::String(by)])) =
            (Path::parse(&pointer), stamp.as_array().map(Vec::as_slice))
        else {
            return Err(malformed("a stamp in `st` is not [at, by]").into());
        };
        let at = at
            .as_u64()
            .ok_or_else(|| malformed("a stamp's time is not a number"))?;
        stamps.insert(path, Stamp { at, by: by.clone() });
    }
    Ok(StoredState {
        document: Document::new(value, item.v, stamps),
        checkpoint: item.cp,
        writes: item.w,
        written_at: item.wat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_item_reads_back_as_the_document_it_was_made_of() {
        let mut stamps = BTreeMap::new();
        stamps.insert(
            Path::parse("/a/b~1c").unwrap(),
            Stamp {
                at: 5,
                by: "u#1".into(),
            },
        );
        stamps.insert(
            Path::root(),
            Stamp {
                at: 2,
                by: "v#2".into(),
            },
        );
        let value = json!({"a": {"b/c": 1}}).as_object().unwrap().clone();
        let state = StoredState {
            document: Document::new(value, 3, stamps),
            checkpoint: BTreeMap::from([("4".into(), "0001".into())]),
            writes: 7,
            written_at: 99,
        };
        let item = encode("state:x", &state, 8, Some(&json!({"a": 1})));
        assert_eq!(
            (item.w, item.v, item.patch.as_deref()),
            (8, 3, Some(r#"{"a":1}"#))
        );
        let back = decode(item).unwrap();
        assert_eq!(back.document, state.document);
        assert_eq!((back.writes, back.written_at), (8, 99));
        assert_eq!(back.checkpoint, state.checkpoint);
    }

    #[test]
    fn the_oldest_stamps_go_first_when_the_item_would_be_too_large() {
        let mut stamps = BTreeMap::new();
        for i in 0..20_000u64 {
            stamps.insert(
                Path::parse(&format!("/k{i:05}")).unwrap(),
                Stamp {
                    at: i,
                    by: "x".repeat(20),
                },
            );
        }
        let state = StoredState {
            document: Document::new(Map::new(), 1, stamps),
            ..StoredState::default()
        };
        let item = encode("c", &state, 1, None);
        assert!(item.st.len() < MAX_ITEM_BYTES, "{}", item.st.len());
        let back = decode(item).unwrap();
        let kept = back.document.stamps;
        assert!(kept.len() > 1000 && kept.len() < 20_000, "{}", kept.len());
        assert!(
            kept.contains_key(&Path::parse("/k19999").unwrap()),
            "the newest stay"
        );
        assert!(
            !kept.contains_key(&Path::parse("/k00000").unwrap()),
            "the oldest go"
        );
    }
}
