//! One module per client action, each with its own arguments type and tests; what they
//! share lives here: the [`ActionError`] every action returns, the capability check and
//! the reply sender; the rate limits every action goes through are in [`rate`].

pub mod history;
pub mod members;
pub mod ping;
pub mod presence;
pub mod publish;
pub mod rate;
pub mod state;
pub mod subscribe;
pub mod unsubscribe;
pub mod update;

use deltacast::auth::Action;
use deltacast::protocol::{Channel, ErrorCode, ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError, post_with_retry};
use deltacast::store::StoreError;

use crate::context::{App, Sender};

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
    /// The code the client is answered with: the refusal's, `internal` for a storage
    /// failure; `None` when nobody is answered (the connection is gone, the reply failed).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Refused(frame) => Some(frame.code),
            Self::Store(err) if err.is_connection_gone() => None,
            Self::Store(_) => Some(ErrorCode::Internal),
            Self::Push(_) => None,
        }
    }

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

/// Refuses an action that needs a state channel (`update`, `state`) on a log channel, and
/// one that needs a log channel (`publish`, `history`, a catch-up) on a state channel.
pub fn state_channel(app: &App, channel: &Channel, action: &str) -> Result<(), ActionError> {
    let state = &app.settings.state;
    if state.is_state(channel.as_str()) {
        return Ok(());
    }
    Err(ActionError::refused(
        ErrorCode::BadRequest,
        format!(
            "{action} needs a state channel; {channel} is a log channel (state channels are named {}: STATE_NAMESPACES)",
            namespaces(app)
        ),
    ))
}

/// Refuses a log action (`publish`, `history`, a catch-up) on a state channel.
pub fn log_channel(app: &App, channel: &Channel, action: &str) -> Result<(), ActionError> {
    if !app.settings.state.is_state(channel.as_str()) {
        return Ok(());
    }
    Err(ActionError::refused(
        ErrorCode::BadRequest,
        format!(
            "{channel} is a state channel, which keeps a document, not a log: {action} is for log channels; change it with update, read it with state or subscribe"
        ),
    ))
}

/// The state namespaces, in words.
fn namespaces(app: &App) -> String {
    let list = &app.settings.state.namespaces;
    if list.is_empty() {
        "none".into()
    } else {
        list.iter()
            .map(|p| format!("{p}*"))
            .collect::<Vec<_>>()
            .join(", ")
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
