//! # deltacast-local
//!
//! The local stack: everything that stands in for AWS on a laptop, so that the very
//! binaries that get deployed run unchanged.
//!
//! ## Layout
//! - [`template`]: reads `template.yaml` (functions, routes, authorizer, stream trigger,
//!   table) and creates the table in DynamoDB Local.
//! - [`invoke`]: the `Invoke` trait and Lambda's ways of failing.
//! - [`events`]: the payloads API Gateway sends to WebSocket integrations and authorizers.
//! - [`gateway`]: the WebSocket endpoint, the Management API, the HTTP API and the demo
//!   app's files (`--demo-dir`).
//! - [`function_url`]: a Lambda function URL's request event and (streamed) response.
//! - [`runtime`]: a local Lambda Runtime API; runs function binaries as processes, a pool
//!   of instances per function.
//! - [`metrics`]: the functions' EMF lines, validated and added up, served at `/metrics`
//!   in Prometheus's format with the runtime's own figures; `make dev`'s traffic line.
//! - [`streams`]: the DynamoDB Streams event source mapping (polling, batching, filtering,
//!   retries, bisecting, on-failure records).
//! - [`stack`]: wires it all together from the template; `main.rs` is its command line.
//! - [`redrive`]: replays what the stream trigger gave up on (`make redrive`), through the
//!   running stack's Invoke API.
//! - [`exposure`]: who can reach the stack: the development secret stays on loopback.
//! - [`dev_token`]: development tokens (`make token`, the banner, the demo app's).
//!
//! Beside the crate, `infra/local/dev` is what `make dev` runs (DynamoDB Local, then this
//! stack, refusing ports that are taken) and `infra/local/port-owner` names the process
//! that holds a port.

pub mod dev_token;
pub mod events;
pub mod exposure;
pub mod function_url;
pub mod gateway;
pub mod invoke;
pub mod metrics;
pub mod redrive;
pub mod runtime;
pub mod stack;
pub mod streams;
pub mod template;
