//! The reads: `GET .../messages` (history), `.../state` and `.../presence`, each the
//! socket's `history`, `state` and `members` action, its frame's fields the answer.
//! Query parameters are checked as the frame's fields are (a bad number names the
//! parameter).

use deltacast::auth::{Action, Identity};
use deltacast::protocol::Channel;
use deltacast_message::context::App;
use lambda_http::http::StatusCode;
use serde_json::{Map, Value};
use tracing::error;

use crate::action::{self, frame_of};
use crate::incoming::Incoming;
use crate::problem::Problem;
use crate::reply::frame_body;

/// `GET /v1/channels/{channel}/messages?since=&epoch=&limit=`: the deltas after `since`
/// (0: from the oldest retained), at most `limit`, as `history` answers them. `since`
/// counts in the live epoch: when `epoch` is given and is not the live one, the page
/// starts at the live epoch's oldest retained delta, and the answer's `epoch` tells the
/// client its seqs changed.
pub async fn history(
    channel: &Channel,
    request: &Incoming,
    identity: &Identity,
    app: &App,
) -> Result<Value, Problem> {
    request.reject_unknown(&["since", "epoch", "limit", "token"])?;
    let mut since = request.number("since")?.unwrap_or(0);
    // The action checks the capability too; a caller it would refuse reads nothing here.
    if !identity.may(Action::History, channel) {
        return Err(Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your token does not allow history on {channel}"),
        ));
    }
    if let Some(epoch) = request.param("epoch") {
        let head = app
            .store
            .head(channel.as_str())
            .await
            .map_err(|err| Problem::storage(&err))?;
        if head.epoch.as_deref() != Some(epoch) {
            since = 0;
        }
    }
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.as_str().into());
    fields.insert("since".into(), since.into());
    if let Some(limit) = request.number("limit")? {
        fields.insert("limit".into(), limit.into());
    }
    answer(
        action::message("history", fields, app)?,
        "history",
        identity,
        app,
    )
    .await
}

/// `GET /v1/channels/{channel}/state`: a state channel's document and version.
pub async fn state(
    channel: &Channel,
    request: &Incoming,
    identity: &Identity,
    app: &App,
) -> Result<Value, Problem> {
    request.reject_unknown(&["token"])?;
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.as_str().into());
    answer(
        action::message("state", fields, app)?,
        "state",
        identity,
        app,
    )
    .await
}

/// `GET /v1/channels/{channel}/presence?after=&limit=`: a page of the channel's members
/// with the presence version, as `members` answers it.
pub async fn presence(
    channel: &Channel,
    request: &Incoming,
    identity: &Identity,
    app: &App,
) -> Result<Value, Problem> {
    request.reject_unknown(&["after", "limit", "token"])?;
    let mut fields = Map::new();
    fields.insert("channel".into(), channel.as_str().into());
    if let Some(after) = request.param("after") {
        fields.insert("after".into(), after.into());
    }
    if let Some(limit) = request.number("limit")? {
        fields.insert("limit".into(), limit.into());
    }
    answer(
        action::message("members", fields, app)?,
        "members",
        identity,
        app,
    )
    .await
}

/// Runs `message` and answers with its `kind` frame's fields.
async fn answer(
    message: deltacast::protocol::ClientMessage,
    kind: &str,
    identity: &Identity,
    app: &App,
) -> Result<Value, Problem> {
    let frames = action::run(&message, identity, app).await?;
    frame_of(&frames, kind)
        .map(|frame| frame_body(&frame.to_string()))
        .ok_or_else(|| {
            error!(kind, "the action answered without its frame");
            Problem::internal()
        })
}
