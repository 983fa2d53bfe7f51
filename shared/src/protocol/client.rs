//! The client's frames: one [`ClientMessage`] enum for the five actions, parsed and
//! validated in one place before any handler runs. A refusal is an [`ErrorFrame`] that
//! names the field and the form it must have, echoing the request's id and channel when
//! they are valid so a client can match it to its request.

use serde_json::value::RawValue;

use super::error::{ErrorCode, ErrorFrame, brief};
use super::fields;
use super::frame::RawFrame;
use super::limits::FrameLimits;
use super::names::{Channel, MessageId};
use super::payload::{Payload, compact, nesting_depth};
use super::presence::{self, PresenceOp};
use crate::state::Op;

/// One frame from a client, parsed and validated.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// Start receiving a channel's deltas, optionally catching up from `since`; with
    /// `coalesce`, the fan-out may send several in one `deltas` frame.
    Subscribe {
        channel: Channel,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<MessageId>,
        coalesce: bool,
        presence: bool,
    },
    /// Stop receiving a channel's deltas.
    Unsubscribe {
        channel: Channel,
        id: Option<MessageId>,
    },
    /// Append a delta to a channel; `id` is the idempotency key.
    Publish {
        channel: Channel,
        id: MessageId,
        data: Payload,
        expect_seq: Option<u64>,
    },
    /// Read retained deltas after `since`.
    History {
        channel: Channel,
        since: u64,
        limit: Option<u32>,
        id: Option<MessageId>,
    },
    /// Change a state channel's document; `id` is the idempotency key.
    Update {
        channel: Channel,
        id: MessageId,
        ops: Vec<Op>,
    },
    /// Read a state channel's document (a snapshot).
    State {
        channel: Channel,
        id: Option<MessageId>,
    },
    /// Enter, update or leave the channel's presence.
    Presence {
        channel: Channel,
        op: PresenceOp,
        data: Option<Payload>,
        id: Option<MessageId>,
    },
    /// Read a page of the channel's members.
    Members {
        channel: Channel,
        after: Option<String>,
        limit: Option<u32>,
        id: Option<MessageId>,
    },
    /// Heartbeat; answered with `pong`.
    Ping { id: Option<MessageId> },
}

impl ClientMessage {
    /// The action name, as on the wire.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
            Self::History { .. } => "history",
            Self::Update { .. } => "update",
            Self::State { .. } => "state",
            Self::Presence { .. } => "presence",
            Self::Members { .. } => "members",
            Self::Ping { .. } => "ping",
        }
    }

    /// The id to echo in replies.
    pub fn id(&self) -> Option<&MessageId> {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::History { id, .. }
            | Self::State { id, .. }
            | Self::Presence { id, .. }
            | Self::Members { id, .. }
            | Self::Ping { id } => id.as_ref(),
            Self::Publish { id, .. } | Self::Update { id, .. } => Some(id),
        }
    }

    /// The channel the frame is about, if any.
    pub fn channel(&self) -> Option<&Channel> {
        match self {
            Self::Subscribe { channel, .. }
            | Self::Unsubscribe { channel, .. }
            | Self::Publish { channel, .. }
            | Self::History { channel, .. }
            | Self::Update { channel, .. }
            | Self::State { channel, .. }
            | Self::Presence { channel, .. }
            | Self::Members { channel, .. } => Some(channel),
            Self::Ping { .. } => None,
        }
    }

    /// Parses and validates one text frame.
    pub fn parse(frame: &str, limits: &FrameLimits) -> Result<Self, Box<ErrorFrame>> {
        if frame.len() > limits.max_frame_bytes {
            return Err(Box::new(ErrorFrame::new(
                ErrorCode::TooLarge,
                format!(
                    "frame is {} bytes; the limit is {} bytes",
                    frame.len(),
                    limits.max_frame_bytes
                ),
            )));
        }
        let raw = RawFrame::read(frame).map_err(Box::new)?;
        validate(&raw, limits).map_err(|(code, message)| {
            let mut error = ErrorFrame::new(code, brief(message));
            error.id = raw.reply_id();
            error.channel = raw.channel_hint();
            Box::new(error)
        })
    }
}

impl ErrorFrame {
    /// The same error, echoing a request's id and channel.
    pub fn about(mut self, request: &ClientMessage) -> Self {
        self.id = request.id().cloned();
        self.channel = request.channel().cloned();
        self
    }
}

type Invalid = (ErrorCode, String);

fn bad(message: impl Into<String>) -> Invalid {
    (ErrorCode::BadRequest, message.into())
}

