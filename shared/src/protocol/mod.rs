//! Wire protocol v1: the JSON frames a client sends ([`ClientMessage`]) and the frames
//! it receives ([`ServerMessage`]).
//!
//! Every client frame is parsed and validated here, before any handler runs, so a bad
//! frame is answered with an [`ErrorFrame`] that names the field and the form it must
//! have, and nothing is written. The parser is strict: unknown fields and fields that do
//! not belong to the action are refused, so a typo such as `expectseq` cannot silently
//! turn a guarded publish into an unguarded one.
//!
//! ## Layout
//! - `names`: the validated names every frame carries, [`Channel`] and [`MessageId`].
//! - `limits`: [`FrameLimits`] and the protocol's fixed bounds ([`MAX_SEQ`], ...).
//! - `payload`: [`Payload`], a delta's JSON kept byte for byte.
//! - `client`: [`ClientMessage`], one enum for every action, and its parser.
//! - `ops`: the `ops` of an `update` (a state channel's operations).
//! - `presence`: the fields of `presence` and `members` frames.
//! - `frame`: reading a frame's JSON into raw fields, and explaining JSON that does not
//!   fit the frame's shape (not an object, unknown or repeated fields).
//! - `fields`: the expected form of every field, and the refusal that states it.
//! - `error`: [`ErrorCode`] and [`ErrorFrame`], the `error` frame.
//! - `server`: [`ServerMessage`] and [`Delta`], every frame a client receives.

mod client;
mod error;
mod fields;
mod frame;
mod limits;
mod names;
mod ops;
mod payload;
mod presence;
mod server;

pub use client::ClientMessage;
pub use error::{ErrorCode, ErrorFrame};
pub use limits::{FrameLimits, MAX_DATA_DEPTH, MAX_EPOCH_LEN, MAX_READ_BYTES, MAX_SEQ};
pub use names::{
    CHANNEL_CHARACTERS, Channel, ID_CHARACTERS, MAX_CHANNEL_LEN, MAX_ID_LEN, MessageId,
    is_channel_char,
};
pub use payload::Payload;
pub use presence::{MAX_MEMBER_DATA_BYTES, MAX_MEMBER_ID_LEN, PresenceOp};
pub use server::{Delta, Member, ServerMessage};
