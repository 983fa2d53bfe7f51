//! `POST /v1/channels/{channel}/messages` and `POST /v1/messages`: publishing as the
//! socket's `publish` does, the answer waited for. The socket's publish is acked on its
//! connection, by the message function on a quiet channel and by the sequencer on a busy
//! one; a request has no connection, so when the action hands the message to the
//! sequencer (or a retry finds it in flight), the request waits for its outcome, reading
//! the claim and the channel (never writing), for up to `HTTP_PUBLISH_WAIT_MS`. It ends
//! with the ack, the sequencer's refusal, or `503 in_flight` (retry with the same id: the
//! message is stored once).

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use deltacast::answers;
use deltacast::auth::Identity;
use deltacast::protocol::{Channel, ClientMessage, ErrorCode};
use deltacast::store::{IN_FLIGHT_RETRY_MS, PublishOutcome};
use deltacast_message::context::App;
use futures::StreamExt;
use lambda_http::http::StatusCode;
use serde_json::{Map, Value, json};

use crate::action::{self, frame_of};
use crate::problem::Problem;
use crate::reply::frame_body;

/// Most messages in one `POST /v1/messages`.
pub const MAX_BATCH: usize = 100;

/// How many channels of a batch are published at once (a channel's own messages go one
/// after another, in the batch's order).
const BATCH_CHANNELS_AT_ONCE: usize = 8;

/// First pause between two reads of a waiting publish's outcome; it doubles up to
/// [`MAX_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(50);
const MAX_POLL: Duration = Duration::from_millis(400);

/// Publishes `body` (`{id, data, expectSeq?}`) on `channel` as `identity`; the ack's
/// fields (`channel`, `id`, `seq`, `epoch`) or the problem. A publish the sequencer has
/// is waited for until `deadline`.
pub async fn one(
    channel: &Channel,
    body: Map<String, Value>,
    identity: &Identity,
    app: &App,
    deadline: Instant,
) -> Result<Value, Problem> {
    if body.contains_key("channel") {
        return Err(Problem::bad_request(
            "unknown field `channel`: the channel is in the path",
        ));
    }
    let mut fields = body;
    fields.insert("channel".into(), channel.as_str().into());
    let message = action::message("publish", fields, app)?;
    publish(&message, identity, app, deadline).await
}

/// Publishes each of `body.messages` (`{channel, id, data, expectSeq?}`, at most
/// [`MAX_BATCH`]) as `identity`: `{"results": [...]}` in the request's order, each the
/// ack's fields with `status: 200`, or a problem document with its own status. One
/// `deadline` for the whole batch: a publish still waiting for the sequencer then is
/// answered `in_flight`, so the batch always answers before the invocation's time limit.
pub async fn batch(
    body: Map<String, Value>,
    identity: &Identity,
    app: &App,
    deadline: Instant,
) -> Result<Value, Problem> {
    if let Some(unknown) = body.keys().find(|key| *key != "messages") {
        return Err(Problem::bad_request(format!(
            "unknown field `{unknown}`: a batch is {{\"messages\": [...]}}"
        )));
    }
    let Some(Value::Array(items)) = body.get("messages") else {
        return Err(Problem::bad_request(
            "`messages` is required: an array of 1 to 100 publishes {channel, id, data, expectSeq?}",
        ));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        let mut problem = Problem::bad_request(format!(
            "`messages` holds {} publishes; a batch holds 1 to {MAX_BATCH}",
            items.len()
        ));
        if items.len() > MAX_BATCH {
            problem.status = StatusCode::PAYLOAD_TOO_LARGE;
            problem.code = "too_large".into();
        }
        return Err(problem);
    }
    // Each item is checked first; one that is not a publish is answered on its own.
    let mut results: Vec<Option<Value>> = vec![None; items.len()];
    let mut by_channel: HashMap<String, Vec<(usize, ClientMessage)>> = HashMap::new();
    for (at, item) in items.iter().enumerate() {
        let parsed = match item {
            Value::Object(fields) => action::message("publish", fields.clone(), app),
            _ => Err(Problem::bad_request(format!(
                "messages[{at}] is not an object {{channel, id, data, expectSeq?}}"
            ))),
        };
        match parsed {
            Ok(message) => {
                let channel = message
                    .channel()
                    .map(|c| c.as_str().to_owned())
                    .unwrap_or_default();
                by_channel.entry(channel).or_default().push((at, message));
            }
            Err(problem) => results[at] = Some(answered(Err(problem))),
        }
    }
    let done: Vec<Vec<(usize, Value)>> = futures::stream::iter(by_channel.into_values())
        .map(|messages| async move {
            let mut answers = Vec::with_capacity(messages.len());
            for (at, message) in messages {
                let outcome = publish(&message, identity, app, deadline).await;
                answers.push((at, answered(outcome)));
            }
            answers
        })
        .buffer_unordered(BATCH_CHANNELS_AT_ONCE)
        .collect()
        .await;
    for (at, answer) in done.into_iter().flatten() {
        results[at] = Some(answer);
    }
    Ok(json!({ "results": results }))
}

