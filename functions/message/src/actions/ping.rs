//! `ping`: the heartbeat. It refreshes the connection's last-seen time and answers
//! `pong` with the connection id, which clients also use to learn their id.

use deltacast::cost;
use deltacast::protocol::{MessageId, ServerMessage};
use deltacast::push::Push;

use super::{ActionError, rate, send};
use crate::context::{App, Sender};

/// The fields of a `ping` frame.
pub struct Args<'a> {
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
}

/// Refreshes last-seen and answers `pong`.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    // Taking the connection's token refreshes its last-seen time.
    rate::admit(sender, app, cost::REQUEST).await?;
    send(
        push,
        sender,
        &ServerMessage::Pong {
            connection_id: sender.connection_id,
            id: args.id,
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use crate::testing::*;
    use serde_json::json;

    #[tokio::test]
    async fn ping_answers_pong_with_the_connection_id() {
        let w = world().await;
        let pong = w.send(json!({"action": "ping", "id": "p1"})).await;
        assert_eq!(
            pong,
            [json!({"type": "pong", "connectionId": CONN, "id": "p1"})]
        );
    }
}
