//! `subscribe`: stores the subscription first (so no live delta is missed), then replays
//! retained deltas after `since`, then confirms with `subscribed`.

use deltacast::auth::Action;
use deltacast::protocol::{Channel, ErrorCode, MessageId, ServerMessage};
use deltacast::push::{Push, PushError};
use deltacast::store::{Head, SubscribeError};
use tracing::warn;

use super::{ActionError, authorize, send};
use crate::handler::{App, Sender};

/// Subscribes the sender to `channel`, catching up from `since` when given.
pub async fn run<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    since: Option<u64>,
    epoch: Option<&str>,
    id: Option<&MessageId>,
) -> Result<(), ActionError> {
    authorize(sender, Action::Subscribe, channel)?;
    app.store
        .subscribe(
            sender.connection_id,
            &sender.identity.sub,
            channel,
            sender.connected_at,
            app.settings.max_subscriptions,
        )
        .await
        .map_err(|err| match err {
            SubscribeError::TooMany(max) => ActionError::refused(
                ErrorCode::BadRequest,
                format!("this connection already has the most subscriptions allowed ({max}, MAX_SUBSCRIPTIONS)"),
            ),
            SubscribeError::Store(err) => err.into(),
        })?;
    let head = app.store.head(channel.as_str()).await?;
    let recovered = match since {
        None => None,
        Some(since) => Some(catch_up(sender, app, push, channel, &head, since, epoch).await?),
    };
    send(
        push,
        sender,
        &ServerMessage::Subscribed {
            channel,
            seq: head.seq,
            epoch: head.epoch.as_deref(),
            recovered,
            id,
        },
    )
    .await
}

/// Sends the retained deltas after `since` and tells whether they are all the client
/// missed.
async fn catch_up<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    head: &Head,
    since: u64,
    client_epoch: Option<&str>,
) -> Result<bool, ActionError> {
    let Some(epoch) = head.epoch.as_deref() else {
        // No retained history: nothing was missed only if the client had seen nothing.
        return Ok(since == 0 && client_epoch.is_none());
    };
    if client_epoch.is_some_and(|e| e != epoch) || since > head.seq {
        return Ok(false);
    }
    if since == head.seq {
        return Ok(true);
    }
    let page = app
        .store
        .deltas_after(
            channel.as_str(),
            epoch,
            since,
            app.settings.catchup_limit as usize,
            usize::MAX,
        )
        .await?;
    let contiguous = page
        .deltas
        .iter()
        .zip(since + 1..)
        .all(|(delta, expected)| delta.seq == expected);
    let mut complete = page.deltas.last().is_some_and(|d| d.seq >= head.seq) && !page.more;
    for delta in &page.deltas {
        match send(push, sender, &ServerMessage::Delta(delta)).await {
            Ok(()) => {}
            Err(ActionError::Push(PushError::Gone)) => return Err(PushError::Gone.into()),
            Err(err) => {
                // The client gets `subscribed` with `recovered: false` rather than silence.
                warn!(error = %err, seq = delta.seq, "catch-up interrupted");
                complete = false;
                break;
            }
        }
    }
    Ok(contiguous && complete)
}
