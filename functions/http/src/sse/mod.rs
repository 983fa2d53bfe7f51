//! `GET /v1/channels/{channel}/events`: a channel's deltas as server-sent events.
//!
//! A stream opens with `retry:` and a `subscribed` event (the channel's position, and
//! whether a resume was `recovered`: nothing missed), replays what the client missed when
//! it resumes (`Last-Event-ID`, or `since` and `epoch` in the query), then polls the
//! channel every `SSE_POLL_MS` for new deltas, each an event whose id is its position.
//! A comment line goes out when nothing else has for `SSE_HEARTBEAT_SECONDS`. Before the
//! function's time limit (or `SSE_MAX_SECONDS`) the stream ends cleanly with a `retry:`
//! hint, and the client's `EventSource` reconnects and resumes after the last id it got.
//!
//! Why polling: a stream is one invocation holding one HTTP response, which nothing can
//! post to (the fan-out posts to WebSocket connections through API Gateway), so the
//! stream reads the channel itself, as a client paging history would. Its cost is
//! docs/http.md's "What an SSE subscriber costs".
//!
//! ## Layout
//! - `event`: the text of events, comments and ids ([`event::Position`]).
//! - `stream`: the stream's loop: catch-up, polling, heartbeats, the clean end.

pub mod event;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use deltacast::auth::{Action, Identity};
use deltacast::cost;
use deltacast::protocol::{Channel, ErrorCode, ErrorFrame};
use deltacast_message::actions::{log_channel, rate};
use lambda_http::http::{HeaderValue, Response, StatusCode, header};

use crate::incoming::Incoming;
use crate::problem::Problem;
use crate::reply::Body;
use crate::service::Service;
use event::Position;

/// The answer to an events request: the stream, or why it is refused (before anything
/// is streamed, so a refusal is a whole problem response).
pub async fn open(
    channel: Channel,
    request: &Incoming,
    identity: Identity,
    service: Arc<Service>,
) -> Result<Response<Body>, Problem> {
    request.reject_unknown(&["since", "epoch", "token"])?;
    if !identity.may(Action::Subscribe, &channel) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your token does not allow subscribe on {channel}"),
        ));
    }
    let app = &service.app;
    log_channel(app, &channel, "an event stream").map_err(crate::action::refusal)?;
    let resume = resume_point(request)?;
    if identity.expired(deltacast::clock::now_secs()) {
        // Within the verifier's leeway, yet expired: a stream would end at once, and
        // EventSource would come back with the same token again and again.
        return Err(Problem::from_frame(&ErrorFrame::token_expired()));
    }
    let sender = crate::action::sender(&identity, app);
    rate::admit(&sender, app, cost::REQUEST)
        .await
        .map_err(crate::action::refusal)?;
    let lasts = service.settings.sse.max.min(
        request
            .time_left()
            .saturating_sub(crate::settings::DEADLINE_MARGIN),
    );
    let token_left = Duration::from_secs(identity.exp.saturating_sub(deltacast::clock::now_secs()));
    let id = stream_id();
    let until = deltacast::clock::now_secs() + lasts.min(token_left).as_secs() + 60;
    let max = service.settings.sse.max_streams_per_user;
    let opened = app
        .store
        .open_stream(&identity.sub, &id, until, max)
        .await
        .map_err(|err| Problem::storage(&err))?;
    if !opened {
        let message = format!(
            "this user has {max} event streams open, the most allowed (SSE_MAX_STREAMS_PER_USER); close one first"
        );
        return Err(Problem::from_frame(
            &ErrorFrame::new(ErrorCode::RateLimited, message).retry_after(STREAMS_FULL_RETRY_MS),
        ));
    }
    let body = stream::start(stream::Stream {
        id,
        channel,
        token_ends: token_left < lasts,
        resume,
        ends_at: tokio::time::Instant::now() + lasts.min(token_left),
        sender,
        service,
    });
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// When a user refused for having too many streams open is asked to try again.
const STREAMS_FULL_RETRY_MS: u64 = 10_000;

/// A new stream's id: 16 random hex digits.
fn stream_id() -> String {
    let bytes: [u8; 8] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the client resumes: `Last-Event-ID` (what `EventSource` sends), else `since`
/// (and `epoch`) in the query, else nowhere (live from now).
fn resume_point(request: &Incoming) -> Result<Option<Position>, Problem> {
    if let Some(id) = request.header("last-event-id") {
        return Position::parse(id).map(Some).map_err(Problem::bad_request);
    }
    let Some(seq) = request.number("since")? else {
        if request.param("epoch").is_some() {
            return Err(Problem::bad_request("`epoch` goes with `since`"));
        }
        return Ok(None);
    };
    let epoch = request.param("epoch").map(str::to_owned);
    Ok(Some(Position { epoch, seq }))
}
