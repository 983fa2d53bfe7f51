//! `members`: a page of the channel's presence members (at most `limit`, and at most
//! [`MAX_READ_BYTES`] of them, so the answer fits one API Gateway message), with the
//! presence version it was read at and, when there may be more, the `next` member id to
//! ask `after`. A watcher pages through the list, then applies the `presence_patch`
//! frames of later versions.

use deltacast::auth::Action;
use deltacast::cost;
use deltacast::protocol::{Channel, MAX_READ_BYTES, MessageId, ServerMessage};
use deltacast::push::Push;

use super::{ActionError, authorize, rate, send};
use crate::context::{App, Sender};

/// The fields of a `members` frame.
pub struct Args<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// The member id the previous page ended on.
    pub after: Option<&'a str>,
    /// The most members to return.
    pub limit: Option<u32>,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Answers a page of members.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args {
        channel,
        after,
        limit,
        id,
    } = args;
    authorize(sender, Action::Subscribe, channel)?;
    let limit = limit.unwrap_or(app.settings.history_default_limit);
    // A read pays by what it returns: a full page up front, the rest back once served.
    let deposit = cost::read(MAX_READ_BYTES, 0);
    rate::admit(sender, app, deposit).await?;
    let mut page = app
        .store
        .members_page(channel.as_str(), after, limit)
        .await?;
    let mut bytes = 0;
    let mut fits = page.members.len();
    for (i, member) in page.members.iter().enumerate() {
        bytes += serde_json::to_string(member).map_or(0, |m| m.len() + 1);
        if bytes > MAX_READ_BYTES {
            fits = i;
            break;
        }
    }
    if fits < page.members.len() {
        page.members.truncate(fits.max(1));
        page.next = page.members.last().map(|m| m.member.clone());
    }
    let frame = ServerMessage::Members {
        channel,
        version: page.version,
        members: &page.members,
        more: page.next.is_some(),
        next: page.next.as_deref(),
        id,
    };
    let sent = send(push, sender, &frame).await;
    rate::settle(
        sender,
        app,
        deposit,
        cost::read(bytes.min(MAX_READ_BYTES), 0),
    )
    .await;
    sent
}
