//! `unsubscribe`: removes the subscription (a no-op when there is none) and confirms
//! with `unsubscribed`. No capability is needed to stop receiving.

use deltacast::cost;
use deltacast::protocol::{Channel, MessageId, ServerMessage};
use deltacast::push::Push;

use super::{ActionError, rate, send};
use crate::context::{App, Sender};

/// The fields of an `unsubscribe` frame.
pub struct Args<'a> {
    /// The channel to leave.
    pub channel: &'a Channel,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Removes the sender's subscription to `args.channel`.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args { channel, id } = args;
    rate::admit(sender, app, cost::REQUEST).await?;
    app.store.unsubscribe(sender.connection_id, channel).await?;
    send(push, sender, &ServerMessage::Unsubscribed { channel, id }).await
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use serde_json::json;

    #[tokio::test]
    async fn unsubscribe_stops_delivery() {
        let w = world().await;
        w.send(json!({"action": "subscribe", "channel": "chat:a"}))
            .await;
        let frames = w
            .send(json!({"action": "unsubscribe", "channel": "chat:a", "id": "u"}))
            .await;
        assert_eq!(
            frames,
            [json!({"type": "unsubscribed", "channel": "chat:a", "id": "u"})]
        );
        let (subscribers, _) = w.app.store.subscribers_page("chat:a", None).await.unwrap();
        assert!(subscribers.is_empty());
    }
}
