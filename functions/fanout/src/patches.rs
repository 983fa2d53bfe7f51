//! Delivers state channels' patches and presence changes: each write of a document that
//! changed it carries the merge patch from the version before (at most
//! `STATE_PATCH_RATE` a second per channel, see `deltacast::store`'s `state_fold` and
//! `presence_fold`). Every subscriber of a state channel gets its document's as `patch`
//! frames, every subscriber that asked for `presence` the presence document's as
//! `presence_patch` frames, in version order. A client that sees a version other than the
//! one after its own asks for the document (`state`) or the member list (`members`) again.
//!
//! Failed posts are handled as deltas' are: a gone connection is pruned; a post that
//! still fails after retries fails its record (Lambda delivers it again; clients drop
//! versions they have); a frame that can never be delivered is skipped for that
//! connection, which then sees a version gap.

use std::collections::BTreeMap;

use aws_lambda_events::dynamodb::EventRecord;
use deltacast::clock;
use deltacast::protocol::ServerMessage;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::Store;
use deltacast::stream::{StatePatch, patch_of};
use futures::{StreamExt, stream};
use serde_json::value::RawValue;
use tracing::{error, warn};

/// A patch of the batch, with its record's place and sequence number.
pub struct PendingPatch {
    /// The record's place in the batch.
    pub position: usize,
    /// The record's sequence number.
    pub sequence_number: String,
    /// Its `patch` frame.
    pub frame: String,
    /// The channel and version.
    pub channel: String,
    /// Whether it is the channel's presence (sent to presence watchers only).
    pub presence: bool,
    /// The version it leads to.
    pub version: u64,
}

/// What delivering the batch's patches did.
#[derive(Default)]
pub struct Delivered {
    /// Frames posted.
    pub frames: usize,
    /// Connections found gone (to prune).
    pub gone: Vec<String>,
    /// Records to deliver again: (place, sequence number).
    pub failed: Vec<(usize, String)>,
}

/// What posting a channel's patches to one connection did: the frames posted, or the
/// index of the patch that failed and why.
type Posted = Result<usize, (usize, PushError)>;

/// The patches among the batch's records (the rest are deltas, or nothing of ours).
pub fn collect(records: &[EventRecord]) -> Vec<PendingPatch> {
    let mut patches = Vec::new();
    for (position, record) in records.iter().enumerate() {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        match patch_of(record) {
            Ok(None) => {}
            Ok(Some(StatePatch {
                channel,
                presence,
                version,
                patch,
            })) => {
                let patch = match patch.map(RawValue::from_string).transpose() {
                    Ok(patch) => patch,
                    Err(_) => {
                        error!(
                            sequence_number,
                            channel, "a document's patch is not JSON; skipped"
                        );
                        continue;
                    }
                };
                let frame = if presence {
                    ServerMessage::PresencePatch {
                        channel: &channel,
                        version,
                        resync: patch.is_none(),
                        patch: patch.as_deref(),
                    }
                } else {
                    let Some(patch) = patch.as_deref() else {
                        continue;
                    };
                    ServerMessage::Patch {
                        channel: &channel,
                        version,
                        patch,
                    }
                }
                .to_json();
                patches.push(PendingPatch {
                    position,
                    sequence_number,
                    frame,
                    channel,
                    presence,
                    version,
                });
            }
            Err(reason) => {
                error!(sequence_number, %reason, "skipping an unreadable document record")
            }
        }
    }
    patches
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
        let subscribers = match store.subscribers(channel).await {
            Ok(subscribers) => subscribers,
            Err(err) => {
                error!(channel, error = %err, "could not read subscribers");
                let failed = list.iter().map(|p| (p.position, p.sequence_number.clone()));
                delivered.failed.extend(failed);
                continue;
            }
        };
        let list = &list;
        let outcomes: Vec<(String, Posted)> = stream::iter(subscribers)
            .filter(|s| std::future::ready(!s.expired(now) && (s.presence || !presence)))
            .map(|s| async move {
                let mut posted = 0;
                for (i, patch) in list.iter().enumerate() {
                    match post_with_retry(push, &s.connection_id, &patch.frame, retry).await {
                        Ok(()) => posted += 1,
                        Err(err @ (PushError::TooLarge | PushError::Rejected(_))) => {
                            error!(connection_id = s.connection_id, channel, version = patch.version, error = %err, "patch cannot be delivered to this connection; skipped");
                        }
                        Err(err) => return (s.connection_id, Err((i, err))),
                    }
                }
                (s.connection_id, Ok(posted))
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut first_failed: Option<usize> = None;
        for (connection, outcome) in outcomes {
            match outcome {
                Ok(posted) => delivered.frames += posted,
                Err((_, PushError::Gone)) => delivered.gone.push(connection),
                Err((i, err)) => {
                    warn!(connection_id = connection, channel, error = %err, "patch delivery failed after retries");
                    first_failed = Some(first_failed.map_or(i, |f| f.min(i)));
                }
            }
        }
        if let Some(from) = first_failed {
            let failed = list[from..]
                .iter()
                .map(|p| (p.position, p.sequence_number.clone()));
            delivered.failed.extend(failed);
        }
    }
    delivered
}
