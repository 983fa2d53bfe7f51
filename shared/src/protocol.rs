//! Wire protocol v1: the JSON text frames a client sends ([`ClientMessage`]) and the
//! frames it receives ([`ServerMessage`]).
//!
//! Every client frame is parsed and validated here, before any handler runs, so a bad
//! frame is answered with an [`ErrorFrame`] that names the problem and nothing is
//! written. The parser is strict: unknown fields and fields that do not belong to the
//! action are refused, so a typo such as `expectseq` cannot silently turn a guarded
//! publish into an unguarded one.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Limits applied while parsing a frame; see [`crate::config::Settings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted frame, in bytes (API Gateway itself closes frames over 32 KB).
    pub max_frame_bytes: usize,
    /// Largest accepted `data`, serialised, in bytes.
    pub max_data_bytes: usize,
    /// Largest `limit` a `history` request may ask for.
    pub max_history_limit: u32,
    /// Longest channel name (at most [`MAX_CHANNEL_LEN`]).
    pub max_channel_len: usize,
    /// Longest message or request id (at most [`MAX_ID_LEN`]).
    pub max_id_len: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 32 * 1024,
            max_data_bytes: 24 * 1024,
            max_history_limit: 1000,
            max_channel_len: MAX_CHANNEL_LEN,
            max_id_len: MAX_ID_LEN,
        }
    }
}

/// Longest channel name the protocol allows.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest message or request id the protocol allows.
pub const MAX_ID_LEN: usize = 64;
/// Longest epoch string a client may send back.
pub const MAX_EPOCH_LEN: usize = 64;
/// Highest seq a channel can reach (delta sort keys hold 12 digits), and so the highest
/// `since` or `expectSeq` a client may send.
pub const MAX_SEQ: u64 = 999_999_999_999;

