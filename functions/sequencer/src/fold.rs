//! The sequencer's second job: folding state channels' op records into their documents
//! ([`Store::fold`]), channels concurrently, and telling the sender of each message the
//! fold could not apply; and folding presence member records into each channel's
//! presence document ([`Store::fold_presence`]). It shares the sequencer's stream event source because DynamoDB
//! Streams serves at most two readers per shard without throttling, and the fan-out is
//! the other.
//!
//! A channel whose fold fails (storage unavailable, or other writers winning for 40 s)
//! reports its records in `batchItemFailures`; folding them again is safe, since the
//! document's checkpoint skips what was folded. The template retries them until they
//! leave the stream: an acked update must not be dropped.

use std::collections::BTreeMap;

use deltacast::config::StateSettings;
use deltacast::protocol::{ErrorCode, ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::{MemberRecord, OpRecord, Rejection, Store, StoreError};
use futures::{StreamExt, stream};
use tracing::{debug, error, warn};

/// Channels folded at once in one invocation (folds mostly wait for their patch slot).
const CHANNEL_CONCURRENCY: usize = 64;

/// What folding a batch's op records did.
#[derive(Debug, Default)]
pub struct Folds {
    /// Records folded (the rest had been before, or failed).
    pub folded: usize,
    /// The places in the batch of the records to deliver again.
    pub failed: Vec<usize>,
}

/// Folds each channel's op records (with their places in the batch, in stream order).
pub async fn fold_all<P: Push>(
    store: &Store,
    push: &P,
    retry: RetryPolicy,
    settings: &StateSettings,
    channels: BTreeMap<String, Vec<(usize, OpRecord)>>,
) -> Folds {
    each_channel(channels, |channel, records| async move {
        let done = store.fold(&channel, &records, settings).await?;
        debug!(
            channel,
            version = done.version,
            folded = done.folded,
            "folded"
        );
        for rejection in &done.rejected {
            deltacast::metrics::state_update(deltacast::metrics::UpdateOutcome::NotApplied);
            tell(push, retry, &channel, rejection).await;
        }
        Ok(done.folded)
    })
    .await
}

/// Folds each channel's presence member records (with their places in the batch).
pub async fn fold_presences(
    store: &Store,
    settings: &StateSettings,
    channels: BTreeMap<String, Vec<(usize, MemberRecord)>>,
) -> Folds {
    each_channel(channels, |channel, records| async move {
        let done = store.fold_presence(&channel, &records, settings).await?;
        debug!(
            channel,
            version = done.version,
            members = done.members,
            "presence folded"
        );
        Ok(done.folded)
    })
    .await
}

/// Runs `fold` on each channel's records, channels concurrently; a channel whose fold
/// fails has its records' places reported, to be delivered again.
async fn each_channel<R, F, Fut>(channels: BTreeMap<String, Vec<(usize, R)>>, fold: F) -> Folds
where
    F: Fn(String, Vec<R>) -> Fut,
    Fut: Future<Output = Result<usize, StoreError>>,
{
    let fold = &fold;
    let results: Vec<(usize, Vec<usize>)> = stream::iter(channels)
        .map(|(channel, records)| async move {
            let (positions, records): (Vec<usize>, Vec<R>) = records.into_iter().unzip();
            match fold(channel.clone(), records).await {
                Ok(folded) => (folded, Vec::new()),
                Err(err) => {
                    error!(channel, error = %err, "could not fold; the records will come again");
                    (0, positions)
                }
            }
        })
        .buffer_unordered(CHANNEL_CONCURRENCY)
        .collect()
        .await;
    let mut folds = Folds::default();
    for (folded, failed) in results {
        folds.folded += folded;
        folds.failed.extend(failed);
    }
    folds
}

/// Tells the sender that its message was not applied; failures are only logged (the
/// document is right either way).
async fn tell<P: Push>(push: &P, retry: RetryPolicy, channel: &str, rejection: &Rejection) {
    let code = if rejection.too_large {
        ErrorCode::TooLarge
    } else {
        ErrorCode::BadRequest
    };
    let mut frame = ErrorFrame::new(code, format!("not applied: {}", rejection.reason));
    frame.id = deltacast::protocol::MessageId::parse(&rejection.id).ok();
    frame.channel = deltacast::protocol::Channel::parse(channel).ok();
    let text = ServerMessage::Error(&frame).to_json();
    match post_with_retry(push, &rejection.conn, &text, retry).await {
        Ok(()) | Err(PushError::Gone) => {}
        Err(err) => {
            warn!(connection_id = rejection.conn, error = %err, "could not tell a sender its ops were not applied")
        }
    }
}
