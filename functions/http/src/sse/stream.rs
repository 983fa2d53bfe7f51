//! One event stream's loop, run in its own task and writing to the response body: the
//! `subscribed` event, the catch-up, then a poll every `SSE_POLL_MS`, heartbeats, and the
//! clean end. The loop stops early when the client goes away (the body is dropped).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use deltacast::protocol::{Channel, MAX_READ_BYTES};
use deltacast::store::{DeltaPage, StoreError};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, warn};

use super::event::{self, Position};
use crate::reply::{Body, frame_body};
use crate::service::Service;

/// Most deltas one read returns.
const PAGE: usize = 100;

/// What a stream needs.
pub struct Stream {
    /// The channel.
    pub channel: Channel,
    /// Whether `ends_at` is the token's expiry (the stream then ends with an `error`
    /// event, `token_expired`, instead of a `retry:` hint).
    pub token_ends: bool,
    /// Where the client resumes, if it does.
    pub resume: Option<Position>,
    /// When the stream ends.
    pub ends_at: Instant,
    /// The function's state.
    pub service: Arc<Service>,
}

/// The client went away: nothing more to write.
struct Gone;

/// Starts the stream's task; returns the body it writes.
pub fn start(stream: Stream) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let out = Out(tx);
        match run(&stream, &out).await {
            Ok(()) => {}
            Err(Ended::Gone) => debug!("event stream's client went away"),
            Err(Ended::Store(err)) => {
                warn!(error = %err, "event stream failed reading its channel; ended for the client to resume");
                let retry = stream.service.settings.sse.retry_ms;
                let _ = out.send(event::retry(retry)).await;
            }
        }
    });
    StreamBody::new(ReceiverStream::new(rx)).boxed()
}

enum Ended {
    Gone,
    Store(StoreError),
}

impl From<Gone> for Ended {
    fn from(_: Gone) -> Self {
        Self::Gone
    }
}

impl From<StoreError> for Ended {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

struct Out(mpsc::Sender<Result<Frame<Bytes>, Infallible>>);

impl Out {
    async fn send(&self, text: String) -> Result<(), Gone> {
        self.0
            .send(Ok(Frame::data(Bytes::from(text))))
            .await
            .map_err(|_| Gone)
    }
}

async fn run(stream: &Stream, out: &Out) -> Result<(), Ended> {
    let settings = &stream.service.settings.sse;
    let store = &stream.service.app.store;
    let channel = stream.channel.as_str();
    out.send(event::retry(settings.retry_ms)).await?;
    let head = store.head(channel).await?;
    // Where reading starts, and whether that is exactly where the client left off.
    let (mut at, recovered) = match (&stream.resume, head.epoch.as_deref()) {
        (None, _) => (
            Position {
                epoch: head.epoch.clone(),
                seq: head.seq,
            },
            None,
        ),
        (Some(resume), None) => (
            Position::default(),
            Some(resume.seq == 0 && resume.epoch.is_none()),
        ),
        // The client's seqs count in another epoch (the channel's history expired and
        // started again): everything retained in the live epoch, not recovered.
        (Some(resume), Some(live)) if resume.epoch.as_deref().is_some_and(|e| e != live) => (
            Position {
                epoch: Some(live.to_owned()),
                seq: 0,
            },
            Some(false),
        ),
        (Some(resume), Some(live)) if resume.seq > head.seq => (
            Position {
                epoch: Some(live.to_owned()),
                seq: head.seq,
            },
            Some(false),
        ),
        (Some(resume), Some(live)) => (
            Position {
                epoch: Some(live.to_owned()),
                seq: resume.seq,
            },
            Some(true),
        ),
    };
    // A resume from before the oldest retained delta missed some: known from the first
    // page (seqs are gap-free, so only the oldest can be missing).
    let first = read(stream, &at).await?;
    let recovered = recovered.map(|r| {
        r && match first.deltas.first() {
            Some(delta) => delta.seq == at.seq + 1,
            None => at.seq >= head.seq,
        }
    });
    let subscribed = json!({
        "channel": channel,
        "epoch": head.epoch,
        "seq": head.seq,
        "recovered": recovered,
    });
    out.send(event::event(
        Some(&at.id()),
        "subscribed",
        &subscribed.to_string(),
    ))
    .await?;
    let mut page = Some(first);
    let mut last_write = Instant::now();
    let mut last_head = Instant::now();
    loop {
        let current = match page.take() {
            Some(page) => page,
            None => read(stream, &at).await?,
        };
        for delta in &current.deltas {
            if at.epoch.is_none() {
                at.epoch = Some(delta.epoch.clone());
            }
            at.seq = delta.seq;
            let data = frame_body(&delta.to_frame()).to_string();
            out.send(event::event(Some(&at.id()), "delta", &data))
                .await?;
            last_write = Instant::now();
        }
        if current.more {
            continue;
        }
        if current.deltas.is_empty() && last_head.elapsed() >= settings.heartbeat {
            // Rarely, a channel's history expires and a new epoch starts: follow it.
            last_head = Instant::now();
            let head = store.head(channel).await?;
            if head.epoch.is_some() && head.epoch != at.epoch {
                at = Position {
                    epoch: head.epoch.clone(),
                    seq: 0,
                };
                let restarted = json!({"channel": channel, "epoch": head.epoch, "seq": head.seq, "recovered": false});
                out.send(event::event(
                    Some(&at.id()),
                    "subscribed",
                    &restarted.to_string(),
                ))
                .await?;
                continue;
            }
        }
        if last_write.elapsed() >= settings.heartbeat {
            out.send(event::comment("heartbeat")).await?;
            last_write = Instant::now();
        }
        let next_poll = Instant::now() + settings.poll;
        if next_poll >= stream.ends_at {
            tokio::time::sleep_until(stream.ends_at).await;
            if stream.token_ends {
                // Reconnecting with the same token would be refused: say why instead.
                let frame = deltacast::protocol::ErrorFrame::token_expired();
                let data = json!({"code": frame.code, "message": frame.message});
                out.send(event::event(None, "error", &data.to_string()))
                    .await?;
                return Ok(());
            }
            out.send(event::comment("the stream ends here; reconnect to resume"))
                .await?;
            out.send(event::retry(settings.retry_ms)).await?;
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = out.0.closed() => return Err(Ended::Gone),
        }
    }
}

/// The deltas after `at` (nothing while the channel has no epoch).
async fn read(stream: &Stream, at: &Position) -> Result<DeltaPage, StoreError> {
    let store = &stream.service.app.store;
    let channel = stream.channel.as_str();
    match &at.epoch {
        Some(epoch) => {
            store
                .deltas_after(channel, epoch, at.seq, PAGE, MAX_READ_BYTES)
                .await
        }
        None => {
            let head = store.head(channel).await?;
            match head.epoch {
                Some(epoch) => {
                    store
                        .deltas_after(channel, &epoch, 0, PAGE, MAX_READ_BYTES)
                        .await
                }
                None => Ok(DeltaPage::default()),
            }
        }
    }
}
