//! `presence`: enters, updates or leaves the channel's presence as the sending connection
//! (a member is a connection: one user on two phones is two members with one `sub`), and
//! answers `presence` once stored. Watchers learn of it from the fan-out, as a
//! `presence_patch` at most `STATE_PATCH_RATE` times a second. A member leaves by itself
//! when its connection closes (`$disconnect`), and when a connection vanished without
//! one, at the first post that finds it gone, or once its connection's items expire.

use deltacast::auth::Action;
use deltacast::cost;
use deltacast::protocol::{Channel, ErrorCode, MessageId, Payload, PresenceOp, ServerMessage};
use deltacast::push::Push;
use deltacast::store::{Entered, NewMember};

use super::{ActionError, authorize, rate, send};
use crate::context::{App, Sender};

/// The fields of a `presence` frame.
pub struct Args<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// Enter, update or leave.
    pub op: PresenceOp,
    /// The member's data (enter, update).
    pub data: Option<&'a Payload>,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Carries out `args.op` for the sender.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args {
        channel,
        op,
        data,
        id,
    } = args;
    authorize(sender, Action::Presence, channel)?;
    rate::admit(sender, app, cost::REQUEST).await?;
    let member = NewMember {
        channel: channel.as_str(),
        connection_id: sender.connection_id,
        sub: &sender.identity.sub,
        data: data.map(Payload::get),
        at: sender.received_at,
        connected_at: sender.connected_at,
    };
    match op {
        PresenceOp::Enter => {
            let max = app.settings.state.max_members;
            if let Entered::Full { max } = app.store.enter(&member, max).await? {
                return Err(ActionError::refused(
                    ErrorCode::PresenceFull,
                    format!("{channel} has the most members allowed ({max}, PRESENCE_MAX_MEMBERS)"),
                ));
            }
        }
        PresenceOp::Update => {
            if !app.store.update_member(&member).await? {
                return Err(ActionError::refused(
                    ErrorCode::BadRequest,
                    format!("this connection is not a member of {channel}'s presence: enter first"),
                ));
            }
        }
        PresenceOp::Leave => {
            app.store
                .leave(channel.as_str(), sender.connection_id)
                .await?
        }
    }
    send(
        push,
        sender,
        &ServerMessage::Presence {
            channel,
            op: op.name(),
            id,
        },
    )
    .await
}
