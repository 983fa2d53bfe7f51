//! # deltacast
//!
//! The library behind deltacast's Lambda functions. Each function binary in
//! `functions/` is a thin `main.rs` plus a `handler.rs`; everything they share lives here.
//!
//! ## Layout
//! - [`protocol`]: wire protocol v1, the client frames (`ClientMessage`, parsed and
//!   validated in one place) and the server frames (`ServerMessage`, `Delta`, errors).
//! - [`auth`]: JWT verification, capabilities and the `Identity` carried from the
//!   `$connect` authorizer to every later route.
//! - [`store`]: the single DynamoDB table: connections, subscriptions, deltas, the
//!   channels' inboxes of publishes; [`store::items`] documents the keys.
//! - [`state`]: live state's documents: ops, folding them (last writer wins by time),
//!   the merge patches subscribers get.
//! - [`answers`]: the frames that answer a publish, from the message function or the
//!   sequencer.
//! - [`push`]: delivering frames through the API Gateway Management API, with retries.
//! - [`stream`]: reading deltas (for the fan-out) and inbox items (for the sequencer)
//!   out of DynamoDB Streams records.
//! - [`config`]: settings from environment variables.
//! - [`cost`]: what each request costs in rate-limit tokens.
//! - [`init`]: reporting a function's configuration error to Lambda's init-error endpoint.
//! - [`aws`]: SDK configuration, loaded once per process.
//! - [`telemetry`]: logging setup.
//! - [`metrics`]: metrics as CloudWatch Embedded Metric Format lines, flushed per
//!   invocation.
//! - [`clock`]: Unix time helpers.

pub mod answers;
pub mod auth;
pub mod aws;
pub mod clock;
pub mod config;
pub mod cost;
pub mod init;
pub mod metrics;
pub mod protocol;
pub mod push;
pub mod state;
pub mod store;
pub mod stream;
pub mod telemetry;