/// A validated channel name: 1–128 characters of `A-Za-z0-9_-:.@`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    /// Validates `name` as a channel name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::parse_within(name, MAX_CHANNEL_LEN)
    }

    /// Validates `name` as a channel name of at most `max` characters.
    pub fn parse_within(name: &str, max: usize) -> Result<Self, String> {
        let max = max.min(MAX_CHANNEL_LEN);
        if name.is_empty() || name.len() > max {
            return Err(format!(
                "channel name must be 1 to {max} characters, got {}",
                name.len()
            ));
        }
        if let Some(bad) = name.chars().find(|c| !is_channel_char(*c)) {
            return Err(format!(
                "channel name has invalid character {bad:?}; allowed: A-Z a-z 0-9 _ - : . @"
            ));
        }
        Ok(Self(name.to_owned()))
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` may appear in a channel name.
pub fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@')
}

/// A validated message or request id: 1–64 characters of `A-Za-z0-9_-:.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// Validates `id` as a message or request id.
    pub fn parse(id: &str) -> Result<Self, String> {
        Self::parse_within(id, MAX_ID_LEN)
    }

    /// Validates `id` as a message or request id of at most `max` characters.
    pub fn parse_within(id: &str, max: usize) -> Result<Self, String> {
        let max = max.min(MAX_ID_LEN);
        if id.is_empty() || id.len() > max {
            return Err(format!(
                "id must be 1 to {max} characters, got {}",
                id.len()
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')))
        {
            return Err(format!(
                "id has invalid character {bad:?}; allowed: A-Z a-z 0-9 _ - : ."
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A delta's payload: JSON text kept exactly as published (less insignificant
/// whitespace), so numbers are never rounded through `f64`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Wraps JSON text; fails if it is not valid JSON.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// One frame from a client, parsed and validated.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientMessage {
    /// Start receiving a channel's deltas, optionally catching up from `since`.
    Subscribe {
        channel: Channel,
        since: Option<u64>,
        epoch: Option<String>,
        id: Option<MessageId>,
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
            Self::Ping { .. } => "ping",
        }
    }

    /// The id to echo in replies.
    pub fn id(&self) -> Option<&MessageId> {
        match self {
            Self::Subscribe { id, .. }
            | Self::Unsubscribe { id, .. }
            | Self::History { id, .. }
            | Self::Ping { id } => id.as_ref(),
            Self::Publish { id, .. } => Some(id),
        }
    }

    /// The channel the frame is about, if any.
    pub fn channel(&self) -> Option<&Channel> {
        match self {
            Self::Subscribe { channel, .. }
            | Self::Unsubscribe { channel, .. }
            | Self::Publish { channel, .. }
            | Self::History { channel, .. } => Some(channel),
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
        let raw: RawFrame<'_> = match serde_json::from_str(frame) {
            // Serde also reads a struct from an array, field by field in order.
            Ok(_) if frame.trim_start().starts_with('[') => {
                return Err(Box::new(ErrorFrame::new(
                    ErrorCode::BadRequest,
                    "frame must be a JSON object",
                )));
            }
            Ok(raw) => raw,
            Err(err) => return Err(Box::new(explain_parse_error(frame, &err))),
        };
        let reply_id = raw.id.as_deref().and_then(|id| MessageId::parse(id).ok());
        let channel_hint = raw.channel.as_deref().and_then(|c| Channel::parse(c).ok());
        raw.validate(limits).map_err(|(code, message)| {
            let mut error = ErrorFrame::new(code, brief(message));
            error.id = reply_id;
            error.channel = channel_hint;
            Box::new(error)
        })
    }
}

/// The flat shape every frame is first read into, borrowing from the frame so `data`
/// keeps its exact bytes.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFrame<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    expect_seq: Option<u64>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// `data: null` is a value (a delta may well be `null`), unlike a missing `data`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

type Invalid = (ErrorCode, String);

fn bad(message: impl Into<String>) -> Invalid {
    (ErrorCode::BadRequest, message.into())
}

impl RawFrame<'_> {
    fn validate(self, limits: &FrameLimits) -> Result<ClientMessage, Invalid> {
        let action = self.action.as_ref();
        let allowed: &[&str] = match action {
            "subscribe" => &["channel", "since", "epoch", "id"],
            "unsubscribe" => &["channel", "id"],
            "publish" => &["channel", "id", "data", "expectSeq"],
            "history" => &["channel", "since", "limit", "id"],
            "ping" => &["id"],
            other => {
                return Err(bad(format!(
                    "unknown action {other:?}; expected one of subscribe, unsubscribe, publish, history, ping"
                )));
            }
        };
        for (name, present) in [
            ("channel", self.channel.is_some()),
            ("since", self.since.is_some()),
            ("epoch", self.epoch.is_some()),
            ("limit", self.limit.is_some()),
            ("expectSeq", self.expect_seq.is_some()),
            ("data", self.data.is_some()),
        ] {
            if present && !allowed.contains(&name) {
                return Err(bad(format!("field `{name}` is not allowed in {action}")));
            }
        }
        for (name, seq) in [("since", self.since), ("expectSeq", self.expect_seq)] {
            if seq.is_some_and(|seq| seq > MAX_SEQ) {
                return Err(bad(format!("invalid `{name}`: must be at most {MAX_SEQ}")));
            }
        }
        let id = self
            .id
            .as_deref()
            .map(|id| MessageId::parse_within(id, limits.max_id_len))
            .transpose()
            .map_err(|e| bad(format!("invalid `id`: {e}")))?;
        if action == "ping" {
            return Ok(ClientMessage::Ping { id });
        }
        let channel = match self.channel.as_deref() {
            None => return Err(bad(format!("missing field `channel` in {action}"))),
            Some(c) => Channel::parse_within(c, limits.max_channel_len)
                .map_err(|e| bad(format!("invalid `channel`: {e}")))?,
        };
        match action {
            "subscribe" => {
                let epoch = self.epoch.map(Cow::into_owned);
                if let Some(epoch) = &epoch
                    && (epoch.is_empty() || epoch.len() > MAX_EPOCH_LEN)
                {
                    return Err(bad(format!(
                        "invalid `epoch`: must be 1 to {MAX_EPOCH_LEN} characters"
                    )));
                }
                if epoch.is_some() && self.since.is_none() {
                    return Err(bad("`epoch` needs `since`"));
                }
                Ok(ClientMessage::Subscribe {
                    channel,
                    since: self.since,
                    epoch,
                    id,
                })
            }
            "unsubscribe" => Ok(ClientMessage::Unsubscribe { channel, id }),
            "publish" => {
                let id = id.ok_or_else(|| {
                    bad("missing field `id` in publish: it is the message's idempotency key")
                })?;
                let data = self
                    .data
                    .ok_or_else(|| bad("missing field `data` in publish"))?;
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
                Ok(ClientMessage::Publish {
                    channel,
                    id,
                    data,
                    expect_seq: self.expect_seq,
                })
            }
            "history" => {
                let since = self
                    .since
                    .ok_or_else(|| bad("missing field `since` in history"))?;
                if let Some(limit) = self.limit
                    && (limit == 0 || limit > limits.max_history_limit)
                {
                    return Err(bad(format!(
                        "invalid `limit`: must be 1 to {}",
                        limits.max_history_limit
                    )));
                }
                Ok(ClientMessage::History {
                    channel,
                    since,
                    limit: self.limit,
                    id,
                })
            }
            _ => unreachable!("actions are matched above"),
        }
    }
}

/// Re-serialises raw JSON without insignificant whitespace, keeping every value's text
/// (numbers are not rounded through `f64`).
fn compact(raw: &RawValue) -> Payload {
    let text = raw.get();
    if !text.bytes().any(|b| b.is_ascii_whitespace()) {
        return Payload(raw.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    Payload::from_json(out).expect("removing whitespace outside strings keeps JSON valid")
}

fn explain_parse_error(frame: &str, err: &serde_json::Error) -> ErrorFrame {
    let value: serde_json::Value = match serde_json::from_str(frame) {
        Ok(value) => value,
        Err(_) => return ErrorFrame::new(ErrorCode::BadRequest, "frame is not valid JSON"),
    };
    let Some(object) = value.as_object() else {
        return ErrorFrame::new(ErrorCode::BadRequest, "frame must be a JSON object");
    };
    let mut message = err.to_string();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    if message.contains("expected one of") && message.starts_with("unknown field") {
        // serde lists every field of every action; name only the offending one.
        if let Some(end) = message.find(", expected") {
            message.truncate(end);
        }
    }
    let mut error = ErrorFrame::new(ErrorCode::BadRequest, brief(message));
    error.id = object
        .get("id")
        .and_then(|v| v.as_str())
        .and_then(|id| MessageId::parse(id).ok());
    error.channel = object
        .get("channel")
        .and_then(|v| v.as_str())
        .and_then(|c| Channel::parse(c).ok());
    error
}

/// Longest error message sent back for a refused frame, in characters.
const MAX_ERROR_MESSAGE_CHARS: usize = 256;

/// Cuts a message that quotes the frame (an unknown action or field, a mistyped value)
/// to [`MAX_ERROR_MESSAGE_CHARS`], so a client's huge input is never echoed back whole.
fn brief(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
}

/// Why a request failed, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, unknown action, missing or invalid field.
    BadRequest,
    /// The token's capabilities do not allow the action on the channel.
    Forbidden,
    /// A frame, `data` or other size is over its limit.
    TooLarge,
    /// `expectSeq` did not match the channel's head.
    Conflict,
    /// Too many publishes; slow down.
    RateLimited,
    /// Something failed on the server; the request may be retried.
    Internal,
}

/// `{"type":"error",...}`: a request could not be served.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorFrame {
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable explanation naming the problem.
    pub message: String,
    /// The request's id, if it had a valid one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// The channel the request was about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The channel's head seq, on `conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The channel's epoch, on `conflict`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

impl ErrorFrame {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            channel: None,
            seq: None,
            epoch: None,
        }
    }

    /// The same error, echoing a request's id and channel.
    pub fn about(mut self, request: &ClientMessage) -> Self {
        self.id = request.id().cloned();
        self.channel = request.channel().cloned();
        self
    }
}

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

/// One frame to a client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage<'a> {
    /// A delta of a subscribed channel.
    Delta(&'a Delta),
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
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a MessageId>,
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
            }
        );
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
        assert_eq!(e.message, "unknown field `sinse`");
        assert_eq!(e.id, Some(MessageId::parse("r9").unwrap()), "echoes the id");

        let e = error(r#"{"action":"subscribe","channel":"a","since":"x"}"#);
        assert!(
            e.message.starts_with("invalid type: string"),
            "{}",
            e.message
        );

        let e = error(r#"{"channel":"a"}"#);
        assert_eq!(e.message, "missing field `action`");

        let e = error(r#"{"action":"shout","id":"r2"}"#);
        assert!(e.message.starts_with("unknown action \"shout\""));
        assert_eq!(e.id.unwrap().as_str(), "r2");

        let e = error(r#"{"action":"subscribe","channel":"a","data":1}"#);
        assert_eq!(e.message, "field `data` is not allowed in subscribe");

        let e = error(r#"{"action":"subscribe"}"#);
        assert_eq!(e.message, "missing field `channel` in subscribe");

        let e = error(r#"{"action":"subscribe","channel":"a","epoch":"e"}"#);
        assert_eq!(e.message, "`epoch` needs `since`");

        let e = error(r#"{"action":"subscribe","channel":"a","since":-1}"#);
        assert!(
            e.message.starts_with("invalid value: integer `-1`"),
            "{}",
            e.message
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
            assert_eq!(
                e.message,
                format!("invalid `{field}`: must be at most 999999999999")
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
        for ok in [
            "a",
            "chat:lobby",
            "user:alice@example.com",
            "x.y-z_1",
            &"c".repeat(128),
        ] {
            Channel::parse(ok).unwrap();
        }
        for bad_name in [
            "",
            "has space",
            "slash/no",
            "star*",
            "ümlaut",
            &"c".repeat(129),
        ] {
            assert!(Channel::parse(bad_name).is_err(), "{bad_name:?} accepted");
        }
        let e = error(r#"{"action":"subscribe","channel":"a b"}"#);
        assert!(e.message.starts_with("invalid `channel`"), "{}", e.message);
    }

    #[test]
    fn publish_needs_a_valid_id_and_data() {
        let e = error(r#"{"action":"publish","channel":"a","data":1}"#);
        assert!(e.message.starts_with("missing field `id` in publish"));
        let e = error(r#"{"action":"publish","channel":"a","id":"has space","data":1}"#);
        assert!(e.message.starts_with("invalid `id`"));
        assert_eq!(e.id, None, "an invalid id is not echoed");
        let e = error(&format!(
            r#"{{"action":"publish","channel":"a","id":"{}","data":1}}"#,
            "x".repeat(65)
        ));
        assert!(e.message.contains("1 to 64"));
        let e = error(r#"{"action":"publish","channel":"a","id":"m"}"#);
        assert_eq!(e.message, "missing field `data` in publish");
    }

    #[test]
    fn sizes_are_limited() {
        let limits = FrameLimits {
            max_frame_bytes: 200,
            max_data_bytes: 10,
            max_history_limit: 50,
            max_channel_len: 8,
            max_id_len: 4,
        };
        let e = ClientMessage::parse(r#"{"action":"subscribe","channel":"123456789"}"#, &limits)
            .unwrap_err();
        assert_eq!(
            e.message,
            "invalid `channel`: channel name must be 1 to 8 characters, got 9"
        );
        let e = ClientMessage::parse(r#"{"action":"ping","id":"12345"}"#, &limits).unwrap_err();
        assert_eq!(
            e.message,
            "invalid `id`: id must be 1 to 4 characters, got 5"
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
        assert_eq!(e.message, "invalid `limit`: must be 1 to 50");
    }

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
            ServerMessage::Unsubscribed {
                channel: &channel,
                id: None
            }
            .to_json(),
            r#"{"type":"unsubscribed","channel":"chat"}"#
        );
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
        const FIELDS: [&str; 9] = [
            "action",
            "channel",
            "id",
            "since",
            "epoch",
            "limit",
            "expectSeq",
            "data",
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
        assert!(
            e.message.starts_with("unknown action \"xxx") && e.message.ends_with('…'),
            "{}",
            e.message
        );
    }

    #[test]
    fn arrays_are_not_frames() {
        for frame in [r#"["ping"]"#, r#" ["subscribe", "r1", "chat"]"#] {
            let e = ClientMessage::parse(frame, &FrameLimits::default()).unwrap_err();
            assert_eq!(e.message, "frame must be a JSON object", "{frame}");
        }
    }

    /// The checked-in fuzz corpus (`tests/corpus/frame/`), replayed on every test run.
    #[test]
    fn the_fuzz_corpus_parses_without_panicking() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/frame");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(frame) = std::str::from_utf8(&bytes)
                && let Err(error) = ClientMessage::parse(frame, &FrameLimits::default())
            {
                assert!(matches!(
                    error.code,
                    ErrorCode::BadRequest | ErrorCode::TooLarge
                ));
            }
            replayed += 1;
        }
        assert!(replayed >= 10, "only {replayed} corpus files");
    }
}
