//! How the gateway behaves: API Gateway's limits and timeouts, which function serves which
//! route, the Management API faults tests can inject, and the counters it keeps. Kept apart
//! from the code that uses them so that every part of the gateway reads one definition.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use super::demo::DemoApp;
use crate::metrics::MetricsPage;

/// API Gateway's largest client frame.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's largest message (client or Management API).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Frames queued for one connection at most (see [`GatewayConfig::max_queued_frames`]).
pub const MAX_QUEUED_FRAMES: usize = 1_000;

/// Management API fault injection, for tests of the fan-out's retries (all off by default).
#[derive(Clone, Debug, Default)]
pub struct ManagementFaults {
    /// Probability that a post answers 410 Gone although the connection exists.
    pub gone_rate: f64,
    /// Probability that a post answers 429 LimitExceededException.
    pub throttle_rate: f64,
    /// Probability that a post answers 500.
    pub error_rate: f64,
    /// Probability that a post of a `delta` frame answers 200 but is never written to the
    /// socket: a Management API that loses what it acknowledged, which no retry can
    /// notice. Only `delta` frames, so that the loss is the fan-out's (and catch-up's)
    /// alone: a dropped reply would only be a timeout the client retries.
    pub drop_rate: f64,
    /// Added to every post, to model the Management API's latency in AWS.
    pub latency: Duration,
}

/// How the gateway behaves.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Stage name used when the client connects to `/`.
    pub default_stage: String,
    /// Close a connection with no traffic for this long (API Gateway: 10 minutes).
    pub idle_timeout: Duration,
    /// Close a connection this long after it opened (API Gateway: 2 hours).
    pub max_connection_duration: Duration,
    /// Frames waiting to be written to one connection at most. A post beyond them is
    /// answered 429 `LimitExceededException`, the throttling a client that reads too slowly
    /// meets in AWS, which senders already retry with backoff (rather than 410, which
    /// would make them forget a connection that is still there).
    pub max_queued_frames: usize,
    /// Management API faults.
    pub faults: ManagementFaults,
    /// The demo app served under `/demo/`; `None`: those paths are not served.
    pub demo: Option<DemoApp>,
    /// The page served at `GET /metrics`; `None`: `/metrics` is a stage like any other.
    pub metrics: Option<MetricsPage>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            default_stage: "local".into(),
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7200),
            max_queued_frames: MAX_QUEUED_FRAMES,
            faults: ManagementFaults::default(),
            demo: None,
            metrics: None,
        }
    }
}

/// What the gateway runs: route key → function, and the authorizer.
pub struct Routes<F> {
    /// `RouteSelectionExpression`, e.g. `$request.body.action`.
    pub selection_expression: String,
    /// Route key (`$connect`, `$disconnect`, `$default`, custom keys) → function.
    pub routes: BTreeMap<String, F>,
    /// The `$connect` authorizer.
    pub authorizer: Option<F>,
    /// Identity sources the handshake must carry before the authorizer is invoked.
    pub identity_sources: Vec<String>,
    /// The function behind the HTTP API (the template's function with a
    /// `FunctionUrlConfig`), served under `/v1/` on the same port.
    pub http: Option<F>,
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Handshakes refused.
    pub refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Management API posts delivered.
    pub posts: AtomicU64,
    /// Management API posts acknowledged and dropped (`ManagementFaults::drop_rate`).
    pub dropped_posts: AtomicU64,
    /// Connections closed whose `$disconnect` has run (succeeded or not).
    pub disconnected: AtomicU64,
}
