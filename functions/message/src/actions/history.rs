//! `history`: a page of retained deltas after `since`, within API Gateway's 128 KB
//! message limit.

use deltacast::auth::Action;
use deltacast::protocol::{Channel, MessageId, ServerMessage};
use deltacast::push::Push;
use deltacast::store::DeltaPage;

use super::{ActionError, authorize, send};
use crate::handler::{App, Sender};

/// Budget for the deltas of one page; the envelope takes the rest of 128 KB.
pub const PAGE_BYTES: usize = 120 * 1024;

/// Answers with the deltas after `since`, at most `limit`.
pub async fn run<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    since: u64,
    limit: Option<u32>,
    id: Option<&MessageId>,
) -> Result<(), ActionError> {
    authorize(sender, Action::History, channel)?;
    let head = app.store.head(channel.as_str()).await?;
    let limit = limit.unwrap_or(app.settings.history_default_limit) as usize;
    let page = match head.epoch.as_deref() {
        // Nothing follows the head: an empty page, without asking storage.
        Some(_) if since >= head.seq => DeltaPage::default(),
        Some(epoch) => {
            app.store
                .deltas_after(channel.as_str(), epoch, since, limit, PAGE_BYTES)
                .await?
        }
        None => DeltaPage::default(),
    };
    send(
        push,
        sender,
        &ServerMessage::History {
            channel,
            epoch: head.epoch.as_deref(),
            seq: head.seq,
            deltas: &page.deltas,
            more: page.more,
            id,
        },
    )
    .await
}
