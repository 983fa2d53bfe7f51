//! The `error` frame: the one way a refused or failed request is answered. Messages are
//! for people (they name the field and the form it must have) and are cut short so a
//! client's huge input is never echoed back whole; the code is for programs.

use serde::{Deserialize, Serialize};

use super::names::{Channel, MessageId};

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
    /// Too many requests from this connection or user, or publishes to this channel;
    /// `retryAfterMs` says when to try again.
    RateLimited,
    /// A publish with this id (by this publisher) is being stored: its ack goes to the
    /// connection that sent it. Retry with the same id after `retryAfterMs`.
    InFlight,
    /// Something failed on the server; the request may be retried.
    Internal,
    /// The channel's presence has the most members allowed (`PRESENCE_MAX_MEMBERS`).
    PresenceFull,
    /// The connection's token has expired: its actions are refused and its subscriptions
    /// receive nothing more. Reconnect with a fresh token.
    TokenExpired,
}

impl ErrorCode {
    /// The code as it appears on the wire (`bad_request`, `rate_limited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Forbidden => "forbidden",
            Self::TooLarge => "too_large",
            Self::Conflict => "conflict",
            Self::RateLimited => "rate_limited",
            Self::InFlight => "in_flight",
            Self::Internal => "internal",
            Self::PresenceFull => "presence_full",
            Self::TokenExpired => "token_expired",
        }
    }
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
    /// The channel's epoch, on `conflict` (boxed, with `retryAfterMs` in 32 bits, so the
    /// frame stays small enough to pass by value).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Box<str>>,
    /// When to try again, in milliseconds, on `rate_limited` and `in_flight` (at most
    /// about 49 days).
    #[serde(rename = "retryAfterMs", skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u32>,
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
            retry_after_ms: None,
        }
    }

    /// The same error, asking to retry after `ms` milliseconds.
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(u32::try_from(ms).unwrap_or(u32::MAX));
        self
    }

    /// The `token_expired` error: an action from a connection whose token has expired,
    /// and the one notice the fan-out sends such a connection instead of its deltas.
    pub fn token_expired() -> Self {
        Self::new(
            ErrorCode::TokenExpired,
            "token expired; reconnect with a fresh token",
        )
    }
}

/// Longest error message sent back for a refused frame, in characters.
pub(super) const MAX_ERROR_MESSAGE_CHARS: usize = 256;

/// Cuts a message that quotes the frame (an unknown action or field, a mistyped value)
/// to [`MAX_ERROR_MESSAGE_CHARS`], so a client's huge input is never echoed back whole.
pub(super) fn brief(mut message: String) -> String {
    if let Some((at, _)) = message.char_indices().nth(MAX_ERROR_MESSAGE_CHARS) {
        message.truncate(at);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn as_str_is_the_name_on_the_wire() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Forbidden,
            ErrorCode::TooLarge,
            ErrorCode::Conflict,
            ErrorCode::RateLimited,
            ErrorCode::InFlight,
            ErrorCode::Internal,
            ErrorCode::PresenceFull,
            ErrorCode::TokenExpired,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
