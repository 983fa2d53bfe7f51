//! What a run is asked to do: [`LoadConfig`] with its defaults, where tokens come from,
//! the hard bounds every setting is checked against, and the error a run that cannot
//! start returns. Kept apart from the run so a caller (the CLI, the tests, the bench)
//! sees the whole surface in one place.

use std::fmt;
use std::time::Duration;

/// Most connections one run may open.
pub const MAX_CONNECTIONS: usize = 50_000;
/// Most channels one run may use.
pub const MAX_CHANNELS: usize = 10_000;
/// Most publishes one run may send.
pub const MAX_PUBLISHES: u64 = 2_000_000;
/// Highest aggregate publish rate, per second.
pub const MAX_RATE: f64 = 100_000.0;
/// Largest `payload_bytes` (the server's `data` limit is 24 KiB).
pub const MAX_PAYLOAD_BYTES: usize = 20_000;
/// Longest a run may be allowed to last.
pub const MAX_RUN_TIME: Duration = Duration::from_secs(6 * 3600);
/// Most subscriptions per connection (the server's `MAX_SUBSCRIPTIONS` default).
pub const MAX_CHANNELS_PER_CONNECTION: usize = 100;

/// Where the clients' tokens come from.
#[derive(Clone)]
pub enum TokenSource {
    /// One token for every client (it needs `subscribe`, `history` and, for publishers,
    /// `publish` on the run's channels).
    Fixed(String),
    /// An HS256 secret: each client gets its own token (`sub` = `load-<run>-<n>`) with every
    /// capability on `*`.
    Secret(String),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens and secrets are never printed.
        match self {
            TokenSource::Fixed(_) => f.write_str("Fixed(<redacted>)"),
            TokenSource::Secret(_) => f.write_str("Secret(<redacted>)"),
        }
    }
}

/// What a run does. [`LoadConfig::new`] gives the defaults; every count and time is
/// bounded by [`run`]'s validation.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// The WebSocket URL (`ws://127.0.0.1:3001/local`, `wss://.../prod`); the token is
    /// added as the `token` query parameter.
    pub url: String,
    /// Where tokens come from.
    pub token: TokenSource,
    /// Connections (simulated clients).
    pub connections: usize,
    /// Channels, named `<channel_prefix>:<run>:<n>`.
    pub channels: usize,
    /// Channels each connection subscribes to (connection `i` takes `i*c .. i*c + c` mod K).
    pub channels_per_connection: usize,
    /// How many of the connections subscribe (connections `0..subscribers`; the others
    /// only publish, so a run can offer one channel's publishes without multiplying its
    /// deliveries); `None`: all of them.
    pub subscribers: Option<usize>,
    /// How many of the connections also publish (connections `0..publishers`).
    pub publishers: usize,
    /// Aggregate publish rate, per second (keep it under the server's per-connection
    /// limit, 20/s by default, times `publishers`).
    pub rate_per_second: f64,
    /// Publishes in all; the publish phase ends when they are sent (or at `duration`).
    pub publishes: Option<u64>,
    /// How long to publish; with `publishes` unset, `rate × duration` publishes are sent.
    pub duration: Option<Duration>,
    /// Approximate serialised size of each publish's `data`.
    pub payload_bytes: usize,
    /// Fraction of the clients (0 to 1) that disconnect and reconnect during publishing.
    pub churn: f64,
    /// How many times each churning client disconnects.
    pub churn_rounds: u32,
    /// Shortest time a churning client stays away.
    pub away_min: Duration,
    /// Longest time a churning client stays away.
    pub away_max: Duration,
    /// How long the publish phase may last when `publishes` bounds it (`None`: twice the
    /// expected time plus 30 s); with `duration`, the phase lasts `duration`.
    pub publish_timeout: Option<Duration>,
    /// How long the settle phase waits for every client to reach the head.
    pub settle_timeout: Duration,
    /// How long the drain phase waits for outstanding acks.
    pub drain_timeout: Duration,
    /// How long the connect phase waits for every client to be subscribed.
    pub connect_timeout: Duration,
    /// Handshakes in progress at once.
    pub connect_concurrency: usize,
    /// How long a request (publish, subscribe, history) waits for its reply before it is
    /// sent again.
    pub request_timeout: Duration,
    /// How long a gap may stay unfilled before the client asks `history`.
    pub gap_timeout: Duration,
    /// After this many subscribes with `since` that got no reply, subscribe without
    /// `since` and fill the gap with `history` instead (counted in
    /// `catch_up_fallbacks`); `None`: keep asking with `since`.
    pub catch_up_attempts: Option<u32>,
    /// Subscribe with `"coalesce": true`, so the server may push several deltas of a
    /// channel in one `deltas` frame (the report's `frames_received` / `deltas_pushed`).
    pub coalesce: bool,
    /// Unacknowledged publishes per publisher at most.
    pub publish_window: usize,
    /// The deadline of the whole run; `None`: the sum of the phases' deadlines plus 30 s.
    pub max_run_time: Option<Duration>,
    /// Allow hosts other than loopback (deployed endpoints).
    pub allow_remote: bool,
    /// The first part of the channel names.
    pub channel_prefix: String,
    /// Seed for the choice of churning clients and their times (random when `None`).
    pub seed: Option<u64>,
}

impl LoadConfig {
    /// The defaults: 100 connections, 10 channels (one each), 5 publishers, 50 publishes/s,
    /// 1000 publishes of 64 bytes, 10 % churn, 30 s to settle.
    pub fn new(url: impl Into<String>, token: TokenSource) -> Self {
        Self {
            url: url.into(),
            token,
            connections: 100,
            channels: 10,
            channels_per_connection: 1,
            subscribers: None,
            publishers: 5,
            rate_per_second: 50.0,
            publishes: Some(1000),
            duration: None,
            payload_bytes: 64,
            churn: 0.1,
            churn_rounds: 1,
            away_min: Duration::from_millis(200),
            away_max: Duration::from_millis(1500),
            publish_timeout: None,
            settle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(60),
            connect_concurrency: 64,
            request_timeout: Duration::from_secs(3),
            gap_timeout: Duration::from_millis(500),
            catch_up_attempts: Some(2),
            coalesce: false,
            publish_window: 16,
            max_run_time: None,
            allow_remote: false,
            channel_prefix: "load".into(),
            seed: None,
        }
    }
}

/// A run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting is out of range or inconsistent.
    #[error("invalid load configuration: {0}")]
    InvalidConfig(String),
    /// The URL does not parse or is not `ws://`/`wss://`.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The host is not loopback and `allow_remote` is off.
    #[error(
        "{host} is not a loopback address; pass --allow-remote (LoadConfig::allow_remote) to load a deployed endpoint"
    )]
    RemoteNotAllowed {
        /// The host.
        host: String,
    },
}
