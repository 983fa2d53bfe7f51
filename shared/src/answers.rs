//! The frames that answer a publish. The message function answers at once what it can
//! tell from the inbox (an id already stored or in flight, a channel over its limit, an
//! `expectSeq` that does not hold); the sequencer answers the rest once the message has
//! its seq. Both send the same frames, built here.

use crate::config::RateLimit;
use crate::protocol::{Channel, ErrorCode, ErrorFrame, MessageId, ServerMessage};
use crate::store::items::InboxItem;
use crate::store::{Head, Published, Sequenced};

/// The `ack` of a stored message.
pub fn ack(channel: &Channel, id: &MessageId, published: &Published) -> String {
    ServerMessage::Ack {
        channel,
        id,
        seq: published.seq,
        epoch: &published.epoch,
    }
    .to_json()
}

/// The `conflict` of a publish whose `expectSeq` is not the `head`.
pub fn conflict(expect_seq: u64, head: Head) -> ErrorFrame {
    ErrorFrame {
        seq: Some(head.seq),
        epoch: head.epoch,
        ..ErrorFrame::new(
            ErrorCode::Conflict,
            format!(
                "expectSeq is {expect_seq}, but the channel's head is {}",
                head.seq
            ),
        )
    }
}

/// The `rate_limited` of a publish to a channel over `limit` (or too far behind).
pub fn channel_limited(limit: Option<RateLimit>, retry_after_ms: u64) -> ErrorFrame {
    let message = match limit {
        Some(limit) => format!(
            "rate limit reached for this channel: {} publishes per second, bursts of {} \
             (CHANNEL_RATE_LIMIT_PER_SECOND, CHANNEL_RATE_LIMIT_BURST), or too many waiting; \
             retry with the same id",
            limit.per_second, limit.burst
        ),
        None => "too many publishes waiting on this channel; retry with the same id".to_owned(),
    };
    ErrorFrame::new(ErrorCode::RateLimited, message).retry_after(retry_after_ms)
}

/// The `in_flight` of a publish whose id is being stored.
pub fn in_flight(retry_after_ms: u64) -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::InFlight,
        "a publish with this id is being stored; its ack goes to the connection that sent \
         it; retry with the same id",
    )
    .retry_after(retry_after_ms)
}

/// The sequencer's answer to `item`'s publisher, or `None` when its names no longer parse
/// (they were checked when it was published, so only a hand-written item gets here).
pub fn sequenced(
    item: &InboxItem,
    outcome: &Sequenced,
    limit: Option<RateLimit>,
) -> Option<String> {
    let channel = Channel::parse(item.channel()?).ok()?;
    let id = MessageId::parse(&item.id).ok()?;
    let refusal = match outcome {
        Sequenced::Published(published) => return Some(ack(&channel, &id, published)),
        Sequenced::Conflict(head) => conflict(item.exp.unwrap_or(0), head.clone()),
        Sequenced::RateLimited { retry_after_ms } => channel_limited(limit, *retry_after_ms),
    };
    let frame = ErrorFrame {
        channel: Some(channel),
        id: Some(id),
        ..refusal
    };
    Some(ServerMessage::Error(&frame).to_json())
}
