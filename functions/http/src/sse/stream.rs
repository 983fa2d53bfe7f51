//! One event stream's loop, run in its own task and writing to the response body: the
//! `subscribed` event, the catch-up, then a poll every `SSE_POLL_MS`, heartbeats, and the
//! clean end. The loop stops early when the client goes away (the body is dropped).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use deltacast::cost;
use deltacast::protocol::{Channel, MAX_READ_BYTES};
use deltacast::store::{DeltaPage, StoreError};
use deltacast_message::actions::rate;
use deltacast_message::context::Sender;
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
    /// Its id among its user's open streams.
    pub id: String,
    /// The channel.
    pub channel: Channel,
    /// Whether `ends_at` is the token's expiry (the stream then ends with a
    /// `token_expired` event instead of a `retry:` hint).
    pub token_ends: bool,
    /// Who reads it, as the rate limiter knows them.
    pub sender: Sender<'static>,
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
        let store = &stream.service.app.store;
        if let Err(err) = store
            .close_stream(&stream.sender.identity.sub, &stream.id)
            .await
        {
            // It expires by itself shortly after the stream's end.
            warn!(error = %err, "could not forget an ended event stream");
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
    // Replaying what the client missed is a read it pays for, as a socket catch-up is;
    // the live polls after it are the stream's own cost.
    let mut catching_up = stream.resume.is_some();
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
            // Past what this read skipped (expired deltas TTL has not deleted yet), so a
            // page of nothing but expired deltas still moves the stream forward.
            if let Some(next) = current.next {
                at.seq = at.seq.max(next);
            }
            if catching_up {
                charge(stream, &current).await;
            }
            if Instant::now() >= stream.ends_at {
                return finish(stream, out).await;
            }
            if out.0.is_closed() {
                return Err(Ended::Gone);
            }
            continue;
        }
        if catching_up {
            charge(stream, &current).await;
            catching_up = false;
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
            return finish(stream, out).await;
        }
        tokio::select! {
            () = tokio::time::sleep_until(next_poll) => {}
            () = out.0.closed() => return Err(Ended::Gone),
        }
    }
}

/// Ends the stream: with a `retry:` hint to come back, or, when its token is what ended
/// it, a `token_expired` event (coming back with the same token is refused with 401).
async fn finish(stream: &Stream, out: &Out) -> Result<(), Ended> {
    if stream.token_ends {
        let frame = deltacast::protocol::ErrorFrame::token_expired();
        let data = json!({"code": frame.code, "message": frame.message});
        out.send(event::event(None, "token_expired", &data.to_string()))
            .await?;
        return Ok(());
    }
    out.send(event::comment("the stream ends here; reconnect to resume"))
        .await?;
    out.send(event::retry(stream.service.settings.sse.retry_ms))
        .await?;
    Ok(())
}

/// Charges the stream's user for a page of its catch-up, by what it returned; the request
/// has been served, so a failure is logged by the rate limiter, not raised.
async fn charge(stream: &Stream, page: &DeltaPage) {
    let price = cost::read(page.bytes, page.deltas.len());
    rate::settle(&stream.sender, &stream.service.app, 0.0, price).await;
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
