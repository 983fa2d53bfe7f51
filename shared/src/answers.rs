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
        epoch: head.epoch.map(Into::into),
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

/// The `rate_limited` of a publish to a busy channel that waited too long before this
/// function could handle it: the function is behind (see `deltacast::store::Door`).
pub fn behind(retry_after_ms: u64) -> ErrorFrame {
    let message = format!(
        "the server is behind: this publish waited more than {} ms before it could be \
         handled, and was not; retry with the same id",
        crate::store::MAX_FRAME_WAIT_MS
    );
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn item(exp: Option<u64>) -> InboxItem {
        InboxItem {
            pk: "q#chat:lobby".into(),
            sk: "m#5:alice#m1".into(),
            id: "m1".into(),
            from: "alice".into(),
            data: "1".into(),
            conn: "c".into(),
            ep: None,
            after: 0,
            exp,
            lease: 0,
            ttl: 0,
            q: Some(1),
        }
    }

    fn frame(item: &InboxItem, outcome: Sequenced) -> Value {
        let limit = Some(RateLimit {
            per_second: 200.0,
            burst: 400.0,
        });
        serde_json::from_str(&sequenced(item, &outcome, limit).unwrap()).unwrap()
    }

    #[test]
    fn the_sequencer_answers_with_the_frames_the_message_function_would_send() {
        let published = Sequenced::Published(Published {
            seq: 7,
            epoch: "e1".into(),
            duplicate: false,
        });
        assert_eq!(
            frame(&item(None), published),
            json!({"type": "ack", "channel": "chat:lobby", "id": "m1", "seq": 7, "epoch": "e1"})
        );
        let head = Head {
            epoch: Some("e1".into()),
            seq: 9,
        };
        let conflict = frame(&item(Some(8)), Sequenced::Conflict(head));
        assert_eq!(
            (
                &conflict["code"],
                &conflict["seq"],
                &conflict["epoch"],
                &conflict["id"]
            ),
            (&json!("conflict"), &json!(9), &json!("e1"), &json!("m1"))
        );
        assert_eq!(
            conflict["message"],
            "expectSeq is 8, but the channel's head is 9"
        );
        let limited = frame(
            &item(None),
            Sequenced::RateLimited {
                retry_after_ms: 250,
            },
        );
        assert_eq!(
            (
                &limited["code"],
                &limited["retryAfterMs"],
                &limited["channel"]
            ),
            (&json!("rate_limited"), &json!(250), &json!("chat:lobby"))
        );
        let message = limited["message"].as_str().unwrap();
        assert!(
            message.contains("200 publishes per second, bursts of 400")
                && message.contains("CHANNEL_RATE_LIMIT_PER_SECOND"),
            "{message}"
        );
    }

    #[test]
    fn in_flight_says_when_to_send_the_same_id_again() {
        let frame = serde_json::to_value(ServerMessage::Error(&in_flight(500))).unwrap();
        assert_eq!(
            (&frame["code"], &frame["retryAfterMs"]),
            (&json!("in_flight"), &json!(500))
        );
    }
}
