//! One simulated client: a task that owns one socket at a time and behaves as the README
//! tells an app to (see the crate docs for the algorithm). Its life is in `session.rs`,
//! what it sends in `requests.rs`, what it does with each frame in `receive.rs`, and its
//! per-channel and per-publish state in `state.rs`, what it does with a refused publish in
//! `retry.rs`.

mod receive;
mod requests;
mod retry;
mod session;
mod state;

pub(crate) use session::Client;
pub(crate) use state::ClientOutcome;
