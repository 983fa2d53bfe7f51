//! The local API Gateway: a WebSocket endpoint that runs the authorizer and the `$connect`,
//! route and `$disconnect` functions exactly as API Gateway does, and the Management API
//! (`/@connections/{id}`) on the same port, wire-compatible with the AWS SDKs; and, when
//! the template has one, the HTTP API's function URL under `/v1/`.
//!
//! One connection is one task: it reads frames, routes each by the route selection
//! expression and invokes the route's function concurrently (as API Gateway does), and
//! writes whatever is queued for it — replies posted through the Management API by any
//! function. Limits are API Gateway's: frames over 32 KB and messages over 128 KB close
//! the connection with 1009, and idle and total-lifetime timeouts close it with 1001.
//!
//! A connection leaves the Management API's view (posts answer 410) the moment the gateway
//! decides to close it, before the closing handshake and `$disconnect` run, so no post is
//! acknowledged for a frame that will never be sent.
//!
//! ## Layout
//! - `config`: limits, timeouts, routes and fault injection ([`GatewayConfig`], [`Routes`]).
//! - `server`: the running [`Gateway`]: listening, which HTTP path goes where (unknown paths
//!   are logged and answered 404, `/metrics` serves [`crate::metrics`]), shutdown.
//! - `handshake`: a WebSocket upgrade: identity sources, the authorizer, `$connect`.
//! - `authorizer`: reading an authorizer's policy and context.
//! - `connection`: one open connection's task: reading frames, writing queued ones,
//!   timeouts, the closing handshake and `$disconnect`.
//! - `routing`: the route selection expression; invoking a frame's route.
//! - `management`: the Management API (`POST`, `GET`, `DELETE /@connections/{id}`).
//! - `http_api`: the HTTP API under `/v1/`: the function with a URL in the template,
//!   invoked as its function URL would invoke it, responses streamed.
//! - `invoke_api`: Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`),
//!   for any function of the template; what `redrive` replays given-up batches through.
//! - `demo`: the demo app under `/demo/` (`serve --demo-dir`) and its development-token
//!   route for this machine.
//! - `state`: what the tasks share: the open connections and their queues.

mod authorizer;
mod config;
mod connection;
mod demo;
mod handshake;
mod http_api;
mod invoke_api;
mod management;
mod routing;
mod server;
mod state;

pub use config::{
    GatewayConfig, GatewayStats, MAX_FRAME_BYTES, MAX_MESSAGE_BYTES, MAX_QUEUED_FRAMES,
    ManagementFaults, Routes,
};
pub use demo::{DemoApp, DemoDirError, DemoTokens, DevTokens};
pub use routing::select_route;
pub use server::{Gateway, GatewayError, bind};
