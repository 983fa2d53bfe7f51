//! `$default`: every client frame — subscribe, unsubscribe, publish, history, update, state,
//! presence, members, ping —
//! answered through the API Gateway Management API.
//!
//! ## Layout
//! - `handler`: reads the frame (`body`), parses it and dispatches it to its action.
//! - `body`: a frame's text, decoding binary frames API Gateway passes base64-encoded.
//! - `context`: what every action is given, [`context::App`] and [`context::Sender`].
//! - `actions/`: one file per action, each with its arguments type and its tests.
//!
//! The crate is a library as well as the `message` binary: the `http` function answers
//! its publishes and reads through the same actions ([`handler::dispatch`]), so a request
//! over HTTP and a frame over the socket share one code path, limits and answers.

pub mod actions;
pub mod body;
#[cfg(test)]
mod capacity;
pub mod context;
pub mod handler;
#[cfg(test)]
mod testing;
