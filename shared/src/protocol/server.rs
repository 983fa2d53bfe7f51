//! Every frame a client receives: one [`ServerMessage`] enum tagged by `type`, so the
//! wire shape of each frame is visible in one place, and [`Delta`], the unit that
//! fan-out, catch-up and `history` all send.

use serde::{Deserialize, Serialize};

use super::error::ErrorFrame;
use super::names::{Channel, MessageId};
use super::payload::Payload;

/// One delta as fanned out, caught up and returned by `history`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// The channel.
    pub channel: String,
    /// Position in the channel, from 1, gap-free within an epoch.
    pub seq: u64,
    /// The channel's epoch when the delta was published.
    pub epoch: String,
    /// The publisher's message id (idempotency key).
    pub id: String,
    /// The publisher's user (`sub`).
    pub from: String,
    /// Publish time, Unix milliseconds.
    pub ts: u64,
    /// The payload, exactly as published (whitespace removed).
    pub data: Payload,
}

impl Delta {
    /// The delta as a `delta` frame.
    pub fn to_frame(&self) -> String {
        serde_json::to_string(&ServerMessage::Delta(self)).expect("a delta always serialises")
    }
}

/// A member of a channel's presence, as `members` lists it; a `presence_patch` carries
/// the same object without `member`, keyed by it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The member's id: its connection id.
    pub member: String,
    /// The member's user.
    pub sub: String,
    /// What the member said about itself (at most 1 KB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Payload>,
    /// When it entered (or last updated), Unix ms.
    pub at: u64,
}

/// One frame to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage<'a> {
    /// A delta of a subscribed channel.
    Delta(&'a Delta),
    /// Several consecutive deltas of one channel and one epoch, in seq order, for a
    /// subscription made with `coalesce` (the fan-out builds this frame's text itself,
    /// from each delta's JSON object, to size it exactly: see `functions/fanout`).
    Deltas {
        channel: &'a str,
        deltas: &'a [Delta],
    },
    /// The subscription is live; catch-up (if asked for) has been sent.
    Subscribed {
        channel: &'a Channel,
        seq: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// The subscription has ended.
    Unsubscribed {
        channel: &'a Channel,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// The publish is stored at `seq`.
    Ack {
        channel: &'a Channel,
        id: &'a MessageId,
        seq: u64,
        epoch: &'a str,
    },
    /// A page of retained deltas.
    History {
        channel: &'a Channel,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        seq: u64,
        deltas: &'a [Delta],
        more: bool,
        /// With `more`: the `since` to ask with next (past expired deltas, too).
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// An `update` is stored (or, with `duplicate`, was stored before and changed
    /// nothing now); it is folded into the document exactly once.
    Updated {
        channel: &'a Channel,
        id: &'a MessageId,
        duplicate: bool,
    },
    /// A state channel's document at `version`: the answer to `subscribe` and `state`.
    State {
        channel: &'a str,
        version: u64,
        value: &'a serde_json::Map<String, serde_json::Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// A state channel's change from `version - 1` to `version`, an RFC 7396 merge patch.
    Patch {
        channel: &'a str,
        version: u64,
        patch: &'a serde_json::value::RawValue,
    },
    /// A `presence` op is done (the change reaches watchers as a `presence_patch`).
    Presence {
        channel: &'a Channel,
        op: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// A page of a channel's members, with the presence version it was read at.
    Members {
        channel: &'a Channel,
        version: u64,
        members: &'a [Member],
        more: bool,
        /// With `more`: the `after` to ask with next.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// A channel's member changes from version `from` to `version`: member id → the
    /// member's whole new value `{sub, data, at}` (it replaces the member) or `null` (it
    /// left); or, when too many changed at once to send, `resync` (read `members` again).
    /// Applying it to any version from `from` on gives `version`.
    #[serde(rename = "presence_patch")]
    PresencePatch {
        channel: &'a str,
        from: u64,
        version: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        patch: Option<&'a serde_json::value::RawValue>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        resync: bool,
    },
    /// Answer to `ping`.
    Pong {
        #[serde(rename = "connectionId")]
        connection_id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
    },
    /// A request failed.
    Error(&'a ErrorFrame),
}

impl ServerMessage<'_> {
    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorCode;

    #[test]
    fn server_frames_have_the_documented_shape() {
        let delta = Delta {
            channel: "chat".into(),
            seq: 7,
            epoch: "e1".into(),
            id: "m1".into(),
            from: "alice".into(),
            ts: 1700000000000,
            data: Payload::from_json(r#"{"t":"hi"}"#.into()).unwrap(),
        };
        assert_eq!(
            delta.to_frame(),
            r#"{"type":"delta","channel":"chat","seq":7,"epoch":"e1","id":"m1","from":"alice","ts":1700000000000,"data":{"t":"hi"}}"#
        );
        let channel = Channel::parse("chat").unwrap();
        let err = ErrorFrame {
            seq: Some(3),
            ..ErrorFrame::new(ErrorCode::Conflict, "head is 3")
        };
        assert_eq!(
            ServerMessage::Error(&err).to_json(),
            r#"{"type":"error","code":"conflict","message":"head is 3","seq":3}"#
        );
        assert_eq!(
            ServerMessage::Deltas {
                channel: "chat",
                deltas: std::slice::from_ref(&delta)
            }
            .to_json(),
            r#"{"type":"deltas","channel":"chat","deltas":[{"channel":"chat","seq":7,"epoch":"e1","id":"m1","from":"alice","ts":1700000000000,"data":{"t":"hi"}}]}"#
        );
        assert_eq!(
            ServerMessage::Unsubscribed {
                channel: &channel,
                id: None
            }
            .to_json(),
            r#"{"type":"unsubscribed","channel":"chat"}"#
        );
    }
}
