//! An HTTP request served by the socket's own action (`deltacast_message`): the request
//! becomes the frame a client would send, checked by the same parser, and runs as a
//! sender without a connection; the frames the action would have posted are kept and
//! become the HTTP answer. So a publish, a history read or a state read has exactly the
//! socket's semantics, limits and messages.

use std::sync::Mutex;

use deltacast::auth::Identity;
use deltacast::clock;
use deltacast::protocol::ClientMessage;
use deltacast::push::{Push, PushError};
use deltacast_message::actions::ActionError;
use deltacast_message::context::{App, Sender};
use deltacast_message::handler::dispatch;
use serde_json::{Map, Value};
use tracing::{Instrument, error, info_span};

use crate::problem::Problem;

/// The frames an action posted, kept instead of sent.
#[derive(Default)]
struct Kept(Mutex<Vec<String>>);

impl Push for Kept {
    async fn post(&self, _connection_id: &str, frame: &str) -> Result<(), PushError> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(frame.to_owned());
        Ok(())
    }
}

/// The frame `fields` make as action `action`, checked as the socket checks a frame: the
/// fields must not name the action themselves.
pub fn message(
    action: &str,
    mut fields: Map<String, Value>,
    app: &App,
) -> Result<ClientMessage, Problem> {
    if fields.contains_key("action") {
        return Err(Problem::bad_request(
            "unknown field `action`: the route says what to do",
        ));
    }
    fields.insert("action".into(), action.into());
    let text = Value::Object(fields).to_string();
    ClientMessage::parse(&text, &app.settings.frame_limits)
        .map_err(|frame| Problem::from_frame(&frame))
}

/// Runs `message` as `identity`; returns the frames it answered with, or the problem it
/// was refused with (a storage failure is logged and answered `500 internal`).
pub async fn run(
    message: &ClientMessage,
    identity: &Identity,
    app: &App,
) -> Result<Vec<String>, Problem> {
    let sender = sender(identity, app);
    let kept = Kept::default();
    // As the message function's: its lines name the channel and the user.
    let span = info_span!(
        "action",
        sub = %identity.sub,
        action = message.action(),
        channel = message.channel().map(|c| c.as_str()).unwrap_or(""),
    );
    match dispatch(message, &sender, app, &kept)
        .instrument(span)
        .await
    {
        Ok(()) => Ok(kept
            .0
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)),
        Err(ActionError::Refused(frame)) => Err(Problem::from_frame(&frame.about(message))),
        Err(other) => Err(refusal(other)),
    }
}

/// The problem of an action's error: its refusal, or a failure (logged, `500`).
pub fn refusal(error: ActionError) -> Problem {
    match error {
        ActionError::Refused(frame) => Problem::from_frame(&frame),
        ActionError::Store(err) => Problem::storage(&err),
        ActionError::Push(err) => {
            error!(error = %err, "an answer could not be kept");
            Problem::internal()
        }
    }
}

/// `identity` as the sender of a request: no connection (so no connection bucket, and
/// no ack from the sequencer), received now.
pub fn sender(identity: &Identity, app: &App) -> Sender<'static> {
    let now = clock::now_ms();
    Sender {
        connection_id: "",
        identity: identity.clone(),
        connected_at: now,
        received_at: now,
        retry: app.retry(),
    }
}

/// The first frame of type `kind` among `frames`, as JSON.
pub fn frame_of(frames: &[String], kind: &str) -> Option<Value> {
    frames
        .iter()
        .filter_map(|frame| serde_json::from_str::<Value>(frame).ok())
        .find(|frame| frame["type"] == kind)
}
