//! The fields of presence frames: the `op` of a `presence` frame, the member `data` it
//! carries (at most [`MAX_MEMBER_DATA_BYTES`]), and the `after` cursor of a `members`
//! request (a member id: the connection id the previous page ended on).

use serde_json::value::RawValue;

use super::limits::FrameLimits;
use super::payload::{Payload, compact, nesting_depth};

/// The largest member `data`, serialised.
pub const MAX_MEMBER_DATA_BYTES: usize = 1024;
/// The longest `after` cursor (API Gateway's connection ids are 16 characters).
pub const MAX_MEMBER_ID_LEN: usize = 128;

/// What a `presence` frame does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresenceOp {
    /// Become a member of the channel (or change one's data: an `enter` when present
    /// is an `update`).
    Enter,
    /// Change one's data; refused when not a member.
    Update,
    /// Stop being a member (not an error when not one).
    Leave,
}

impl PresenceOp {
    /// The op's name, as on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Enter => "enter",
            Self::Update => "update",
            Self::Leave => "leave",
        }
    }
}

/// What `op` must be.
pub(super) const OP_FORM: &str = "one of enter, update, leave";
/// What `after` must be.
pub(super) fn after_form() -> String {
    format!(
        "a member id (a connection id, 1-{MAX_MEMBER_ID_LEN} characters of A-Z a-z 0-9 + / = _ -), the `next` of the previous page"
    )
}
/// Reads `op`.
pub(super) fn op(raw: &RawValue) -> Option<PresenceOp> {
    match raw.get() {
        r#""enter""# => Some(PresenceOp::Enter),
        r#""update""# => Some(PresenceOp::Update),
        r#""leave""# => Some(PresenceOp::Leave),
        _ => None,
    }
}

/// Reads a member's `data`: compacted, within its size and depth.
pub(super) fn data(raw: &RawValue, limits: &FrameLimits) -> Result<Payload, (bool, String)> {
    let data = compact(raw);
    let len = data.get().len();
    if len > MAX_MEMBER_DATA_BYTES {
        return Err((
            true,
            format!(
                "member `data` is {len} bytes serialised; the limit is {MAX_MEMBER_DATA_BYTES} bytes"
            ),
        ));
    }
    let depth = nesting_depth(data.get());
    if depth > limits.max_data_depth {
        return Err((
            false,
            format!(
                "data must be nested at most {} levels deep; got {depth}",
                limits.max_data_depth
            ),
        ));
    }
    Ok(data)
}

/// Reads `after`.
pub(super) fn after(text: &str) -> Option<String> {
    let ok = !text.is_empty()
        && text.len() <= MAX_MEMBER_ID_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b));
    ok.then(|| text.to_owned())
}
