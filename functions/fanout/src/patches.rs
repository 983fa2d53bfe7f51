//! Delivers state channels' patches and presence changes: each write of a document that
//! changed it carries the merge patch from the version before (at most
//! `STATE_PATCH_RATE` a second per channel, see `deltacast::store`'s `state_fold` and
//! `presence_fold`). Every subscriber of a state channel gets its document's as `patch`
//! frames, every subscriber that asked for `presence` the presence document's as
//! `presence_patch` frames.
//!
//! A subscriber gets one frame per channel per batch. When a batch holds several changes
//! of one channel (the fan-out fell behind), a state channel's subscribers get the newest
//! document whole (a `state` frame, which clients take as a snapshot) and a presence's
//! watchers the changes composed into one `presence_patch` (from the first one's `from` to
//! the last one's `version`: each member's newest value replaces it, so composing is
//! exact): a channel's frames never outrun what the fan-out can post.
//!
//! Failed posts are handled as deltas' are: a gone connection is pruned; a post that
//! still fails after retries fails the channel's records (Lambda delivers them again;
//! clients drop versions they have); a frame that can never be delivered is skipped for
//! that connection, which then sees a version gap. A subscription whose token has expired
//! is skipped (its connection learns of it when it next acts, or from a delta).

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::EventRecord;
use deltacast::clock;
use deltacast::protocol::ServerMessage;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::Store;
use deltacast::stream::{StatePatch, patch_of};
use futures::{StreamExt, stream};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tracing::{error, warn};

/// A patch of the batch, with its record's place and sequence number.
pub struct PendingPatch {
    /// The record's place in the batch.
    pub position: usize,
    /// The record's sequence number.
    pub sequence_number: String,
    /// The channel.
    pub channel: String,
    /// Whether it is the channel's presence (sent to presence watchers only).
    pub presence: bool,
    /// The version it leads to (from `version - 1`).
    pub version: u64,
    /// The merge patch; `None`: a presence `resync`.
    pub patch: Option<Map<String, Value>>,
    /// A state document's whole value after it.
    pub value: Option<Map<String, Value>>,
}

/// What delivering the batch's patches did.
#[derive(Default)]
pub struct Delivered {
    /// Frames posted.
    pub frames: usize,
    /// Of those, presence patches (to presence watchers).
    pub presence_frames: usize,
    /// Connections found gone (to prune).
    pub gone: Vec<String>,
    /// Records to deliver again: (place, sequence number).
    pub failed: Vec<(usize, String)>,
}

/// The patches among the batch's records (the rest are deltas, or nothing of ours).
pub fn collect(records: &[EventRecord]) -> Vec<PendingPatch> {
    let mut patches = Vec::new();
    for (position, record) in records.iter().enumerate() {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        let found = match patch_of(record) {
            Ok(found) => found,
            Err(reason) => {
                error!(sequence_number, %reason, "skipping an unreadable document record");
                continue;
            }
        };
        let Some(StatePatch {
            channel,
            presence,
            version,
            patch,
            value,
        }) = found
        else {
            continue;
        };
        let object = |text: &str| match serde_json::from_str(text) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        let parsed = patch.as_deref().map(object);
        if matches!(parsed, Some(None)) || (!presence && parsed.is_none()) {
            error!(
                sequence_number,
                channel, "a document's patch is not a JSON object; skipped"
            );
            continue;
        }
        patches.push(PendingPatch {
            position,
            sequence_number,
            channel,
            presence,
            version,
            patch: parsed.flatten(),
            value: value.as_deref().and_then(object),
        });
    }
    patches
}

/// The one frame a channel's `list` (its changes in the batch, in version order) makes.
fn frame_of(channel: &str, presence: bool, list: &[&PendingPatch]) -> Option<String> {
    let (first, last) = (list.first()?, list.last()?);
    let text = |map: &Map<String, Value>| {
        RawValue::from_string(Value::Object(map.clone()).to_string()).expect("JSON")
    };
    if presence {
        let composed = list.iter().try_fold(Map::new(), |mut all, p| {
            all.extend(p.patch.clone()?);
            Some(all)
        });
        let patch = composed.as_ref().map(text);
        let frame = ServerMessage::PresencePatch {
            channel,
            from: first.version - 1,
            version: last.version,
            patch: patch.as_deref(),
            resync: patch.is_none(),
        };
        return Some(frame.to_json());
    }
    if list.len() == 1 {
        let patch = text(first.patch.as_ref()?);
        return Some(
            ServerMessage::Patch {
                channel,
                version: first.version,
                patch: &patch,
            }
            .to_json(),
        );
    }
    let value = last.value.as_ref()?;
    Some(
        ServerMessage::State {
            channel,
            version: last.version,
            value,
            id: None,
        }
        .to_json(),
    )
}

