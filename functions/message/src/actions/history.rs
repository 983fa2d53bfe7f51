//! `history`: a page of retained deltas after `since`, within API Gateway's 128 KB
//! message limit.

use deltacast::auth::Action;
use deltacast::cost;
use deltacast::protocol::MAX_READ_BYTES;
use deltacast::protocol::{Channel, MessageId, ServerMessage};
use deltacast::push::Push;
use deltacast::store::DeltaPage;

use super::{ActionError, authorize, log_channel, rate, send};
use crate::context::{App, Sender};

/// The fields of a `history` frame.
pub struct Args<'a> {
    /// The channel to read.
    pub channel: &'a Channel,
    /// The seq after which to start.
    pub since: u64,
    /// Most deltas wanted (`HISTORY_DEFAULT_LIMIT` when absent).
    pub limit: Option<u32>,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Answers with the deltas after `args.since`, at most `args.limit`.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args {
        channel,
        since,
        limit,
        id,
    } = args;
    authorize(sender, Action::History, channel)?;
    log_channel(app, channel, "history")?;
    let limit = limit.unwrap_or(app.settings.history_default_limit) as usize;
    let deposit = cost::history_deposit(limit);
    rate::admit(sender, app, deposit).await?;
    let head = app.store.head(channel.as_str()).await?;
    let page = match head.epoch.as_deref() {
        // Nothing follows the head: an empty page, without asking storage.
        Some(_) if since >= head.seq => DeltaPage::default(),
        Some(epoch) => {
            app.store
                .deltas_after(channel.as_str(), epoch, since, limit, MAX_READ_BYTES)
                .await?
        }
        None => DeltaPage::default(),
    };
    rate::settle(sender, app, deposit, cost::read(page.bytes, 0)).await;
    send(
        push,
        sender,
        &ServerMessage::History {
            channel,
            epoch: head.epoch.as_deref(),
            seq: head.seq,
            deltas: &page.deltas,
            more: page.more,
            next: page.next,
            id,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use serde_json::json;

    #[tokio::test]
    async fn history_pages_in_order() {
        let w = world().await;
        for i in 1..=5 {
            w.publish("chat:lobby", &format!("m{i}"), json!(i)).await;
        }
        let page = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 1, "limit": 2, "id": "h"}))
            .await;
        assert_eq!(page[0]["type"], "history");
        assert_eq!(page[0]["seq"], 5);
        assert_eq!(page[0]["more"], true);
        assert_eq!(page[0]["next"], 3, "where to go on: the last seq read");
        assert_eq!(page[0]["id"], "h");
        let seqs = page_seqs(&page[0]);
        assert_eq!(seqs, [2, 3]);
        let rest = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 3}))
            .await;
        let seqs = page_seqs(&rest[0]);
        assert_eq!(seqs, [4, 5]);
        assert_eq!(rest[0]["more"], false);
    }

    #[tokio::test]
    async fn history_from_the_head_or_beyond_is_an_empty_page() {
        let w = world().await;
        let epoch = w.publish("chat:lobby", "m1", json!(1)).await["epoch"].clone();
        w.publish("chat:lobby", "m2", json!(2)).await;
        for since in [2, 3, 999_999_999_999u64] {
            let page = w
                .send(json!({"action": "history", "channel": "chat:lobby", "since": since}))
                .await;
            assert_eq!(
                page,
                [
                    json!({"type": "history", "channel": "chat:lobby", "epoch": epoch, "seq": 2, "deltas": [], "more": false})
                ],
                "since {since}"
            );
        }
        let too_far = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 1_000_000_000_000u64, "id": "h"}))
            .await;
        assert_eq!(
            too_far,
            [
                json!({"type": "error", "code": "bad_request", "message": "since must be a whole number from 0 to 999999999999; got 1000000000000", "id": "h", "channel": "chat:lobby"})
            ]
        );
    }

    #[tokio::test]
    async fn history_pages_stay_under_the_message_limit() {
        let w = world().await;
        let big = "x".repeat(20 * 1024);
        for i in 1..=10 {
            w.publish("chat:big", &format!("m{i}"), json!(big)).await;
        }
        let page = w
            .send(json!({"action": "history", "channel": "chat:big", "since": 0}))
            .await;
        let text = page[0].to_string();
        assert!(text.len() < 128 * 1024, "page is {} bytes", text.len());
        assert_eq!(page[0]["more"], true);
        assert_eq!(page[0]["deltas"].as_array().unwrap().len(), 5);
    }
}
