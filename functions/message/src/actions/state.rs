//! `state`: a state channel's document, as a `state` frame (a snapshot), for a client that
//! saw a gap in the patches' versions or wants the value once. `subscribe` to a state
//! channel answers with the same frame ([`send_snapshot`]).

use deltacast::auth::Action;
use deltacast::cost;
use deltacast::protocol::{Channel, MessageId, ServerMessage};
use deltacast::push::Push;

use super::{ActionError, authorize, rate, send, state_channel};
use crate::context::{App, Sender};

/// The fields of a `state` frame.
pub struct Args<'a> {
    /// The state channel.
    pub channel: &'a Channel,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Answers the channel's document.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args { channel, id } = args;
    authorize(sender, Action::Subscribe, channel)?;
    state_channel(app, channel, "state")?;
    // A read pays by the bytes it returns: the largest document up front, the difference
    // back once served.
    let deposit = cost::read(app.settings.state.max_bytes, 0);
    rate::admit(sender, app, deposit).await?;
    let bytes = send_snapshot(sender, app, push, channel, id).await?;
    rate::settle(sender, app, deposit, cost::read(bytes, 0)).await;
    Ok(())
}

/// Sends `channel`'s document as a `state` frame; returns its value's size in bytes.
pub async fn send_snapshot<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    id: Option<&MessageId>,
) -> Result<usize, ActionError> {
    let stored = app.store.state(channel.as_str()).await?;
    let document = &stored.document;
    let frame = ServerMessage::State {
        channel: channel.as_str(),
        version: document.version,
        value: &document.value,
        id,
    };
    let bytes = frame.to_json().len();
    send(push, sender, &frame).await?;
    Ok(bytes)
}
