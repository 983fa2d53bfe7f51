//! One module per client action; the small ones live here.

pub mod history;
pub mod publish;
pub mod subscribe;

use deltacast::auth::Action;
use deltacast::clock;
use deltacast::protocol::{Channel, ErrorCode, ErrorFrame, MessageId, ServerMessage};
use deltacast::push::{Push, PushError, post_with_retry};
use deltacast::store::StoreError;

use crate::handler::{App, Sender};

/// Why an action did not complete.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The request is refused; the frame says why.
    #[error("refused: {}", .0.message)]
    Refused(Box<ErrorFrame>),
    /// Storage failed; the client gets a generic `internal` error.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The reply could not be delivered.
    #[error(transparent)]
    Push(#[from] PushError),
}

impl ActionError {
    /// A refusal with a code and a message.
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Refused(Box::new(ErrorFrame::new(code, message)))
    }
}

/// Refuses the action unless the sender's capabilities allow it on `channel`.
pub fn authorize(
    sender: &Sender<'_>,
    action: Action,
    channel: &Channel,
) -> Result<(), ActionError> {
    if sender.identity.may(action, channel) {
        Ok(())
    } else {
        Err(ActionError::refused(
            ErrorCode::Forbidden,
            format!("your token does not allow {action} on {channel}"),
        ))
    }
}

/// Posts one frame to the sender, retrying throttling and transient failures as the
/// fan-out does (a lost reply would leave the client waiting).
pub async fn send<P: Push>(
    push: &P,
    sender: &Sender<'_>,
    message: &ServerMessage<'_>,
) -> Result<(), ActionError> {
    Ok(post_with_retry(push, sender.connection_id, &message.to_json(), sender.retry).await?)
}

/// `unsubscribe`: removes the subscription (a no-op when there is none).
pub async fn unsubscribe<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    id: Option<&MessageId>,
) -> Result<(), ActionError> {
    app.store.unsubscribe(sender.connection_id, channel).await?;
    send(push, sender, &ServerMessage::Unsubscribed { channel, id }).await
}

/// `ping`: refreshes last-seen and answers `pong`.
pub async fn ping<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    id: Option<&MessageId>,
) -> Result<(), ActionError> {
    app.store
        .touch(sender.connection_id, clock::now_ms())
        .await?;
    send(
        push,
        sender,
        &ServerMessage::Pong {
            connection_id: sender.connection_id,
            id,
        },
    )
    .await
}
