//! The form of every field a client frame may carry, in one table, and the refusals that
//! state it. Each field is read from its raw JSON here rather than by serde's typed
//! deserialisation, so a wrong value is answered with what the field must be
//! (`since must be a whole number from 0 to 999999999999; got -1`) instead of a
//! parser's `invalid type: integer`, and limits come from the configured
//! [`FrameLimits`].

use serde_json::value::RawValue;

use super::limits::{FrameLimits, MAX_EPOCH_LEN, MAX_SEQ};
use super::names::{Channel, MessageId};

/// The actions, as on the wire.
pub(super) const ACTIONS: [&str; 9] = [
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "update",
    "state",
    "presence",
    "members",
    "ping",
];

/// Every field a frame may carry, as on the wire.
pub(super) const FIELDS: [&str; 13] = [
    "action",
    "id",
    "channel",
    "since",
    "epoch",
    "limit",
    "expectSeq",
    "data",
    "coalesce",
    "ops",
    "op",
    "presence",
    "after",
];

/// The fields `action` takes besides `action` itself; `None` for an unknown action.
pub(super) fn fields_of(action: &str) -> Option<&'static [&'static str]> {
    Some(match action {
        "subscribe" => &["channel", "since", "epoch", "id", "coalesce", "presence"],
        "unsubscribe" => &["channel", "id"],
        "publish" => &["channel", "id", "data", "expectSeq"],
        "history" => &["channel", "since", "limit", "id"],
        "update" => &["channel", "id", "ops"],
        "state" => &["channel", "id"],
        "presence" => &["channel", "op", "data", "id"],
        "members" => &["channel", "after", "limit", "id"],
        "ping" => &["id"],
        _ => return None,
    })
}

/// Which fields a frame for `action` may have, in words.
pub(super) fn takes(action: Option<&str>) -> String {
    match action.and_then(|a| fields_of(a).map(|fields| (a, fields))) {
        Some((action, fields)) => format!("{action} takes {}", fields.join(", ")),
        None => format!("a frame's fields are {}", FIELDS.join(", ")),
    }
}

/// The form `field` must have under `limits`, as refusals state it.
pub(super) fn form(field: &str, limits: &FrameLimits) -> String {
    match field {
        "action" => format!("one of {}", ACTIONS.join(", ")),
        "channel" => Channel::form(limits.max_channel_len),
        "id" => MessageId::form(limits.max_id_len),
        "since" | "expectSeq" => format!("a whole number from 0 to {MAX_SEQ}"),
        "limit" => format!("a whole number from 1 to {}", limits.max_history_limit),
        "epoch" => format!(
            "a string of 1-{MAX_EPOCH_LEN} characters, the epoch of a delta or subscribed frame"
        ),
        "data" => format!(
            "any JSON value of at most {} bytes serialised, nested at most {} levels deep",
            limits.max_data_bytes, limits.max_data_depth
        ),
        "coalesce" | "presence" => "true or false".into(),
        "op" => super::presence::OP_FORM.into(),
        "after" => super::presence::after_form(),
        "ops" => super::ops::form(),
        other => unreachable!("no field {other}"),
    }
}

/// `{field} must be {form}; got {what}`.
fn refusal(field: &str, limits: &FrameLimits, got: &RawValue) -> String {
    format!(
        "{field} must be {}; got {}",
        form(field, limits),
        describe(got)
    )
}

/// A required field that is absent.
pub(super) fn missing(field: &str, action: &str, limits: &FrameLimits) -> String {
    format!(
        "missing field `{field}` in {action}; {field} must be {}",
        form(field, limits)
    )
}

/// The action a frame names (known ones only).
pub(super) fn action(raw: &RawValue, limits: &FrameLimits) -> Result<&'static str, String> {
    let Some(name) = string(raw) else {
        return Err(refusal("action", limits, raw));
    };
    ACTIONS.into_iter().find(|a| *a == name).ok_or_else(|| {
        format!(
            "unknown action {}; action must be {}",
            quoted(&name),
            form("action", limits)
        )
    })
}

/// The frame's `channel`.
pub(super) fn channel(raw: &RawValue, limits: &FrameLimits) -> Result<Channel, String> {
    match string(raw) {
        Some(name) => Channel::parse_within(&name, limits.max_channel_len),
        None => Err(refusal("channel", limits, raw)),
    }
}

/// The frame's `id`.
pub(super) fn id(raw: &RawValue, limits: &FrameLimits) -> Result<MessageId, String> {
    match string(raw) {
        Some(id) => MessageId::parse_within(&id, limits.max_id_len),
        None => Err(refusal("id", limits, raw)),
    }
}

/// A seq the client sends: `since` or `expectSeq`.
pub(super) fn seq(field: &str, raw: &RawValue, limits: &FrameLimits) -> Result<u64, String> {
    whole_number(raw, 0, MAX_SEQ).ok_or_else(|| refusal(field, limits, raw))
}

/// The `limit` of a `history` request.
pub(super) fn limit(raw: &RawValue, limits: &FrameLimits) -> Result<u32, String> {
    whole_number(raw, 1, u64::from(limits.max_history_limit))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| refusal("limit", limits, raw))
}

/// The `epoch` a subscribing client last saw.
pub(super) fn epoch(raw: &RawValue, limits: &FrameLimits) -> Result<String, String> {
    string(raw)
        .filter(|epoch| !epoch.is_empty() && epoch.len() <= MAX_EPOCH_LEN)
        .ok_or_else(|| refusal("epoch", limits, raw))
}

/// The `coalesce` choice of a `subscribe`: a JSON boolean.
pub(super) fn boolean(field: &str, raw: &RawValue, limits: &FrameLimits) -> Result<bool, String> {
    match raw.get() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(refusal(field, limits, raw)),
    }
}

/// A JSON string's text; `None` for any other value (or a string that is not Unicode).
pub(super) fn string(raw: &RawValue) -> Option<String> {
    raw.get()
        .starts_with('"')
        .then(|| serde_json::from_str(raw.get()).ok())
        .flatten()
}

/// A whole number written without sign, fraction or exponent, within `min..=max`.
fn whole_number(raw: &RawValue, min: u64, max: u64) -> Option<u64> {
    let text = raw.get();
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (min..=max).contains(n))
}

/// What a value is, in a few words, for the `got ...` of a refusal: numbers as written,
/// strings quoted and cut short, containers by kind (never echoed whole).
pub(super) fn describe(raw: &RawValue) -> String {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => match string(raw) {
            Some(s) if s.is_empty() => "an empty string".into(),
            Some(s) => format!("the string {}", quoted(&s)),
            None => "a string that is not valid Unicode".into(),
        },
        Some(b'{') => "an object".into(),
        Some(b'[') => "an array".into(),
        Some(b't' | b'f') => format!("the boolean {text}"),
        Some(b'n') => "null".into(),
        _ => clip(text, 24),
    }
}

/// `text` in quotes, cut to 32 characters.
pub(super) fn quoted(text: &str) -> String {
    format!("{:?}", clip(text, 32))
}

/// `text` cut to `max` characters, marked with `…` when cut.
pub(super) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}
