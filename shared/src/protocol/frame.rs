//! Reading a frame's JSON into its raw fields. Every field is kept as raw JSON (borrowed
//! from the frame, so `data` keeps its exact bytes) and checked afterwards by `fields`;
//! what serde refuses here is the frame's shape: text that is not JSON, JSON that is not
//! an object, unknown or repeated fields. Those refusals are explained here.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::error::{ErrorCode, ErrorFrame, brief};
use super::fields::{self, FIELDS};
use super::names::{Channel, MessageId};

/// The flat shape every frame is first read into. A field set to `null` reads as absent,
/// except `data`, where `null` is a value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawFrame<'a> {
    #[serde(borrow, default)]
    pub action: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub channel: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub epoch: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub limit: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub expect_seq: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    pub data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub coalesce: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub ops: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub op: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub presence: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub after: Option<&'a RawValue>,
}

/// `data: null` is a value (a delta may well be `null`), unlike a missing `data`.
fn present<'de, D>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <&RawValue>::deserialize(deserializer).map(Some)
}

impl<'a> RawFrame<'a> {
    /// Reads `frame`, or explains why it is not a frame.
    pub fn read(frame: &'a str) -> Result<Self, ErrorFrame> {
        match serde_json::from_str::<Self>(frame) {
            // Serde also reads a struct from an array, field by field in order.
            Ok(_) if frame.trim_start().starts_with('[') => Err(ErrorFrame::new(
                ErrorCode::BadRequest,
                "frame must be a JSON object",
            )),
            Ok(raw) => Ok(raw),
            Err(err) => Err(explain(frame, &err)),
        }
    }

    /// The fields besides `action`, with whether each is present.
    pub fn present_fields(&self) -> [(&'static str, bool); 12] {
        [
            ("id", self.id.is_some()),
            ("channel", self.channel.is_some()),
            ("since", self.since.is_some()),
            ("epoch", self.epoch.is_some()),
            ("limit", self.limit.is_some()),
            ("expectSeq", self.expect_seq.is_some()),
            ("data", self.data.is_some()),
            ("coalesce", self.coalesce.is_some()),
            ("ops", self.ops.is_some()),
            ("op", self.op.is_some()),
            ("presence", self.presence.is_some()),
            ("after", self.after.is_some()),
        ]
    }

    /// The frame's id, if it is a valid one, to echo in a refusal.
    pub fn reply_id(&self) -> Option<MessageId> {
        self.id
            .and_then(fields::string)
            .and_then(|id| MessageId::parse(&id).ok())
    }

    /// The frame's channel, if it is a valid one, to echo in a refusal.
    pub fn channel_hint(&self) -> Option<Channel> {
        self.channel
            .and_then(fields::string)
            .and_then(|c| Channel::parse(&c).ok())
    }
}

/// Why serde could not read `frame` as a [`RawFrame`].
fn explain(frame: &str, err: &serde_json::Error) -> ErrorFrame {
    let value: Value = match serde_json::from_str(frame) {
        Ok(value) => value,
        Err(_) => return ErrorFrame::new(ErrorCode::BadRequest, "frame is not valid JSON"),
    };
    let Some(object) = value.as_object() else {
        return ErrorFrame::new(ErrorCode::BadRequest, "frame must be a JSON object");
    };
    let action = object.get("action").and_then(Value::as_str);
    let message = match object.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        Some(unknown) => format!(
            "unknown field `{}`; {}",
            fields::clip(unknown, 32),
            fields::takes(action)
        ),
        None => {
            // Every key is a known field, so serde found one twice.
            let mut message = err.to_string();
            if let Some(at) = message.find(" at line ") {
                message.truncate(at);
            }
            format!("{message}; each field may appear once")
        }
    };
    let mut error = ErrorFrame::new(ErrorCode::BadRequest, brief(message));
    error.id = object
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| MessageId::parse(id).ok());
    error.channel = object
        .get("channel")
        .and_then(Value::as_str)
        .and_then(|c| Channel::parse(c).ok());
    error
}