/// Posts each channel's patches to its subscribers, in version order.
pub async fn deliver<P: Push>(
    store: &Store,
    push: &P,
    retry: RetryPolicy,
    concurrency: usize,
    mut patches: Vec<PendingPatch>,
) -> Delivered {
    let mut delivered = Delivered::default();
    let key = |p: &PendingPatch| (p.channel.clone(), p.presence, p.version);
    patches.sort_by_key(key);
    patches.dedup_by(|a, b| key(a) == key(b));
    // (channel, presence) → its patches in version order.
    let mut channels: BTreeMap<(&str, bool), Vec<&PendingPatch>> = BTreeMap::new();
    for patch in &patches {
        channels
            .entry((&patch.channel, patch.presence))
            .or_default()
            .push(patch);
    }
    let now = clock::now_secs();
    for ((channel, presence), list) in channels {
        let failed = || list.iter().map(|p| (p.position, p.sequence_number.clone()));
        let Some(frame) = frame_of(channel, presence, &list) else {
            error!(channel, "a document record without its value; skipped");
            continue;
        };
        let subscribers = match store.subscribers(channel).await {
            Ok(subscribers) => subscribers,
            Err(err) => {
                error!(channel, error = %err, "could not read subscribers");
                delivered.failed.extend(failed());
                continue;
            }
        };
        let frame = &frame;
        let outcomes: Vec<(String, Result<bool, PushError>)> = stream::iter(subscribers)
            .filter(|s| std::future::ready(!s.expired(now) && (s.presence || !presence)))
            .map(|s| async move {
                match post_with_retry(push, &s.connection_id, frame, retry).await {
                    Ok(()) => (s.connection_id, Ok(true)),
                    Err(err @ (PushError::TooLarge | PushError::Rejected(_))) => {
                        error!(connection_id = s.connection_id, channel, error = %err, "patch cannot be delivered to this connection; skipped");
                        (s.connection_id, Ok(false))
                    }
                    Err(err) => (s.connection_id, Err(err)),
                }
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut failing = false;
        for (connection, outcome) in outcomes {
            match outcome {
                Ok(posted) => {
                    delivered.frames += usize::from(posted);
                    if presence {
                        delivered.presence_frames += usize::from(posted);
                    }
                }
                Err(PushError::Gone) => delivered.gone.push(connection),
                Err(err) => {
                    warn!(connection_id = connection, channel, error = %err, "patch delivery failed after retries");
                    failing = true;
                }
            }
        }
        if failing {
            delivered.failed.extend(failed());
        }
    }
    delivered
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pending(
        presence: bool,
        version: u64,
        patch: Option<Value>,
        value: Option<Value>,
    ) -> PendingPatch {
        let map = |v: Value| v.as_object().cloned().unwrap();
        PendingPatch {
            position: version as usize,
            sequence_number: version.to_string(),
            channel: "c".into(),
            presence,
            version,
            patch: patch.map(map),
            value: value.map(map),
        }
    }

    fn frame(presence: bool, list: &[PendingPatch]) -> Value {
        let list: Vec<&PendingPatch> = list.iter().collect();
        serde_json::from_str(&frame_of("c", presence, &list).unwrap()).unwrap()
    }

    #[test]
    fn one_change_is_a_patch_and_several_of_a_state_channel_its_newest_document() {
        let one = [pending(
            false,
            5,
            Some(json!({"a": 1})),
            Some(json!({"a": 1, "b": 2})),
        )];
        assert_eq!(
            frame(false, &one),
            json!({"type": "patch", "channel": "c", "version": 5, "patch": {"a": 1}})
        );
        let two = [
            pending(
                false,
                5,
                Some(json!({"a": 1})),
                Some(json!({"a": 1, "b": 2})),
            ),
            pending(false, 6, Some(json!({"b": null})), Some(json!({"a": 1}))),
        ];
        assert_eq!(
            frame(false, &two),
            json!({"type": "state", "channel": "c", "version": 6, "value": {"a": 1}})
        );
    }

    #[test]
    fn several_presence_changes_compose_into_one_frame() {
        let list = [
            pending(
                true,
                3,
                Some(json!({"m1": {"sub": "a", "at": 1}, "m2": {"sub": "b", "at": 1}})),
                None,
            ),
            pending(
                true,
                4,
                Some(json!({"m1": null, "m3": {"sub": "c", "at": 2}})),
                None,
            ),
        ];
        assert_eq!(
            frame(true, &list),
            json!({"type": "presence_patch", "channel": "c", "from": 2, "version": 4,
                   "patch": {"m1": null, "m2": {"sub": "b", "at": 1}, "m3": {"sub": "c", "at": 2}}})
        );
        let resync = [
            pending(true, 3, Some(json!({"m1": null})), None),
            pending(true, 4, None, None),
        ];
        assert_eq!(
            frame(true, &resync),
            json!({"type": "presence_patch", "channel": "c", "from": 2, "version": 4, "resync": true})
        );
    }
}