/// One batch item's answer: the ack with `status: 200`, or the problem document.
fn answered(outcome: Result<Value, Problem>) -> Value {
    match outcome {
        Ok(mut ack) => {
            ack["status"] = 200.into();
            ack
        }
        Err(problem) => problem.to_json(),
    }
}

/// Runs one `publish`, waiting for its outcome when the action leaves it to the
/// sequencer or finds it in flight.
async fn publish(
    message: &ClientMessage,
    identity: &Identity,
    app: &App,
    deadline: Instant,
) -> Result<Value, Problem> {
    let ClientMessage::Publish {
        channel,
        id,
        expect_seq,
        ..
    } = message
    else {
        return Err(Problem::internal());
    };
    match action::run(message, identity, app).await {
        Ok(frames) => {
            if let Some(ack) = frame_of(&frames, "ack") {
                return Ok(frame_body(&ack.to_string()));
            }
        }
        Err(problem) if problem.code == "in_flight" => {}
        Err(problem) => return Err(problem),
    }
    // Handed to the sequencer, or in flight: wait for what becomes of it.
    let started = Instant::now();
    let mut pause = FIRST_POLL;
    loop {
        let outcome = app
            .store
            .publish_outcome(channel.as_str(), &identity.sub, id.as_str())
            .await
            .map_err(|err| Problem::storage(&err))?;
        match outcome {
            PublishOutcome::Published(published) => {
                return Ok(frame_body(&answers::ack(channel, id, &published)));
            }
            PublishOutcome::Refused => return Err(refused(message, *expect_seq, app).await),
            PublishOutcome::Pending => {}
        }
        if Instant::now() + pause > deadline {
            let mut frame = answers::in_flight(IN_FLIGHT_RETRY_MS);
            frame.message = format!(
                "the message is still being stored after {} ms (HTTP_PUBLISH_WAIT_MS); retry with the same id: it is stored once",
                started.elapsed().as_millis()
            );
            return Err(Problem::from_frame(&frame.about(message)));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_POLL);
    }
}

/// Why the sequencer refused a message it deleted the claim of: `conflict` when its
/// `expectSeq` is not the head, else the channel was over its limit or too far behind.
async fn refused(message: &ClientMessage, expect_seq: Option<u64>, app: &App) -> Problem {
    let channel = message.channel().map(Channel::as_str).unwrap_or_default();
    let frame = match (expect_seq, app.store.head(channel).await) {
        (Some(expected), Ok(head)) if head.seq != expected => answers::conflict(expected, head),
        _ => answers::channel_limited(app.settings.channel_rate_limit, IN_FLIGHT_RETRY_MS),
    };
    debug_assert!(matches!(
        frame.code,
        ErrorCode::Conflict | ErrorCode::RateLimited
    ));
    Problem::from_frame(&frame.about(message))
}
