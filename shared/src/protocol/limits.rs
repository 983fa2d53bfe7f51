//! The bounds a frame must keep: the configurable [`FrameLimits`] (from
//! [`crate::config::Settings`]) and the fixed bounds of the protocol itself, which the
//! table's key formats impose.

use super::names::{MAX_CHANNEL_LEN, MAX_ID_LEN};

/// Longest epoch string a client may send back.
pub const MAX_EPOCH_LEN: usize = 64;
/// Highest seq a channel can reach (delta sort keys hold 12 digits), and so the highest
/// `since` or `expectSeq` a client may send.
pub const MAX_SEQ: u64 = 999_999_999_999;
/// Most bytes of deltas one read returns (a `history` page, or the catch-up of a
/// `subscribe`), so a page fits API Gateway's 128 KB message limit with its envelope and
/// no small frame can ask for more.
pub const MAX_READ_BYTES: usize = 120 * 1024;
/// Deepest nesting of arrays and objects a `data` limit may allow: serde_json, and so
/// every Rust subscriber that reads a delta into a `Value`, refuses JSON deeper than 128.
pub const MAX_DATA_DEPTH: usize = 128;

/// Limits applied while parsing a frame; see [`crate::config::Settings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted frame, in bytes (API Gateway itself closes frames over 32 KB).
    pub max_frame_bytes: usize,
    /// Largest accepted `data`, serialised, in bytes.
    pub max_data_bytes: usize,
    /// Deepest nesting of arrays and objects in `data` (at most [`MAX_DATA_DEPTH`]).
    pub max_data_depth: usize,
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
            max_data_depth: 32,
            max_history_limit: 1000,
            max_channel_len: MAX_CHANNEL_LEN,
            max_id_len: MAX_ID_LEN,
        }
    }
}
