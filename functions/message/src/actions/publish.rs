//! `publish`: appends a delta exactly once per `(channel, id)` and acks with its seq.

use deltacast::auth::Action;
use deltacast::protocol::{Channel, ErrorCode, ErrorFrame, MessageId, Payload, ServerMessage};
use deltacast::push::Push;
use deltacast::store::{NewDelta, PublishError};
use tracing::info;

use super::{ActionError, authorize, send};
use crate::handler::{App, Sender};

/// Publishes `data` to `channel` and acks the sender.
#[allow(clippy::too_many_arguments)]
pub async fn run<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    id: &MessageId,
    data: &Payload,
    expect_seq: Option<u64>,
) -> Result<(), ActionError> {
    authorize(sender, Action::Publish, channel)?;
    let limit = app.settings.publish_rate;
    if !app
        .store
        .take_publish_token(sender.connection_id, sender.received_at, limit)
        .await?
    {
        return Err(ActionError::refused(
            ErrorCode::RateLimited,
            format!(
                "publish rate limit reached: {} per second, bursts of {} (RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST)",
                limit.per_second, limit.burst
            ),
        ));
    }
    let published = app
        .store
        .publish(NewDelta {
            channel,
            id,
            from: &sender.identity.sub,
            data,
            expect_seq,
        })
        .await
        .map_err(|err| match err {
            PublishError::Conflict { head } => ActionError::Refused(Box::new(ErrorFrame {
                seq: Some(head.seq),
                epoch: head.epoch,
                ..ErrorFrame::new(
                    ErrorCode::Conflict,
                    format!(
                        "expectSeq is {}, but the channel's head is {}",
                        expect_seq.unwrap_or(0),
                        head.seq
                    ),
                )
            })),
            PublishError::InProgress | PublishError::Contended => ActionError::refused(
                ErrorCode::Internal,
                format!("{err}; retry with the same id"),
            ),
            PublishError::Store(err) => err.into(),
        })?;
    info!(
        seq = published.seq,
        duplicate = published.duplicate,
        "published"
    );
    send(
        push,
        sender,
        &ServerMessage::Ack {
            channel,
            id,
            seq: published.seq,
            epoch: &published.epoch,
        },
    )
    .await
}