/// Checks the raw fields against the action's rules and builds the message.
fn validate(raw: &RawFrame<'_>, limits: &FrameLimits) -> Result<ClientMessage, Invalid> {
    let action = match raw.action {
        None => {
            return Err(bad(format!(
                "missing field `action`; action must be {}",
                fields::form("action", limits)
            )));
        }
        Some(action) => fields::action(action, limits).map_err(bad)?,
    };
    let allowed = fields::fields_of(action).expect("a known action");
    for (name, present) in raw.present_fields() {
        if present && !allowed.contains(&name) {
            return Err(bad(format!(
                "field `{name}` is not allowed in {action}; {}",
                fields::takes(Some(action))
            )));
        }
    }
    let id = raw
        .id
        .map(|id| fields::id(id, limits))
        .transpose()
        .map_err(bad)?;
    if action == "ping" {
        return Ok(ClientMessage::Ping { id });
    }
    let channel = match raw.channel {
        None => return Err(bad(fields::missing("channel", action, limits))),
        Some(channel) => fields::channel(channel, limits).map_err(bad)?,
    };
    let seq = |field: &str, value: Option<&RawValue>| {
        value
            .map(|value| fields::seq(field, value, limits))
            .transpose()
            .map_err(bad)
    };
    match action {
        "subscribe" => {
            let since = seq("since", raw.since)?;
            let epoch = raw
                .epoch
                .map(|epoch| fields::epoch(epoch, limits))
                .transpose()
                .map_err(bad)?;
            if epoch.is_some() && since.is_none() {
                return Err(bad(
                    "`epoch` needs `since`: send the last seq you saw with its epoch",
                ));
            }
            let coalesce = raw
                .coalesce
                .map(|value| fields::boolean("coalesce", value, limits))
                .transpose()
                .map_err(bad)?
                .unwrap_or(false);
            let presence = raw
                .presence
                .map(|value| fields::boolean("presence", value, limits))
                .transpose()
                .map_err(bad)?
                .unwrap_or(false);
            Ok(ClientMessage::Subscribe {
                channel,
                since,
                epoch,
                id,
                coalesce,
                presence,
            })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe { channel, id }),
        "publish" => {
            let id = id.ok_or_else(|| {
                bad(format!(
                    "missing field `id` in publish (the message's idempotency key); id must be {}",
                    fields::form("id", limits)
                ))
            })?;
            let data = raw
                .data
                .ok_or_else(|| bad(fields::missing("data", action, limits)))?;
            let data = compact(data);
            if data.get().len() > limits.max_data_bytes {
                return Err((
                    ErrorCode::TooLarge,
                    format!(
                        "`data` is {} bytes serialised; the limit is {} bytes",
                        data.get().len(),
                        limits.max_data_bytes
                    ),
                ));
            }
            // Checked on the text, before anything parses it: a recursive parser given
            // thousands of levels would overflow its stack.
            let depth = nesting_depth(data.get());
            if depth > limits.max_data_depth {
                return Err(bad(format!(
                    "data must be nested at most {} levels deep; got {depth}",
                    limits.max_data_depth
                )));
            }
            Ok(ClientMessage::Publish {
                channel,
                id,
                data,
                expect_seq: seq("expectSeq", raw.expect_seq)?,
            })
        }
        "history" => {
            let since = seq("since", raw.since)?
                .ok_or_else(|| bad(fields::missing("since", action, limits)))?;
            let limit = raw
                .limit
                .map(|limit| fields::limit(limit, limits))
                .transpose()
                .map_err(bad)?;
            Ok(ClientMessage::History {
                channel,
                since,
                limit,
                id,
            })
        }
        "update" => {
            let id = id.ok_or_else(|| {
                bad(format!(
                    "missing field `id` in update (the change's idempotency key); id must be {}",
                    fields::form("id", limits)
                ))
            })?;
            let ops = raw
                .ops
                .ok_or_else(|| bad(fields::missing("ops", action, limits)))?;
            let ops = super::ops::read(ops).map_err(bad)?;
            Ok(ClientMessage::Update { channel, id, ops })
        }
        "state" => Ok(ClientMessage::State { channel, id }),
        "presence" => {
            let op = raw
                .op
                .ok_or_else(|| bad(fields::missing("op", action, limits)))?;
            let op = presence::op(op).ok_or_else(|| {
                bad(format!(
                    "op must be {}; got {}",
                    presence::OP_FORM,
                    fields::describe(op)
                ))
            })?;
            let data = match (op, raw.data) {
                (PresenceOp::Leave, Some(_)) => {
                    return Err(bad("a leave takes no `data`"));
                }
                (_, Some(data)) => {
                    Some(presence::data(data, limits).map_err(|(large, message)| {
                        let code = if large {
                            ErrorCode::TooLarge
                        } else {
                            ErrorCode::BadRequest
                        };
                        (code, message)
                    })?)
                }
                (_, None) => None,
            };
            Ok(ClientMessage::Presence {
                channel,
                op,
                data,
                id,
            })
        }
        "members" => {
            let after = raw
                .after
                .map(|raw| {
                    fields::string(raw)
                        .and_then(|a| presence::after(&a))
                        .ok_or_else(|| {
                            bad(format!(
                                "after must be {}; got {}",
                                presence::after_form(),
                                fields::describe(raw)
                            ))
                        })
                })
                .transpose()?;
            let limit = raw
                .limit
                .map(|limit| fields::limit(limit, limits))
                .transpose()
                .map_err(bad)?;
            Ok(ClientMessage::Members {
                channel,
                after,
                limit,
                id,
            })
        }
        _ => unreachable!("actions are matched above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MAX_SEQ;

    fn parse(frame: &str) -> Result<ClientMessage, Box<ErrorFrame>> {
        ClientMessage::parse(frame, &FrameLimits::default())
    }

    fn error(frame: &str) -> ErrorFrame {
        *parse(frame).expect_err("frame should be refused")
    }

    #[test]
    fn parses_every_action() {
        assert_eq!(
            parse(
                r#"{"action":"subscribe","channel":"chat:lobby","since":4,"epoch":"e1","id":"r1"}"#
            )
            .unwrap(),
            ClientMessage::Subscribe {
                channel: Channel::parse("chat:lobby").unwrap(),
                since: Some(4),
                epoch: Some("e1".into()),
                id: Some(MessageId::parse("r1").unwrap()),
                coalesce: false,
                presence: false,
            }
        );
        assert!(matches!(
            parse(r#"{"action":"subscribe","channel":"a","coalesce":true}"#).unwrap(),
            ClientMessage::Subscribe { coalesce: true, .. }
        ));
        assert!(matches!(
            parse(r#"{"action":"unsubscribe","channel":"a"}"#).unwrap(),
            ClientMessage::Unsubscribe { id: None, .. }
        ));
        assert!(matches!(
            parse(r#"{"action":"history","channel":"a","since":0,"limit":10}"#).unwrap(),
            ClientMessage::History {
                since: 0,
                limit: Some(10),
                ..
            }
        ));
        assert_eq!(
            parse(r#"{"action":"ping"}"#).unwrap(),
            ClientMessage::Ping { id: None }
        );
    }

    #[test]
    fn parses_state_actions_and_refuses_bad_ops() {
        let msg = parse(
            r#"{"action":"update","channel":"state:poll","id":"vote:alice","ops":[{"op":"inc","path":"/a","by":1}]}"#,
        )
        .unwrap();
        let ClientMessage::Update { id, ops, .. } = msg else {
            panic!("not an update")
        };
        assert_eq!((id.as_str(), ops.len()), ("vote:alice", 1));
        assert!(matches!(
            parse(r#"{"action":"state","channel":"state:poll","id":"r"}"#).unwrap(),
            ClientMessage::State { id: Some(_), .. }
        ));
        let e = error(r#"{"action":"update","channel":"s","ops":[]}"#);
        assert!(
            e.message.starts_with("missing field `id` in update"),
            "{}",
            e.message
        );
        let e = error(r#"{"action":"update","channel":"s","id":"u"}"#);
        assert!(
            e.message
                .starts_with("missing field `ops` in update; ops must be an array"),
            "{}",
            e.message
        );
        let e = error(
            r#"{"action":"update","channel":"s","id":"u","ops":[{"op":"inc","path":"/a","by":9007199254740992}]}"#,
        );
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(
            e.message.contains("ops[0]") && e.message.contains("2^53 - 1"),
            "{}",
            e.message
        );
        assert_eq!(e.id.unwrap().as_str(), "u", "echoes the id");
        let e = error(r#"{"action":"state","channel":"s","ops":[]}"#);
        assert_eq!(
            e.message,
            "field `ops` is not allowed in state; state takes channel, id"
        );
    }

    #[test]
    fn parses_presence_actions_and_refuses_bad_fields() {
        let msg =
            parse(r#"{"action":"presence","channel":"room","op":"enter","data":{"n":"Ann"}}"#)
                .unwrap();
        let ClientMessage::Presence { op, data, .. } = msg else {
            panic!("not presence")
        };
        assert_eq!(
            (op, data.unwrap().get()),
            (PresenceOp::Enter, r#"{"n":"Ann"}"#)
        );
        assert!(matches!(
            parse(r#"{"action":"presence","channel":"room","op":"leave"}"#).unwrap(),
            ClientMessage::Presence {
                op: PresenceOp::Leave,
                data: None,
                ..
            }
        ));
        assert!(matches!(
            parse(r#"{"action":"members","channel":"room","after":"Lx3_dc9PoAMCJdQ=","limit":5}"#)
                .unwrap(),
            ClientMessage::Members {
                limit: Some(5),
                after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            parse(r#"{"action":"subscribe","channel":"room","presence":true}"#).unwrap(),
            ClientMessage::Subscribe { presence: true, .. }
        ));
        let e = error(r#"{"action":"presence","channel":"room","op":"join"}"#);
        assert_eq!(
            e.message,
            r#"op must be one of enter, update, leave; got the string "join""#
        );
        let e = error(r#"{"action":"presence","channel":"room"}"#);
        assert!(
            e.message.starts_with("missing field `op` in presence"),
            "{}",
            e.message
        );
        let e = error(r#"{"action":"presence","channel":"room","op":"leave","data":1}"#);
        assert_eq!(e.message, "a leave takes no `data`");
        let big = format!(
            r#"{{"action":"presence","channel":"room","op":"enter","data":"{}"}}"#,
            "x".repeat(1100)
        );
        let e = error(&big);
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert_eq!(
            e.message,
            "member `data` is 1102 bytes serialised; the limit is 1024 bytes"
        );
        let e = error(r#"{"action":"members","channel":"room","after":"a b"}"#);
        assert!(
            e.message.starts_with("after must be a member id"),
            "{}",
            e.message
        );
    }

    #[test]
    fn publish_keeps_data_text_exactly_but_compact() {
        let msg = parse(
            r#"{"action":"publish","channel":"a","id":"m-1","data":{ "n" : 12345678901234567890123, "s":"a b\" c" },"expectSeq":3}"#,
        )
        .unwrap();
        let ClientMessage::Publish {
            data, expect_seq, ..
        } = msg
        else {
            panic!("not a publish")
        };
        assert_eq!(data.get(), r#"{"n":12345678901234567890123,"s":"a b\" c"}"#);
        assert_eq!(expect_seq, Some(3));
    }

    #[test]
    fn null_is_valid_data() {
        let msg = parse(r#"{"action":"publish","channel":"a","id":"m","data":null}"#).unwrap();
        let ClientMessage::Publish { data, .. } = msg else {
            panic!("not a publish")
        };
        assert_eq!(data.get(), "null");
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        assert_eq!(error("not json").message, "frame is not valid JSON");
        assert_eq!(error("[1,2]").message, "frame must be a JSON object");
        assert_eq!(error("42").code, ErrorCode::BadRequest);
    }

    #[test]
    fn names_the_bad_field() {
        let e = error(r#"{"action":"subscribe","channel":"a","sinse":1,"id":"r9"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(
            e.message,
            "unknown field `sinse`; subscribe takes channel, since, epoch, id, coalesce, presence"
        );
        assert_eq!(e.id, Some(MessageId::parse("r9").unwrap()), "echoes the id");

        let e = error(r#"{"action":"subscribe","channel":"a","since":"x"}"#);
        assert_eq!(
            e.message,
            "since must be a whole number from 0 to 999999999999; got the string \"x\""
        );

        let e = error(r#"{"channel":"a"}"#);
        assert_eq!(
            e.message,
            "missing field `action`; action must be one of subscribe, unsubscribe, publish, history, update, state, presence, members, ping"
        );

        let e = error(r#"{"action":"shout","id":"r2"}"#);
        assert_eq!(
            e.message,
            "unknown action \"shout\"; action must be one of subscribe, unsubscribe, publish, history, update, state, presence, members, ping"
        );
        assert_eq!(e.id.unwrap().as_str(), "r2");

        let e = error(r#"{"action":"subscribe","channel":"a","data":1}"#);
        assert_eq!(
            e.message,
            "field `data` is not allowed in subscribe; subscribe takes channel, since, epoch, id, coalesce, presence"
        );

        let e = error(r#"{"action":"subscribe"}"#);
        assert_eq!(
            e.message,
            "missing field `channel` in subscribe; channel must be a string of 1-128 characters from A-Z a-z 0-9 _ - : . @"
        );

        let e = error(r#"{"action":"subscribe","channel":"a","epoch":"e"}"#);
        assert_eq!(
            e.message,
            "`epoch` needs `since`: send the last seq you saw with its epoch"
        );

        let e = error(r#"{"action":"subscribe","channel":"a","since":-1}"#);
        assert_eq!(
            e.message,
            "since must be a whole number from 0 to 999999999999; got -1"
        );
    }

    #[test]
    fn seqs_beyond_the_largest_are_refused() {
        for (frame, field) in [
            (
                r#"{"action":"subscribe","channel":"a","since":1000000000000,"id":"r1"}"#,
                "since",
            ),
            (
                r#"{"action":"history","channel":"a","since":18446744073709551615,"id":"r1"}"#,
                "since",
            ),
            (
                r#"{"action":"publish","channel":"a","id":"r1","data":1,"expectSeq":1000000000000}"#,
                "expectSeq",
            ),
        ] {
            let e = error(frame);
            assert_eq!(e.code, ErrorCode::BadRequest, "{frame}");
            assert!(
                e.message.starts_with(&format!(
                    "{field} must be a whole number from 0 to 999999999999; got 1"
                )),
                "{}",
                e.message
            );
            assert_eq!(e.id.unwrap().as_str(), "r1", "echoes the id");
        }
        assert!(matches!(
            parse(r#"{"action":"history","channel":"a","since":999999999999}"#).unwrap(),
            ClientMessage::History { since: MAX_SEQ, .. }
        ));
        assert!(matches!(
            parse(r#"{"action":"subscribe","channel":"a","since":999999999999}"#).unwrap(),
            ClientMessage::Subscribe {
                since: Some(MAX_SEQ),
                ..
            }
        ));
        assert!(matches!(
            parse(
                r#"{"action":"publish","channel":"a","id":"m","data":1,"expectSeq":999999999999}"#
            )
            .unwrap(),
            ClientMessage::Publish {
                expect_seq: Some(MAX_SEQ),
                ..
            }
        ));
    }

    #[test]
    fn validates_channel_names() {
        for name in ["a", "chat:lobby", "user:alice@example.com", "x.y-z_1"] {
            let frame = format!(r#"{{"action":"subscribe","channel":"{name}"}}"#);
            assert_eq!(parse(&frame).unwrap().channel().unwrap().as_str(), name);
        }
        let e = error(r#"{"action":"subscribe","channel":"a b"}"#);
        assert_eq!(
            e.message,
            "channel must be a string of 1-128 characters from A-Z a-z 0-9 _ - : . @; got the character ' '"
        );
    }

    #[test]
    fn publish_needs_a_valid_id_and_data() {
        let e = error(r#"{"action":"publish","channel":"a","data":1}"#);
        assert_eq!(
            e.message,
            "missing field `id` in publish (the message's idempotency key); id must be a string of 1-64 characters from A-Z a-z 0-9 _ - : ."
        );
        let e = error(r#"{"action":"publish","channel":"a","id":"has space","data":1}"#);
        assert!(
            e.message.starts_with("id must be a string"),
            "{}",
            e.message
        );
        assert_eq!(e.id, None, "an invalid id is not echoed");
        let e = error(&format!(
            r#"{{"action":"publish","channel":"a","id":"{}","data":1}}"#,
            "x".repeat(65)
        ));
        assert!(e.message.contains("1-64 characters"), "{}", e.message);
        let e = error(r#"{"action":"publish","channel":"a","id":"m"}"#);
        assert_eq!(
            e.message,
            "missing field `data` in publish; data must be any JSON value of at most 24576 bytes serialised, nested at most 32 levels deep"
        );
    }

    #[test]
    fn sizes_are_limited() {
        let limits = FrameLimits {
            max_frame_bytes: 200,
            max_data_bytes: 10,
            max_data_depth: 32,
            max_history_limit: 50,
            max_channel_len: 8,
            max_id_len: 4,
        };
        let e = ClientMessage::parse(r#"{"action":"subscribe","channel":"123456789"}"#, &limits)
            .unwrap_err();
        assert_eq!(
            e.message,
            "channel must be a string of 1-8 characters from A-Z a-z 0-9 _ - : . @; got 9 characters"
        );
        let e = ClientMessage::parse(r#"{"action":"ping","id":"12345"}"#, &limits).unwrap_err();
        assert_eq!(
            e.message,
            "id must be a string of 1-4 characters from A-Z a-z 0-9 _ - : .; got 5 characters"
        );
        let big = format!(r#"{{"action":"ping","id":"{}"}}"#, "x".repeat(300));
        let e = ClientMessage::parse(&big, &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert!(e.message.contains("limit is 200 bytes"));

        let e = ClientMessage::parse(
            r#"{"action":"publish","channel":"a","id":"m","data":"0123456789"}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::TooLarge);
        assert_eq!(
            e.message,
            "`data` is 12 bytes serialised; the limit is 10 bytes"
        );
        assert_eq!(e.id.unwrap().as_str(), "m");

        let e = ClientMessage::parse(
            r#"{"action":"history","channel":"a","since":0,"limit":51}"#,
            &limits,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "limit must be a whole number from 1 to 50; got 51"
        );
    }

    fn publish_nested(
        depth: usize,
        limits: &FrameLimits,
    ) -> Result<ClientMessage, Box<ErrorFrame>> {
        let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let frame = format!(r#"{{"action":"publish","channel":"a","id":"m1","data":{data}}}"#);
        ClientMessage::parse(&frame, limits)
    }

    #[test]
    fn data_nested_32_levels_is_accepted_and_33_refused_naming_the_limit() {
        let limits = FrameLimits::default();
        assert!(matches!(
            publish_nested(32, &limits).unwrap(),
            ClientMessage::Publish { .. }
        ));
        let e = *publish_nested(33, &limits).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(
            e.message,
            "data must be nested at most 32 levels deep; got 33"
        );
        assert_eq!(e.id.unwrap().as_str(), "m1", "echoes the id");
        assert_eq!(e.channel.unwrap().as_str(), "a", "echoes the channel");
    }

    #[test]
    fn data_depth_limit_is_configurable() {
        let limits = FrameLimits {
            max_data_depth: 2,
            ..FrameLimits::default()
        };
        assert!(publish_nested(2, &limits).is_ok());
        let e = publish_nested(3, &limits).unwrap_err();
        assert_eq!(
            e.message,
            "data must be nested at most 2 levels deep; got 3"
        );
    }

    #[test]
    fn brackets_inside_data_strings_do_not_count_as_nesting() {
        let text = "[".repeat(100);
        let frame = format!(
            r#"{{"action":"publish","channel":"a","id":"m","data":{{"s":"{text}\"{text}"}}}}"#
        );
        assert!(parse(&frame).is_ok(), "{:?}", parse(&frame));
    }

    #[test]
    fn data_nested_5000_levels_is_refused_without_overflowing_the_stack() {
        // Run on a small stack: a recursive check would overflow it.
        let refused = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(|| *publish_nested(5_000, &FrameLimits::default()).unwrap_err())
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert_eq!(refused.code, ErrorCode::BadRequest);
        assert_eq!(
            refused.message,
            "data must be nested at most 32 levels deep; got 5000"
        );
    }

    /// Each action's fields, valid, as JSON text.
    fn valid_fields(action: &str) -> Vec<(&'static str, String)> {
        let fields: &[(&str, &str)] = match action {
            "subscribe" => &[
                ("channel", r#""chat:a""#),
                ("since", "3"),
                ("epoch", r#""e1""#),
                ("id", r#""r1""#),
                ("coalesce", "true"),
                ("presence", "true"),
            ],
            "unsubscribe" => &[("channel", r#""chat:a""#), ("id", r#""r1""#)],
            "publish" => &[
                ("channel", r#""chat:a""#),
                ("id", r#""r1""#),
                ("data", r#"{"n":1}"#),
                ("expectSeq", "2"),
            ],
            "history" => &[
                ("channel", r#""chat:a""#),
                ("since", "0"),
                ("limit", "10"),
                ("id", r#""r1""#),
            ],
            "update" => &[
                ("channel", r#""state:a""#),
                ("id", r#""r1""#),
                ("ops", r#"[{"op":"inc","path":"/n","by":1}]"#),
            ],
            "state" => &[("channel", r#""state:a""#), ("id", r#""r1""#)],
            "presence" => &[
                ("channel", r#""chat:a""#),
                ("op", r#""enter""#),
                ("data", r#"{"n":1}"#),
                ("id", r#""r1""#),
            ],
            "members" => &[
                ("channel", r#""chat:a""#),
                ("after", r#""abc""#),
                ("limit", "10"),
                ("id", r#""r1""#),
            ],
            "ping" => &[("id", r#""r1""#)],
            other => unreachable!("{other}"),
        };
        fields.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    fn frame_of(action: &str, fields: &[(&str, String)]) -> String {
        let mut text = format!(r#"{{"action":"{action}""#);
        for (name, value) in fields {
            text.push_str(&format!(r#","{name}":{value}"#));
        }
        text.push('}');
        text
    }

    /// Wrong values for `field`, as JSON text, with how a refusal describes each.
    fn wrong_values(field: &str) -> Vec<(String, String)> {
        let pairs: Vec<(String, &str)> = match field {
            "channel" => vec![
                ("5".into(), "5"),
                (r#""""#.into(), "an empty string"),
                (r#""a b""#.into(), "the character ' '"),
                (format!(r#""{}""#, "c".repeat(129)), "129 characters"),
                ("{}".into(), "an object"),
                ("true".into(), "the boolean true"),
            ],
            "id" => vec![
                ("5".into(), "5"),
                (r#""""#.into(), "an empty string"),
                (r#""a/b""#.into(), "the character '/'"),
                (format!(r#""{}""#, "i".repeat(65)), "65 characters"),
                ("[]".into(), "an array"),
            ],
            "since" | "expectSeq" => vec![
                ("-1".into(), "-1"),
                ("1e30".into(), "1e30"),
                ("1.5".into(), "1.5"),
                ("1000000000000".into(), "1000000000000"),
                ("18446744073709551616".into(), "18446744073709551616"),
                (r#""1""#.into(), r#"the string "1""#),
                ("false".into(), "the boolean false"),
            ],
            "limit" => vec![
                ("0".into(), "0"),
                ("1001".into(), "1001"),
                ("-1".into(), "-1"),
                ("2.5".into(), "2.5"),
                (r#""10""#.into(), r#"the string "10""#),
            ],
            "epoch" => vec![
                ("5".into(), "5"),
                (r#""""#.into(), "an empty string"),
                ("{}".into(), "an object"),
            ],
            "coalesce" => vec![
                ("1".into(), "1"),
                ("0".into(), "0"),
                (r#""true""#.into(), r#"the string "true""#),
                ("[true]".into(), "an array"),
                ("{}".into(), "an object"),
            ],
            _ => vec![],
        };
        let mut values: Vec<(String, String)> =
            pairs.into_iter().map(|(v, d)| (v, d.to_owned())).collect();
        if field == "epoch" {
            values.push((
                format!(r#""{}""#, "e".repeat(65)),
                format!(r#"the string "{}…""#, "e".repeat(32)),
            ));
        }
        values
    }

    fn form_of(field: &str) -> &'static str {
        match field {
            "channel" => "a string of 1-128 characters from A-Z a-z 0-9 _ - : . @",
            "id" => "a string of 1-64 characters from A-Z a-z 0-9 _ - : .",
            "since" | "expectSeq" => "a whole number from 0 to 999999999999",
            "limit" => "a whole number from 1 to 1000",
            "epoch" => "a string of 1-64 characters, the epoch of a delta or subscribed frame",
            "data" => {
                "any JSON value of at most 24576 bytes serialised, nested at most 32 levels deep"
            }
            "coalesce" => "true or false",
            other => unreachable!("{other}"),
        }
    }

    const ACTIONS: [&str; 5] = ["subscribe", "unsubscribe", "publish", "history", "ping"];

    #[test]
    fn every_wrong_field_of_every_action_is_named_with_its_expected_form() {
        let mut checked = 0;
        for action in ACTIONS {
            let valid = valid_fields(action);
            parse(&frame_of(action, &valid)).expect("the valid frame parses");
            for (i, (field, _)) in valid.iter().enumerate() {
                for (value, got) in wrong_values(field) {
                    let mut fields = valid.clone();
                    fields[i].1 = value;
                    let frame = frame_of(action, &fields);
                    let e = error(&frame);
                    assert_eq!(e.code, ErrorCode::BadRequest, "{frame}");
                    assert_eq!(
                        e.message,
                        format!("{field} must be {}; got {got}", form_of(field)),
                        "{frame}"
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 70, "only {checked} cases");
    }

    #[test]
    fn every_missing_required_field_is_named_with_its_expected_form() {
        for (action, field) in [
            ("subscribe", "channel"),
            ("unsubscribe", "channel"),
            ("publish", "channel"),
            ("publish", "data"),
            ("history", "channel"),
            ("history", "since"),
        ] {
            let mut fields = valid_fields(action);
            fields.retain(|(name, _)| *name != field);
            let frame = frame_of(action, &fields);
            assert_eq!(
                error(&frame).message,
                format!(
                    "missing field `{field}` in {action}; {field} must be {}",
                    form_of(field)
                ),
                "{frame}"
            );
        }
        let mut fields = valid_fields("publish");
        fields.retain(|(name, _)| *name != "id");
        assert_eq!(
            error(&frame_of("publish", &fields)).message,
            format!(
                "missing field `id` in publish (the message's idempotency key); id must be {}",
                form_of("id")
            )
        );
    }

    #[test]
    fn a_field_of_another_action_is_refused_with_the_fields_this_one_takes() {
        for action in ACTIONS {
            let takes: Vec<&str> = valid_fields(action).iter().map(|(k, _)| *k).collect();
            for other in fields::FIELDS
                .into_iter()
                .filter(|f| !["action", "id"].contains(f))
            {
                if takes.contains(&other) {
                    continue;
                }
                let mut fields = valid_fields(action);
                fields.push((other, "1".into()));
                assert_eq!(
                    error(&frame_of(action, &fields)).message,
                    format!(
                        "field `{other}` is not allowed in {action}; {action} takes {}",
                        takes.join(", ")
                    )
                );
            }
        }
    }

    #[test]
    fn the_action_must_be_a_known_name() {
        let known = "action must be one of subscribe, unsubscribe, publish, history, update, state, presence, members, ping";
        for (frame, message) in [
            (r#"{"action":7}"#, format!("{known}; got 7")),
            (r#"{"action":["ping"]}"#, format!("{known}; got an array")),
            (
                r#"{"action":"PING"}"#,
                format!(r#"unknown action "PING"; {known}"#),
            ),
            (r#"{}"#, format!("missing field `action`; {known}")),
            (
                r#"{"action":null}"#,
                format!("missing field `action`; {known}"),
            ),
        ] {
            assert_eq!(error(frame).message, message, "{frame}");
        }
    }

    #[test]
    fn an_unknown_or_repeated_field_is_named() {
        assert_eq!(
            error(r#"{"action":"nope","x":1}"#).message,
            "unknown field `x`; a frame's fields are action, id, channel, since, epoch, limit, expectSeq, data, coalesce, ops, op, presence, after"
        );
        assert_eq!(
            error(r#"{"action":"ping","id":"a","id":"b"}"#).message,
            "duplicate field `id`; each field may appear once"
        );
    }

    #[test]
    fn optional_fields_set_to_null_are_absent_but_data_null_is_a_value() {
        assert_eq!(
            parse(r#"{"action":"ping","id":null}"#).unwrap(),
            ClientMessage::Ping { id: None }
        );
        assert!(matches!(
            parse(r#"{"action":"subscribe","channel":"a","since":null}"#).unwrap(),
            ClientMessage::Subscribe { since: None, .. }
        ));
        for coalesce in ["false", "null"] {
            let frame = format!(r#"{{"action":"subscribe","channel":"a","coalesce":{coalesce}}}"#);
            assert!(
                matches!(
                    parse(&frame).unwrap(),
                    ClientMessage::Subscribe {
                        coalesce: false,
                        ..
                    }
                ),
                "{frame}"
            );
        }
    }

    /// Property tests over the parser: generated frames, valid and broken, never panic
    /// it, and whatever it accepts is valid. `PROPTEST_CASES` raises the case count.
    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        const ACTIONS: [&str; 6] = [
            "subscribe",
            "unsubscribe",
            "publish",
            "history",
            "ping",
            "shout",
        ];
        const FIELDS: [&str; 10] = [
            "action",
            "channel",
            "id",
            "since",
            "epoch",
            "limit",
            "expectSeq",
            "data",
            "coalesce",
            "junk",
        ];

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                "\\PC{0,24}".prop_map(Value::from),
                "[a-z]{1,8}:[A-Za-z0-9_.@-]{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 5, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map("[a-z]{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// A value for `field`: usually plausible, sometimes anything at all.
        fn value_for(field: &'static str) -> BoxedStrategy<Value> {
            let plausible: BoxedStrategy<Value> = match field {
                "action" => prop::sample::select(&ACTIONS[..])
                    .prop_map(Value::from)
                    .boxed(),
                "channel" => "[A-Za-z0-9_:.@-]{0,130}".prop_map(Value::from).boxed(),
                "id" | "epoch" => "[A-Za-z0-9_:.-]{0,66}".prop_map(Value::from).boxed(),
                "since" | "limit" | "expectSeq" => (0u64..2000).prop_map(Value::from).boxed(),
                _ => any_json().boxed(),
            };
            prop_oneof![4 => plausible, 1 => any_json()].boxed()
        }

        fn frame() -> impl Strategy<Value = Value> {
            let fields: Vec<BoxedStrategy<Option<(&'static str, Value)>>> = FIELDS
                .iter()
                .map(|field| {
                    prop::option::weighted(0.6, value_for(field).prop_map(move |v| (*field, v)))
                        .boxed()
                })
                .collect();
            fields.prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<String, Value>>(),
                )
            })
        }

        fn check(frame: &str) {
            let limits = FrameLimits::default();
            match ClientMessage::parse(frame, &limits) {
                Ok(message) => {
                    if let Some(channel) = message.channel() {
                        Channel::parse(channel.as_str()).expect("accepted channels are valid");
                    }
                    if let Some(id) = message.id() {
                        MessageId::parse(id.as_str()).expect("accepted ids are valid");
                    }
                    if let ClientMessage::Publish { data, .. } = &message {
                        assert!(data.get().len() <= limits.max_data_bytes);
                        assert!(nesting_depth(data.get()) <= limits.max_data_depth);
                        serde_json::from_str::<Value>(data.get()).expect("data is JSON");
                    }
                }
                Err(error) => {
                    assert!(matches!(
                        error.code,
                        ErrorCode::BadRequest | ErrorCode::TooLarge
                    ));
                    assert!(!error.message.is_empty());
                    assert!(
                        error.message.len() < 400,
                        "error echoes too much: {}",
                        error.message
                    );
                }
            }
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics_the_parser(text in "\\PC{0,300}") {
                check(&text);
            }

            #[test]
            fn generated_frames_are_accepted_only_when_valid(frame in frame()) {
                check(&frame.to_string());
            }

            #[test]
            fn valid_publishes_round_trip(
                channel in "[A-Za-z0-9_:.@-]{1,128}",
                id in "[A-Za-z0-9_:.-]{1,64}",
                data in any_json(),
                expect in prop::option::of(0u64..100),
            ) {
                let mut frame = json!({"action": "publish", "channel": channel, "id": id, "data": data});
                if let Some(x) = expect {
                    frame["expectSeq"] = json!(x);
                }
                let parsed = ClientMessage::parse(&frame.to_string(), &FrameLimits::default()).unwrap();
                let ClientMessage::Publish { channel: c, id: i, data: d, expect_seq } = parsed else {
                    panic!("not a publish");
                };
                prop_assert_eq!(c.as_str(), channel.as_str());
                prop_assert_eq!(i.as_str(), id.as_str());
                // Byte for byte: the payload is never re-encoded (and so never rounded).
                prop_assert_eq!(d.get(), data.to_string());
                prop_assert_eq!(expect_seq, expect);
            }
        }
    }
}

/// Frames found by `fuzz/` (the `frame` target); the inputs it found are kept in
/// `tests/corpus/frame/crash-*`.
#[cfg(test)]
mod fuzz_regressions {
    use super::*;
    use crate::protocol::error::MAX_ERROR_MESSAGE_CHARS;

    #[test]
    fn error_messages_do_not_echo_huge_input() {
        let long = "x".repeat(1000);
        for frame in [
            format!(r#"{{"{long}":"ping"}}"#),
            format!(r#"{{"action":"{long}"}}"#),
            format!(r#"{{"action":"history","channel":"a","since":"{long}"}}"#),
            r#"{"action":"ping","since":1e308}"#.to_owned(),
        ] {
            let e = ClientMessage::parse(&frame, &FrameLimits::default()).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(
                e.message.chars().count() <= MAX_ERROR_MESSAGE_CHARS + 1,
                "{} characters: {}",
                e.message.chars().count(),
                e.message
            );
        }
        let e = ClientMessage::parse(
            &format!(r#"{{"action":"{long}"}}"#),
            &FrameLimits::default(),
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "unknown action \"{}…\"; action must be one of subscribe, unsubscribe, publish, history, update, state, presence, members, ping",
                "x".repeat(32)
            ),
            "the name is cut short, the expected form is kept"
        );
    }

    #[test]
    fn arrays_are_not_frames() {
        for frame in [r#"["ping"]"#, r#" ["subscribe", "r1", "chat"]"#] {
            let e = ClientMessage::parse(frame, &FrameLimits::default()).unwrap_err();
            assert_eq!(e.message, "frame must be a JSON object", "{frame}");
        }
    }

    /// The checked-in fuzz corpus (`tests/corpus/frame/`), replayed on every test run:
    /// each file has its expected outcome, the action it parses as or the error code it is
    /// refused with. A new corpus file needs its line here.
    #[test]
    fn the_fuzz_corpus_gives_each_file_its_expected_outcome() {
        use ErrorCode::{BadRequest, TooLarge};
        let expected: &[(&str, Result<&str, ErrorCode>)] = &[
            ("bad-channel.json", Err(BadRequest)),
            ("bad-coalesce.json", Err(BadRequest)),
            ("bad-duplicate.json", Err(BadRequest)),
            ("bad-field-type.json", Err(BadRequest)),
            ("bad-not-object.json", Err(BadRequest)),
            ("bad-unknown-action.json", Err(BadRequest)),
            ("bad-unknown-field.json", Err(BadRequest)),
            ("crash-array-frame.json", Err(BadRequest)),
            ("crash-long-unknown-field.json", Err(BadRequest)),
            ("frame-too-large.json", Err(TooLarge)),
            ("history.json", Ok("history")),
            ("ping-id.json", Ok("ping")),
            ("ping.json", Ok("ping")),
            ("publish-data-too-large.json", Err(TooLarge)),
            ("publish-escapes.json", Ok("publish")),
            // The numbers in `data` are fine; `expectSeq` is over MAX_SEQ.
            ("publish-huge-numbers.json", Err(BadRequest)),
            ("publish-null.json", Ok("publish")),
            ("publish-object.json", Ok("publish")),
            ("publish-unicode.json", Ok("publish")),
            ("subscribe-bare.json", Ok("subscribe")),
            ("subscribe-coalesce.json", Ok("subscribe")),
            ("subscribe.json", Ok("subscribe")),
            ("unsubscribe.json", Ok("unsubscribe")),
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/frame");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the corpus exists")
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let named: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, named, "every corpus file has its expected outcome");
        for (name, outcome) in expected {
            let frame = std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
            let parsed = ClientMessage::parse(&frame, &FrameLimits::default())
                .map(|message| message.action())
                .map_err(|error| error.code);
            assert_eq!(parsed, *outcome, "{name}");
        }
    }
}
