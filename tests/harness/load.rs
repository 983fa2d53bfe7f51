//! # The load generator
//!
//! Opens N WebSocket connections to a deltacast endpoint (the local stack or a deployed
//! one), subscribes them across K channels, publishes at an aggregate rate from P of them,
//! disconnects and reconnects a fraction of them while publishes keep flowing, and at the
//! end checks, per client and channel, that every seq from the client's starting point to
//! the channel's final head was applied exactly once and in order. [`run`] returns a
//! [`LoadReport`]; the `deltacast-load` binary (`tests/load/main.rs`) is a thin CLI over it.
//!
//! ## Phases
//! 1. **Connecting**: every client connects (at most `connect_concurrency` handshakes at
//!    once, retrying refused or failed handshakes with backoff) and subscribes to its
//!    channels. Publishing starts when all are subscribed, or at `connect_timeout`.
//! 2. **Publishing**: publisher `p` of `P` sends the publishes whose global index `g` is
//!    `p, p + P, p + 2P, ...`, to channel `g mod K`, the `g`-th one due `g / rate` seconds
//!    after the start. Churning clients close their socket at random points of this
//!    phase, stay away a random while and come back.
//! 3. **Draining**: no new publishes; publishers keep retrying until every publish is acked.
//! 4. **Settling**: the final head of each channel is the highest acked seq; every client
//!    must reach it (asking `history` for what is missing) within `settle_timeout`.
//! 5. **Stopping**: clients close and hand back what they saw; the report is computed.
//!
//! Every phase has a deadline and the whole run has one (`max_run_time`), so a run always
//! ends by itself; a deadline that passes makes the report not ok.
//!
//! ## The client algorithm
//! Each simulated client is one task owning one socket, and behaves as the README tells
//! an app to:
//! - It **subscribes** with no `since` the first time; the `seq` of that first
//!   `subscribed` is its starting point for the channel. Later (after a reconnect) it
//!   subscribes with `since` = the last applied seq and the channel's `epoch`.
//! - Deltas that arrive **before `subscribed`** (catch-up and live ones racing it) are held
//!   in the channel's buffer, not applied.
//! - Deltas are **applied strictly in seq order from the buffer**: a seq at or below the
//!   last applied one, or already buffered, is dropped and counted in
//!   `duplicates_received`.
//! - A **gap** (the client knows of a seq beyond `applied + 1`, from a buffered delta or a
//!   `subscribed`/`history` head, and `applied + 1` has not come for `gap_timeout`) is
//!   filled with `history` from the last applied seq, page after page.
//! - `recovered: false` is counted in `not_recovered` (a failure); the client then fills
//!   what it can through `history`, or starts over if the epoch changed.
//! - A subscribe with `since` that goes unanswered `catch_up_attempts` times in a row is
//!   replaced by one without `since`, and the gap is filled with `history`
//!   (`catch_up_fallbacks`, a warning).
//! - Requests whose reply does not come within `request_timeout` are sent again: replies
//!   travel through the Management API and can be lost, and a function may crash (the
//!   gateway then sends `{"message": "Internal server error", ...}` without a `type`, which
//!   cannot be tied to a request: it is counted, and the reply timeout does the rest).
//!   Reply timeouts double on each retry, so a slow server is not buried in retries.
//! - **Publishers** give every publish a unique id (`<run>.<publisher>.<n>`) and put their
//!   send time and that id in `data`. A publish is retried with the same id on `internal`,
//!   on a missing ack, and after a reconnect, which idempotency makes safe; `rate_limited`
//!   pauses the publisher with a doubling backoff. At most `publish_window` publishes are
//!   unacknowledged at once. (Publishes to one channel race for its next seq, so more
//!   than a couple in flight per channel add retries and latency, not throughput.)
//!
//! ## What is checked
//! - Per client and channel: the applied seqs are exactly `start + 1 ..= head`, each once,
//!   in order (`lost`, `duplicates_after_dedupe`, `out_of_order_applied`).
//! - Across everybody: each `(channel, seq)` carries one message id, whoever saw it (every
//!   delta, history entry and ack is compared against the first sighting), and no message
//!   id was stored under two seqs (`content_mismatches`, `duplicates_stored`); each channel's
//!   head equals the number of distinct publishes acked on it (`unexplained_seqs`).
//! - Latency is measured from the first send of a publish to the first receipt of its
//!   delta by each subscriber that was live at the time (catch-up and history deltas are
//!   not counted). Both ends run in this process, so the clocks agree.
//!
//! ## Costs
//! One task and one socket per client, with small WebSocket buffers (8 KiB reads instead of
//! tungstenite's 128 KiB), no per-delta allocation beyond the parse, a bounded window of
//! unacknowledged publishes, and latencies batched into a few sharded histograms: 10,000
//! connections fit in one process (about 25 KiB each in a debug build; see the ignored
//! test `ten_thousand_connections_in_one_process` in `tests/load_test.rs`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

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

/// How long one WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Histogram shards (clients record into shard `index % SHARDS`).
const SHARDS: usize = 16;
/// Latencies a client collects before recording them into its shard.
const LATENCY_BATCH: usize = 64;
/// Largest `limit` a `history` request asks for (the server allows up to 1000).
const HISTORY_PAGE: u64 = 500;
/// First pause after `rate_limited`; doubled on each one, reset by an ack.
const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(250);
/// Longest pause after `rate_limited`.
const RATE_LIMIT_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Longest wait for a reply, however often a request was sent.
const REPLY_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// How long the `attempt`-th sending of a request waits for its reply: the request
/// timeout, doubled on each retry (a slow server is not helped by more of the same).
fn reply_timeout(base: Duration, attempt: u32) -> Duration {
    (base * (1 << attempt.saturating_sub(1).min(5))).min(REPLY_TIMEOUT_MAX.max(base))
}

// ----- configuration -------------------------------------------------------------------

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

// ----- report ----------------------------------------------------------------------------

/// Latency from a publish's first send to a subscriber's first receipt of its delta.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencyMs {
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
    /// Mean, ms.
    pub mean: f64,
    /// Samples (live deliveries).
    pub count: u64,
    /// The distribution: the latency at each percent from 1 to 100, ms (for plots).
    pub percentiles: Vec<f64>,
}

/// Rates over the publish phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    /// Length of the publish phase, s.
    pub publish_phase_seconds: f64,
    /// Publishes sent per second of the publish phase.
    pub publishes_per_second: f64,
    /// Delta frames received per second of the publish phase (all clients).
    pub deliveries_per_second: f64,
}

/// How long each phase took, s.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseSeconds {
    /// Connecting and subscribing every client.
    pub connect: f64,
    /// Publishing.
    pub publish: f64,
    /// Waiting for the last acks.
    pub drain: f64,
    /// Waiting for every client to reach the head.
    pub settle: f64,
}

/// Most entries in [`LoadReport::behind`].
pub const MAX_BEHIND_LISTED: usize = 20;

/// A client channel that did not reach the head: where it stopped, for diagnosis.
#[derive(Clone, Debug, Serialize)]
pub struct BehindClient {
    /// The client's index.
    pub client: usize,
    /// The channel.
    pub channel: String,
    /// Its starting point.
    pub start: u64,
    /// The last seq it applied.
    pub applied: u64,
    /// The channel's final head.
    pub head: u64,
    /// The highest seq it knew of.
    pub known_head: u64,
    /// Deltas it held, unapplied.
    pub buffered: usize,
    /// Its subscription at the end: idle, pending, live or refused.
    pub subscription: &'static str,
    /// Whether a `history` request was outstanding.
    pub history_pending: bool,
}

/// What a run saw. [`LoadReport::ok`] says whether it passed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// The run's id (in channel names, subs and message ids).
    pub run_id: String,
    /// The endpoint (without a token).
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Clients that connected and subscribed at least once.
    pub connected: usize,
    /// Clients that never managed to connect and subscribe.
    pub connect_failures: usize,
    /// Channels.
    pub channels: usize,
    /// Publishing connections.
    pub publishers: usize,
    /// Publishes planned.
    pub publishes_planned: u64,
    /// Distinct publishes sent (each once, however often it was retried).
    pub publishes_sent: u64,
    /// Publish frames sent, retries included.
    pub publish_attempts: u64,
    /// Distinct publishes acknowledged.
    pub publishes_acked: u64,
    /// Publish failures by error code, plus `timeout` (no ack within the request timeout);
    /// retried ones included.
    pub publish_errors: BTreeMap<String, u64>,
    /// Delta frames received (fan-out and catch-up), duplicates included.
    pub deliveries: u64,
    /// Deltas received in `history` replies.
    pub history_deltas: u64,
    /// `history` requests sent.
    pub history_requests: u64,
    /// Deltas dropped by seq dedupe (already applied or already buffered).
    pub duplicates_received: u64,
    /// Seqs applied more than once after dedupe (must be 0).
    pub duplicates_after_dedupe: u64,
    /// Seqs applied out of order (must be 0).
    pub out_of_order_applied: u64,
    /// Seqs a client should have applied (after its starting point, up to the head) but
    /// never did (must be 0).
    pub lost: u64,
    /// Client channels that did not reach the head.
    pub clients_behind: u64,
    /// The first [`MAX_BEHIND_LISTED`] of them, with their state at the end.
    pub behind: Vec<BehindClient>,
    /// Subscribes answered `recovered: false` (must be 0).
    pub not_recovered: u64,
    /// Resubscribes whose catch-up (`since`) went unanswered `catch_up_attempts` times, so
    /// the client subscribed without `since` and used `history` (a warning: nothing is
    /// lost, but catch-up did not work).
    pub catch_up_fallbacks: u64,
    /// A `(channel, seq)` seen with two different message ids, or a delta whose data
    /// does not carry its own id (must be 0).
    pub content_mismatches: u64,
    /// Message ids stored under two seqs (must be 0).
    pub duplicates_stored: u64,
    /// Seqs beyond what the acked publishes explain, on channels whose publishes were all
    /// acked (must be 0).
    pub unexplained_seqs: u64,
    /// Reconnections after churn.
    pub reconnects: u64,
    /// Connections the server closed, or that failed, unasked.
    pub unexpected_disconnects: u64,
    /// Other errors by kind (handshake statuses, error frames of subscribe and history,
    /// timeouts, "Internal server error" frames, unparseable frames).
    pub errors: BTreeMap<String, u64>,
    /// Latency, publish sent → delta received.
    pub latency_ms: LatencyMs,
    /// Rates over the publish phase.
    pub throughput: Throughput,
    /// Phase durations.
    pub phases: PhaseSeconds,
    /// The whole run, s.
    pub elapsed_seconds: f64,
    /// Whether a phase deadline (or the global one) passed.
    pub timed_out: bool,
    /// Which deadline passed, if one did.
    pub timed_out_in: Option<String>,
}

impl LoadReport {
    /// Nothing lost, nothing applied twice or out of order, every publish acked, every
    /// catch-up recovered, every client connected, content consistent, no deadline missed.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.clients_behind == 0
            && self.duplicates_after_dedupe == 0
            && self.out_of_order_applied == 0
            && self.publishes_acked == self.publishes_sent
            && self.not_recovered == 0
            && self.content_mismatches == 0
            && self.duplicates_stored == 0
            && self.unexplained_seqs == 0
            && self.connect_failures == 0
            && !self.timed_out
    }

    /// What went wrong without failing the run, one line each.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.catch_up_fallbacks > 0 {
            out.push(format!(
                "{} resubscribes got no reply to their catch-up and fell back to history",
                self.catch_up_fallbacks
            ));
        }
        out
    }

    /// Why the report is not ok, one reason per line (empty when it is ok).
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |bad: bool, text: String| {
            if bad {
                out.push(text);
            }
        };
        check(self.lost > 0, format!("{} seqs lost", self.lost));
        check(
            self.clients_behind > 0,
            format!("{} client channels behind the head", self.clients_behind),
        );
        check(
            self.duplicates_after_dedupe > 0,
            format!("{} seqs applied twice", self.duplicates_after_dedupe),
        );
        check(
            self.out_of_order_applied > 0,
            format!("{} seqs applied out of order", self.out_of_order_applied),
        );
        check(
            self.publishes_acked != self.publishes_sent,
            format!(
                "{} of {} publishes never acked",
                self.publishes_sent.saturating_sub(self.publishes_acked),
                self.publishes_sent
            ),
        );
        check(
            self.not_recovered > 0,
            format!("{} subscribes not recovered", self.not_recovered),
        );
        check(
            self.content_mismatches > 0,
            format!("{} content mismatches", self.content_mismatches),
        );
        check(
            self.duplicates_stored > 0,
            format!("{} messages stored under two seqs", self.duplicates_stored),
        );
        check(
            self.unexplained_seqs > 0,
            format!("{} unexplained seqs", self.unexplained_seqs),
        );
        check(
            self.connect_failures > 0,
            format!("{} clients never connected", self.connect_failures),
        );
        check(
            self.timed_out,
            format!(
                "timed out in {}",
                self.timed_out_in.as_deref().unwrap_or("?")
            ),
        );
        out
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.ok() { "OK" } else { "FAILED" };
        writeln!(f, "deltacast-load {} — {verdict}", self.run_id)?;
        writeln!(f, "  endpoint        {}", self.url)?;
        writeln!(
            f,
            "  clients         {} connected of {} ({} never), {} channels, {} publishers",
            self.connected, self.connections, self.connect_failures, self.channels, self.publishers
        )?;
        writeln!(
            f,
            "  publishes       {} sent of {} planned, {} acked, {} attempts; errors: {}",
            self.publishes_sent,
            self.publishes_planned,
            self.publishes_acked,
            self.publish_attempts,
            counts(&self.publish_errors)
        )?;
        writeln!(
            f,
            "  deliveries      {} frames, {} via history ({} requests), {} duplicates dropped",
            self.deliveries, self.history_deltas, self.history_requests, self.duplicates_received
        )?;
        writeln!(
            f,
            "  verification    lost {}, behind {}, applied twice {}, out of order {}, not recovered {}, content mismatches {}, stored twice {}, unexplained seqs {}",
            self.lost,
            self.clients_behind,
            self.duplicates_after_dedupe,
            self.out_of_order_applied,
            self.not_recovered,
            self.content_mismatches,
            self.duplicates_stored,
            self.unexplained_seqs
        )?;
        writeln!(
            f,
            "  churn           {} reconnects, {} unexpected disconnects, {} catch-up fallbacks",
            self.reconnects, self.unexpected_disconnects, self.catch_up_fallbacks
        )?;
        let l = &self.latency_ms;
        writeln!(
            f,
            "  latency         p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms, mean {:.1} ms ({} samples)",
            l.p50, l.p95, l.p99, l.max, l.mean, l.count
        )?;
        let t = &self.throughput;
        writeln!(
            f,
            "  throughput      {:.1} publishes/s, {:.1} deliveries/s over {:.1} s",
            t.publishes_per_second, t.deliveries_per_second, t.publish_phase_seconds
        )?;
        let p = &self.phases;
        writeln!(
            f,
            "  phases          connect {:.1} s, publish {:.1} s, drain {:.1} s, settle {:.1} s; total {:.1} s",
            p.connect, p.publish, p.drain, p.settle, self.elapsed_seconds
        )?;
        writeln!(f, "  other errors    {}", counts(&self.errors))?;
        for b in &self.behind {
            writeln!(
                f,
                "  behind          client {} on {}: applied {} (from {}) of {}, knew of {}, {} buffered, subscription {}{}",
                b.client,
                b.channel,
                b.applied,
                b.start,
                b.head,
                b.known_head,
                b.buffered,
                b.subscription,
                if b.history_pending {
                    ", history pending"
                } else {
                    ""
                }
            )?;
        }
        for warning in self.warnings() {
            writeln!(f, "  WARNING         {warning}")?;
        }
        for failure in self.failures() {
            writeln!(f, "  FAILURE         {failure}")?;
        }
        Ok(())
    }
}

// ----- the plan ------------------------------------------------------------------------

/// A validated configuration with everything derived from it.
struct Plan {
    config: LoadConfig,
    run_id: String,
    /// Publishes to send at most.
    publish_total: u64,
    /// How long publishing is expected to take (for churn times).
    publish_expected: Duration,
    /// The hard end of the publish phase, after its start.
    publish_limit: Duration,
    max_run_time: Duration,
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn check_url(url: &str, allow_remote: bool) -> Result<(), LoadError> {
    let invalid = |reason: &str| LoadError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        _ => return Err(invalid("the scheme must be ws:// or wss://")),
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    if !allow_remote && !is_loopback(host) {
        return Err(LoadError::RemoteNotAllowed {
            host: host.to_owned(),
        });
    }
    if uri.query().is_some_and(|q| q.contains("token=")) {
        return Err(invalid(
            "give the token through LoadConfig::token, not the URL",
        ));
    }
    Ok(())
}

impl Plan {
    fn new(config: LoadConfig) -> Result<Self, LoadError> {
        check_url(&config.url, config.allow_remote)?;
        let invalid = |text: String| Err(LoadError::InvalidConfig(text));
        let c = &config;
        if c.connections == 0 || c.connections > MAX_CONNECTIONS {
            return invalid(format!("connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if c.channels == 0 || c.channels > MAX_CHANNELS {
            return invalid(format!("channels must be 1 to {MAX_CHANNELS}"));
        }
        if c.channels_per_connection == 0
            || c.channels_per_connection > c.channels
            || c.channels_per_connection > MAX_CHANNELS_PER_CONNECTION
        {
            return invalid(format!(
                "channels per connection must be 1 to min(channels, {MAX_CHANNELS_PER_CONNECTION})"
            ));
        }
        if c.publishers == 0 || c.publishers > c.connections {
            return invalid("publishers must be 1 to the number of connections".into());
        }
        if !(c.rate_per_second > 0.0 && c.rate_per_second <= MAX_RATE) {
            return invalid(format!("rate must be above 0 and at most {MAX_RATE}"));
        }
        if c.payload_bytes > MAX_PAYLOAD_BYTES {
            return invalid(format!("payload bytes must be at most {MAX_PAYLOAD_BYTES}"));
        }
        if !(0.0..=1.0).contains(&c.churn) {
            return invalid("churn must be between 0 and 1".into());
        }
        if c.churn > 0.0 && (c.churn_rounds == 0 || c.churn_rounds > 100) {
            return invalid("churn rounds must be 1 to 100".into());
        }
        if c.away_min > c.away_max || c.away_max > Duration::from_secs(600) {
            return invalid("away times must satisfy min <= max <= 600 s".into());
        }
        if c.catch_up_attempts == Some(0) {
            return invalid("catch-up attempts must be at least 1 (None: never fall back)".into());
        }
        if c.connect_concurrency == 0 || c.publish_window == 0 {
            return invalid("connect concurrency and publish window must be at least 1".into());
        }
        for (name, value) in [
            ("settle timeout", c.settle_timeout),
            ("drain timeout", c.drain_timeout),
            ("connect timeout", c.connect_timeout),
            ("request timeout", c.request_timeout),
            ("gap timeout", c.gap_timeout),
        ] {
            if value.is_zero() || value > MAX_RUN_TIME {
                return invalid(format!("{name} must be above 0 and at most 6 h"));
            }
        }
        if c.channel_prefix.is_empty()
            || c.channel_prefix.len() > 64
            || !c
                .channel_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:.@".contains(&b))
        {
            return invalid("the channel prefix must be 1-64 characters of A-Za-z0-9_-:.@".into());
        }
        let by_duration = c
            .duration
            .map(|d| (d.as_secs_f64() * c.rate_per_second).ceil() as u64);
        let publish_total = match (c.publishes, by_duration) {
            (Some(n), Some(m)) => n.min(m),
            (Some(n), None) => n,
            (None, Some(m)) => m,
            (None, None) => return invalid("give publishes, duration or both".into()),
        };
        if publish_total > MAX_PUBLISHES {
            return invalid(format!("at most {MAX_PUBLISHES} publishes per run"));
        }
        if let Some(d) = c.duration
            && (d.is_zero() || d > MAX_RUN_TIME)
        {
            return invalid("duration must be above 0 and at most 6 h".into());
        }
        let publish_expected = Duration::from_secs_f64(publish_total as f64 / c.rate_per_second);
        let publish_limit = match (c.duration, c.publish_timeout) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            // Room for rate limiting and reconnects, but bounded.
            (None, None) => publish_expected * 2 + Duration::from_secs(30),
        };
        if publish_limit.is_zero() {
            return invalid("the publish timeout must be above 0".into());
        }
        if publish_limit > MAX_RUN_TIME {
            return invalid(
                "the publish phase would last over 6 h; lower publishes or raise the rate".into(),
            );
        }
        let max_run_time = c.max_run_time.unwrap_or(
            c.connect_timeout
                + publish_limit
                + c.drain_timeout
                + c.settle_timeout
                + Duration::from_secs(30),
        );
        if max_run_time.is_zero() || max_run_time > MAX_RUN_TIME {
            return invalid("max run time must be above 0 and at most 6 h".into());
        }
        let run_id = format!("{:08x}", rand::random::<u32>());
        Ok(Self {
            config,
            run_id,
            publish_total,
            publish_expected,
            publish_limit,
            max_run_time,
        })
    }

    fn channel_name(&self, index: usize) -> String {
        format!("{}:{}:{index}", self.config.channel_prefix, self.run_id)
    }

    /// How many publishes publisher `p` sends: the global indexes `p, p + P, ...` below
    /// the total.
    fn quota(&self, p: usize) -> u64 {
        let publishers = self.config.publishers as u64;
        let p = p as u64;
        if self.publish_total > p {
            (self.publish_total - p).div_ceil(publishers)
        } else {
            0
        }
    }

    fn url_with_token(&self, client: usize) -> String {
        let token = match &self.config.token {
            TokenSource::Fixed(token) => token.clone(),
            TokenSource::Secret(secret) => deltacast_local::stack::dev_token(
                secret,
                &format!("load-{}-{client}", self.run_id),
                self.max_run_time + Duration::from_secs(600),
            ),
        };
        let separator = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}token={token}", self.config.url)
    }
}

// ----- shared state ----------------------------------------------------------------------

/// Where the run is. Clients keep a copy and hear changes through a `watch` channel.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    Connecting,
    Publishing { start: Instant, end: Instant },
    Draining,
    Settling,
    Stopping,
}

/// What everybody knows about one channel.
struct ChannelTable {
    name: String,
    /// Highest acked seq.
    head: AtomicU64,
    /// Distinct publishes sent to this channel.
    sent: AtomicU64,
    /// Distinct publishes acked on this channel.
    acked: AtomicU64,
    /// Seq → hash of the message id first seen at that seq (0: not seen yet).
    ids: Box<[AtomicU64]>,
}

enum Sighting {
    Consistent,
    Mismatch,
    OutOfRange,
}

impl ChannelTable {
    fn new(name: String, capacity: u64) -> Self {
        Self {
            name,
            head: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ids: (0..=capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that `seq` carries message `hash`; says whether that agrees with what
    /// was seen before.
    fn sight(&self, seq: u64, hash: u64) -> Sighting {
        let Some(slot) = self.ids.get(seq as usize) else {
            return Sighting::OutOfRange;
        };
        match slot.compare_exchange(0, hash, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Sighting::Consistent,
            Err(seen) if seen == hash => Sighting::Consistent,
            Err(_) => Sighting::Mismatch,
        }
    }
}

/// FNV-1a of a message id; never 0 (0 marks an empty slot).
fn id_hash(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1
}

struct Shared {
    plan: Plan,
    channels: Vec<ChannelTable>,
    handshakes: Semaphore,
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Clients with every channel subscribed at least once.
    ready: AtomicUsize,
    /// Clients that gave up (never connected) and exited.
    gave_up: AtomicUsize,
    /// Publishers that have sent their share.
    publishers_done: AtomicUsize,
    sent: AtomicU64,
    acked: AtomicU64,
    /// Publishes refused for good (never to be acked).
    refused: AtomicU64,
    /// Clients at the head of every channel during settling.
    settled: AtomicUsize,
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::random::<f64>())
}

// ----- per-client state ------------------------------------------------------------------

/// Error and event counters a client keeps; summed into the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counter {
    GatewayInternalError,
    UnparseableFrame,
    UnknownFrame,
    SubscribeTimeout,
    SubscribeError,
    HistoryTimeout,
    HistoryError,
    OtherError,
    EpochChanged,
    StrayReply,
    HandshakeServerError,
    HandshakeUnauthorized,
    HandshakeOtherStatus,
    HandshakeIo,
    HandshakeTimeout,
    SubscribeRefused,
    PublishRefused,
}

const COUNTERS: [(Counter, &str); 17] = [
    (
        Counter::GatewayInternalError,
        "internal_server_error_frames",
    ),
    (Counter::UnparseableFrame, "unparseable_frames"),
    (Counter::UnknownFrame, "unknown_frames"),
    (Counter::SubscribeTimeout, "subscribe_timeouts"),
    (Counter::SubscribeError, "subscribe_internal_errors"),
    (Counter::HistoryTimeout, "history_timeouts"),
    (Counter::HistoryError, "history_internal_errors"),
    (Counter::OtherError, "other_error_frames"),
    (Counter::EpochChanged, "epoch_changes"),
    (Counter::StrayReply, "stray_replies"),
    (Counter::HandshakeServerError, "handshake_5xx"),
    (Counter::HandshakeUnauthorized, "handshake_401_403"),
    (Counter::HandshakeOtherStatus, "handshake_other_status"),
    (Counter::HandshakeIo, "handshake_io_errors"),
    (Counter::HandshakeTimeout, "handshake_timeouts"),
    (Counter::SubscribeRefused, "subscribe_refused"),
    (Counter::PublishRefused, "publish_refused"),
];

/// Publish error codes counted separately.
const PUBLISH_CODES: [&str; 8] = [
    "internal",
    "rate_limited",
    "timeout",
    "bad_request",
    "forbidden",
    "too_large",
    "conflict",
    "other",
];

#[derive(Clone, Debug, Default)]
struct ClientStats {
    counters: [u64; COUNTERS.len()],
    publish_errors: [u64; PUBLISH_CODES.len()],
    publishes_sent: u64,
    publish_attempts: u64,
    publishes_acked: u64,
    deliveries: u64,
    deliveries_publishing: u64,
    history_deltas: u64,
    history_requests: u64,
    duplicates_received: u64,
    duplicates_after_dedupe: u64,
    out_of_order_applied: u64,
    not_recovered: u64,
    content_mismatches: u64,
    reconnects: u64,
    unexpected_disconnects: u64,
    catch_up_fallbacks: u64,
}

impl ClientStats {
    fn bump(&mut self, counter: Counter) {
        // COUNTERS lists the variants in declaration order (a unit test checks).
        self.counters[counter as usize] += 1;
    }

    fn publish_error(&mut self, code: &str) {
        let index = PUBLISH_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(PUBLISH_CODES.len() - 1);
        self.publish_errors[index] += 1;
    }

    fn absorb(&mut self, other: &ClientStats) {
        for (a, b) in self.counters.iter_mut().zip(other.counters) {
            *a += b;
        }
        for (a, b) in self.publish_errors.iter_mut().zip(other.publish_errors) {
            *a += b;
        }
        self.publishes_sent += other.publishes_sent;
        self.publish_attempts += other.publish_attempts;
        self.publishes_acked += other.publishes_acked;
        self.deliveries += other.deliveries;
        self.deliveries_publishing += other.deliveries_publishing;
        self.history_deltas += other.history_deltas;
        self.history_requests += other.history_requests;
        self.duplicates_received += other.duplicates_received;
        self.duplicates_after_dedupe += other.duplicates_after_dedupe;
        self.out_of_order_applied += other.out_of_order_applied;
        self.not_recovered += other.not_recovered;
        self.content_mismatches += other.content_mismatches;
        self.reconnects += other.reconnects;
        self.unexpected_disconnects += other.unexpected_disconnects;
        self.catch_up_fallbacks += other.catch_up_fallbacks;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Subscription {
    /// Not asked on this connection yet.
    Idle,
    /// Asked `attempt` times; resend at the deadline.
    Pending { deadline: Instant, attempt: u32 },
    /// `subscribed` received on this connection.
    Live,
    /// Refused for good (`forbidden`, `bad_request`).
    Refused,
}

/// One channel as one client sees it.
struct ChannelState {
    /// Index into [`Shared::channels`].
    table: usize,
    epoch: Option<String>,
    /// The seq of the first `subscribed`: the client's starting point.
    start: Option<u64>,
    /// Last applied seq.
    applied: u64,
    /// Seqs applied (must end as `applied - start`).
    applied_count: u64,
    /// Highest seq the client knows exists.
    known_head: u64,
    /// Received, not yet applied.
    buffer: BTreeSet<u64>,
    subscription: Subscription,
    /// An outstanding `history` request: resend at the deadline.
    history: Option<Instant>,
    /// How often the outstanding `history` request was sent.
    history_attempt: u32,
    /// Since when `applied + 1` has been missing while a later seq is known.
    gap_since: Option<Instant>,
    /// `history` replies in a row that did not fill the gap (each doubles the wait).
    gap_misses: u32,
    /// On this connection, subscribes with `since` went unanswered too often: subscribe
    /// without it and fill the gap with `history`.
    fallback: bool,
}

impl ChannelState {
    fn new(table: usize) -> Self {
        Self {
            table,
            epoch: None,
            start: None,
            applied: 0,
            applied_count: 0,
            known_head: 0,
            buffer: BTreeSet::new(),
            subscription: Subscription::Idle,
            history: None,
            history_attempt: 0,
            gap_since: None,
            gap_misses: 0,
            fallback: false,
        }
    }
}

/// An unacknowledged publish.
struct InFlight {
    /// This publisher's publish number.
    number: u64,
    table: usize,
    /// The frame, sent again as is on a retry.
    frame: String,
    /// When to send it (again).
    resend_at: Instant,
    /// Whether it is on the wire (so `resend_at` is its ack timeout).
    awaiting: bool,
    attempts: u32,
}

struct Publisher {
    /// This publisher's ordinal, 0..P.
    ordinal: usize,
    quota: u64,
    next: u64,
    in_flight: Vec<InFlight>,
    paused_until: Option<Instant>,
    backoff: Duration,
    done: bool,
}

/// What a client hands back at the end.
struct ClientOutcome {
    index: usize,
    stats: ClientStats,
    channels: Vec<ChannelOutcome>,
    subscribed: bool,
}

/// One channel of one client at the end.
struct ChannelOutcome {
    table: usize,
    start: Option<u64>,
    applied: u64,
    applied_count: u64,
    known_head: u64,
    buffered: usize,
    subscription: &'static str,
    history_pending: bool,
}

/// How a connection ended.
enum SessionEnd {
    Churn,
    Closed,
    Stop,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One frame from the server; borrowed where the text allows it.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    recovered: Option<bool>,
    #[serde(default)]
    more: Option<bool>,
    #[serde(borrow, default)]
    data: Option<Payload<'a>>,
    #[serde(borrow, default)]
    deltas: Option<Vec<Frame<'a>>>,
}

/// The `data` this generator publishes (other fields, the padding, are skipped).
#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    tag: Option<Cow<'a, str>>,
    #[serde(default)]
    t: Option<u64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Via {
    Push,
    History,
}

struct Client {
    index: usize,
    shared: Arc<Shared>,
    url: String,
    phase: Phase,
    phase_rx: watch::Receiver<Phase>,
    channels: Vec<ChannelState>,
    publisher: Option<Box<Publisher>>,
    /// Churn times, as offsets into the publish phase, soonest last.
    churn: Vec<Duration>,
    stats: ClientStats,
    latencies: Vec<u64>,
    outbox: Vec<String>,
    ready: bool,
    settled: bool,
    subscribed_once: bool,
}

impl Client {
    fn config(&self) -> &LoadConfig {
        &self.shared.plan.config
    }

    async fn run(mut self) -> ClientOutcome {
        let connect_deadline = Instant::now() + self.config().connect_timeout;
        let mut connected_before = false;
        let mut churned = false;
        loop {
            if self.phase == Phase::Stopping {
                break;
            }
            // The first connection must succeed within the connect phase; later ones
            // keep trying until the run stops.
            let deadline = if connected_before {
                Instant::now() + self.shared.plan.max_run_time
            } else {
                connect_deadline
            };
            let Some(mut socket) = self.connect(deadline).await else {
                break;
            };
            if churned {
                self.stats.reconnects += 1;
                churned = false;
            }
            connected_before = true;
            let end = self.session(&mut socket).await;
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            drop(socket);
            match end {
                SessionEnd::Stop => break,
                SessionEnd::Churn => {
                    churned = true;
                    let (min, max) = (self.config().away_min, self.config().away_max);
                    let away = if max > min {
                        min + (max - min).mul_f64(rand::random::<f64>())
                    } else {
                        min
                    };
                    if !self.pause(away).await {
                        break;
                    }
                }
                SessionEnd::Closed => {
                    self.stats.unexpected_disconnects += 1;
                    if !self.pause(jitter(Duration::from_millis(200))).await {
                        break;
                    }
                }
            }
        }
        if !self.subscribed_once {
            self.shared.gave_up.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = self.publisher.as_deref_mut()
            && !p.done
        {
            p.done = true;
            self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        self.flush_latencies();
        ClientOutcome {
            index: self.index,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelOutcome {
                    table: c.table,
                    start: c.start,
                    applied: c.applied,
                    applied_count: c.applied_count,
                    known_head: c.known_head,
                    buffered: c.buffer.len(),
                    subscription: match c.subscription {
                        Subscription::Idle => "idle",
                        Subscription::Pending { .. } => "pending",
                        Subscription::Live => "live",
                        Subscription::Refused => "refused",
                    },
                    history_pending: c.history.is_some(),
                })
                .collect(),
            subscribed: self.subscribed_once,
            stats: self.stats,
        }
    }

    /// Follows phase changes.
    fn on_phase(&mut self, phase: Phase) {
        self.phase = phase;
        if phase == Phase::Settling {
            let now = Instant::now();
            for c in &mut self.channels {
                let head = self.shared.channels[c.table].head.load(Ordering::Relaxed);
                c.known_head = c.known_head.max(head);
            }
            for i in 0..self.channels.len() {
                self.update_gap(i, now);
            }
            self.check_settled();
        }
    }

    /// Waits `duration` unless the run stops first; returns false if it did.
    async fn pause(&mut self, duration: Duration) -> bool {
        let sleep = tokio::time::sleep(duration);
        tokio::pin!(sleep);
        loop {
            if self.phase == Phase::Stopping {
                return false;
            }
            tokio::select! {
                _ = &mut sleep => return true,
                changed = self.phase_rx.changed() => {
                    let phase = if changed.is_ok() { *self.phase_rx.borrow_and_update() } else { Phase::Stopping };
                    self.on_phase(phase);
                }
            }
        }
    }

    /// Opens a connection, retrying with backoff until `deadline`.
    async fn connect(&mut self, deadline: Instant) -> Option<Socket> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.phase == Phase::Stopping || Instant::now() >= deadline {
                return None;
            }
            let attempt = {
                let _permit = self.shared.handshakes.acquire().await.ok()?;
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0)
                    .max_message_size(Some(1024 * 1024))
                    .max_frame_size(Some(1024 * 1024));
                tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio_tungstenite::connect_async_with_config(
                        self.url.as_str(),
                        Some(config),
                        true,
                    ),
                )
                .await
            };
            match attempt {
                Ok(Ok((socket, _))) => return Some(socket),
                Ok(Err(tungstenite::Error::Http(response))) => {
                    let status = response.status().as_u16();
                    match status {
                        401 | 403 => {
                            // A token problem does not go away by retrying.
                            self.stats.bump(Counter::HandshakeUnauthorized);
                            return None;
                        }
                        500..=599 => self.stats.bump(Counter::HandshakeServerError),
                        _ => self.stats.bump(Counter::HandshakeOtherStatus),
                    }
                }
                Ok(Err(_)) => self.stats.bump(Counter::HandshakeIo),
                Err(_) => self.stats.bump(Counter::HandshakeTimeout),
            }
            if !self.pause(jitter(backoff)).await {
                return None;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Runs one connection until churn, close or stop.
    async fn session(&mut self, socket: &mut Socket) -> SessionEnd {
        let now = Instant::now();
        for i in 0..self.channels.len() {
            let c = &mut self.channels[i];
            c.history = None;
            c.gap_since = None;
            c.fallback = false;
            if c.subscription != Subscription::Refused {
                c.subscription = Subscription::Idle;
                self.subscribe(i, now);
            }
        }
        if let Some(publisher) = &mut self.publisher {
            // Everything unacknowledged goes again on the new connection.
            for f in &mut publisher.in_flight {
                f.awaiting = false;
                f.resend_at = now;
            }
        }
        let sleep = tokio::time::sleep_until(now);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let churn = self.timers(now);
            if !self.outbox.is_empty() {
                for frame in self.outbox.drain(..) {
                    if socket.feed(Message::text(frame)).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                if socket.flush().await.is_err() {
                    return SessionEnd::Closed;
                }
            }
            if self.phase == Phase::Stopping {
                return SessionEnd::Stop;
            }
            if churn {
                return SessionEnd::Churn;
            }
            let wake = self
                .next_wake()
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            sleep.as_mut().reset(wake);
            tokio::select! {
                changed = self.phase_rx.changed() => {
                    let phase = if changed.is_ok() { *self.phase_rx.borrow_and_update() } else { Phase::Stopping };
                    self.on_phase(phase);
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return SessionEnd::Closed,
                    Some(Ok(_)) => {}
                },
                _ = &mut sleep => {}
            }
        }
    }

    fn channel_name(&self, i: usize) -> &str {
        &self.shared.channels[self.channels[i].table].name
    }

    fn subscribe(&mut self, i: usize, now: Instant) {
        let c = &self.channels[i];
        let attempt = match c.subscription {
            Subscription::Refused => return,
            Subscription::Pending { attempt, .. } => attempt + 1,
            _ => 1,
        };
        let deadline = now + reply_timeout(self.config().request_timeout, attempt);
        let fall_back = c.start.is_some()
            && !c.fallback
            && self
                .config()
                .catch_up_attempts
                .is_some_and(|most| attempt > most);
        if fall_back {
            self.stats.catch_up_fallbacks += 1;
            self.channels[i].fallback = true;
        }
        let c = &self.channels[i];
        let name = self.channel_name(i);
        let frame = match (c.start, &c.epoch) {
            (None, _) => format!(r#"{{"action":"subscribe","channel":"{name}","id":"s"}}"#),
            (Some(_), _) if c.fallback => {
                format!(r#"{{"action":"subscribe","channel":"{name}","id":"s"}}"#)
            }
            (Some(_), Some(epoch)) => format!(
                r#"{{"action":"subscribe","channel":"{name}","since":{},"epoch":{},"id":"s"}}"#,
                c.applied,
                serde_json::Value::from(epoch.as_str())
            ),
            (Some(_), None) => format!(
                r#"{{"action":"subscribe","channel":"{name}","since":{},"id":"s"}}"#,
                c.applied
            ),
        };
        self.outbox.push(frame);
        self.channels[i].subscription = Subscription::Pending { deadline, attempt };
    }

    /// Asks `history` from the last applied seq; `retry` when the previous ask got no
    /// reply.
    fn ask_history(&mut self, i: usize, now: Instant, retry: bool) {
        let c = &self.channels[i];
        let attempt = if retry { c.history_attempt + 1 } else { 1 };
        let limit = c
            .known_head
            .saturating_sub(c.applied)
            .clamp(1, HISTORY_PAGE);
        let frame = format!(
            r#"{{"action":"history","channel":"{}","since":{},"limit":{limit},"id":"h"}}"#,
            self.channel_name(i),
            c.applied
        );
        self.outbox.push(frame);
        self.stats.history_requests += 1;
        let timeout = reply_timeout(self.config().request_timeout, attempt);
        let c = &mut self.channels[i];
        c.history = Some(now + timeout);
        c.history_attempt = attempt;
    }

    /// Does what is due; returns true when it is time to churn.
    fn timers(&mut self, now: Instant) -> bool {
        self.publish_timers(now);
        for i in 0..self.channels.len() {
            let c = &self.channels[i];
            match c.subscription {
                Subscription::Pending { deadline, .. } if deadline <= now => {
                    self.stats.bump(Counter::SubscribeTimeout);
                    self.subscribe(i, now);
                }
                Subscription::Live => {
                    if c.history.is_some_and(|d| d <= now) {
                        self.stats.bump(Counter::HistoryTimeout);
                        self.ask_history(i, now, true);
                    } else if c.history.is_none()
                        && c.gap_since
                            .is_some_and(|since| since + self.gap_wait(i) <= now)
                    {
                        self.ask_history(i, now, false);
                    }
                }
                _ => {}
            }
        }
        if let Phase::Publishing { start, end } = self.phase {
            while let Some(offset) = self.churn.last() {
                let at = start + *offset;
                if at > end {
                    self.churn.clear();
                } else if at <= now {
                    self.churn.pop();
                    return true;
                } else {
                    break;
                }
            }
        }
        false
    }

    fn publish_timers(&mut self, now: Instant) {
        let Some(publisher) = self.publisher.as_deref_mut() else {
            return;
        };
        if matches!(self.phase, Phase::Connecting | Phase::Stopping) {
            return;
        }
        if !matches!(self.phase, Phase::Publishing { .. }) && !publisher.done {
            // Publishing is over: nothing new from here on, only retries.
            publisher.done = true;
            self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        if publisher.paused_until.is_some_and(|until| until > now) {
            return;
        }
        publisher.paused_until = None;
        let request_timeout = self.shared.plan.config.request_timeout;
        for f in &mut publisher.in_flight {
            if f.resend_at <= now {
                if f.awaiting {
                    self.stats.publish_error("timeout");
                }
                f.awaiting = true;
                f.attempts += 1;
                f.resend_at = now + reply_timeout(request_timeout, f.attempts);
                self.stats.publish_attempts += 1;
                self.outbox.push(f.frame.clone());
            }
        }
        let Phase::Publishing { start, end } = self.phase else {
            return;
        };
        let plan = &self.shared.plan;
        let publishers = plan.config.publishers as u64;
        while !publisher.done {
            if publisher.next >= publisher.quota || now >= end {
                publisher.done = true;
                self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if publisher.in_flight.len() >= plan.config.publish_window {
                break;
            }
            let global = publisher.ordinal as u64 + publisher.next * publishers;
            let due = start + Duration::from_secs_f64(global as f64 / plan.config.rate_per_second);
            if due > now {
                break;
            }
            let table = (global % plan.config.channels as u64) as usize;
            let id = format!("{}.{}.{}", plan.run_id, publisher.ordinal, publisher.next);
            // `data` is padded to about payload_bytes once serialised.
            let mut data = format!(r#"{{"tag":"{id}","t":{},"pad":""#, unix_micros());
            let pad = plan.config.payload_bytes.saturating_sub(data.len() + 2);
            data.extend(std::iter::repeat_n('x', pad));
            data.push_str("\"}");
            let frame = format!(
                r#"{{"action":"publish","channel":"{}","id":"{id}","data":{data}}}"#,
                self.shared.channels[table].name,
            );
            self.outbox.push(frame.clone());
            publisher.in_flight.push(InFlight {
                number: publisher.next,
                table,
                frame,
                resend_at: now + request_timeout,
                awaiting: true,
                attempts: 1,
            });
            publisher.next += 1;
            self.stats.publishes_sent += 1;
            self.stats.publish_attempts += 1;
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
            self.shared.channels[table]
                .sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next moment something is due.
    fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some(p) = self.publisher.as_deref()
            && !matches!(self.phase, Phase::Connecting | Phase::Stopping)
        {
            let floor = p.paused_until;
            let after_pause = |t: Instant| floor.map_or(t, |f| f.max(t));
            for f in &p.in_flight {
                at(after_pause(f.resend_at));
            }
            if let Phase::Publishing { start, end } = self.phase
                && !p.done
                && p.in_flight.len() < self.config().publish_window
            {
                let global = p.ordinal as u64 + p.next * self.config().publishers as u64;
                let due =
                    start + Duration::from_secs_f64(global as f64 / self.config().rate_per_second);
                at(after_pause(due.min(end)));
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            match c.subscription {
                Subscription::Pending { deadline, .. } => at(deadline),
                Subscription::Live => match c.history {
                    Some(deadline) => at(deadline),
                    None => {
                        if let Some(since) = c.gap_since {
                            at(since + self.gap_wait(i));
                        }
                    }
                },
                _ => {}
            }
        }
        if let (Phase::Publishing { start, .. }, Some(offset)) = (self.phase, self.churn.last()) {
            at(start + *offset);
        }
        wake
    }

    /// How long a gap may stay open before `history` is asked: `gap_timeout`, doubled for
    /// each `history` reply in a row that did not fill it (at most 32 times, 10 s).
    fn gap_wait(&self, i: usize) -> Duration {
        let base = self.config().gap_timeout;
        (base * (1 << self.channels[i].gap_misses.min(5))).min(Duration::from_secs(10).max(base))
    }

    fn find_channel(&self, name: &str) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| self.shared.channels[c.table].name == name)
    }

    fn on_frame(&mut self, text: &str) {
        let frame: Frame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                self.stats.bump(Counter::UnparseableFrame);
                return;
            }
        };
        let now = Instant::now();
        match frame.kind.as_deref() {
            Some("delta") => {
                match frame
                    .channel
                    .as_deref()
                    .and_then(|name| self.find_channel(name))
                {
                    Some(i) => self.on_delta(i, &frame, Via::Push, now),
                    None => self.stats.bump(Counter::StrayReply),
                }
            }
            Some("subscribed") => self.on_subscribed(&frame, now),
            Some("history") => self.on_history(&frame, now),
            Some("ack") => self.on_ack(&frame),
            Some("error") => self.on_error(&frame, now),
            Some("pong" | "unsubscribed") => {}
            Some(_) => self.stats.bump(Counter::UnknownFrame),
            None if frame.message.as_deref() == Some("Internal server error") => {
                // A route invocation crashed or timed out: some request of ours will get
                // no reply, and there is no telling which. Its reply timeout sends it
                // again; bringing every retry forward instead only adds load when the
                // server is slow (the usual reason for this frame), and a retry that
                // races its original spins on the publish claim.
                self.stats.bump(Counter::GatewayInternalError);
            }
            None => self.stats.bump(Counter::UnknownFrame),
        }
    }

    fn on_delta(&mut self, i: usize, d: &Frame<'_>, via: Via, now: Instant) {
        let Some(seq) = d.seq else {
            self.stats.bump(Counter::UnknownFrame);
            return;
        };
        let id = d.id.as_deref().unwrap_or("");
        let table = &self.shared.channels[self.channels[i].table];
        match table.sight(seq, id_hash(id)) {
            Sighting::Consistent => {}
            Sighting::Mismatch | Sighting::OutOfRange => self.stats.content_mismatches += 1,
        }
        let payload = d.data.as_ref();
        if payload.and_then(|p| p.tag.as_deref()) != Some(id) {
            self.stats.content_mismatches += 1;
        }
        match via {
            Via::Push => {
                self.stats.deliveries += 1;
                if matches!(self.phase, Phase::Publishing { .. }) {
                    self.stats.deliveries_publishing += 1;
                }
            }
            Via::History => self.stats.history_deltas += 1,
        }
        let c = &mut self.channels[i];
        match (&c.epoch, d.epoch.as_deref()) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                // Not this epoch's seq: it cannot be ordered with ours.
                self.stats.bump(Counter::EpochChanged);
                return;
            }
            (None, Some(theirs)) => c.epoch = Some(theirs.to_owned()),
            _ => {}
        }
        let fresh = if c.start.is_some() && seq <= c.applied {
            false
        } else {
            c.buffer.insert(seq)
        };
        if !fresh {
            self.stats.duplicates_received += 1;
            return;
        }
        c.known_head = c.known_head.max(seq);
        if via == Via::Push
            && c.subscription == Subscription::Live
            && let Some(sent) = payload.and_then(|p| p.t)
        {
            self.latencies
                .push(unix_micros().saturating_sub(sent).max(1));
            if self.latencies.len() >= LATENCY_BATCH {
                self.flush_latencies();
            }
        }
        if self.channels[i].subscription == Subscription::Live {
            self.apply_ready(i, now);
        }
    }

    /// Applies buffered deltas in seq order, as far as they go without a gap.
    fn apply_ready(&mut self, i: usize, now: Instant) {
        let c = &mut self.channels[i];
        while let Some(&first) = c.buffer.first() {
            if first > c.applied + 1 {
                break;
            }
            c.buffer.pop_first();
            // The checks of what "applying" did; the loop above should make them hold.
            if first <= c.applied {
                self.stats.duplicates_after_dedupe += 1;
                continue;
            }
            if first != c.applied + 1 {
                self.stats.out_of_order_applied += 1;
            }
            c.applied = first;
            c.applied_count += 1;
        }
        self.update_gap(i, now);
        if self.phase == Phase::Settling {
            self.check_settled();
        }
    }

    fn update_gap(&mut self, i: usize, now: Instant) {
        let c = &mut self.channels[i];
        if c.subscription == Subscription::Live && c.applied < c.known_head {
            c.gap_since.get_or_insert(now);
        } else {
            c.gap_since = None;
        }
    }

    /// Every channel subscribed at least once (or refused for good): the client is ready.
    fn check_ready(&mut self) {
        if self.ready {
            return;
        }
        let subscribed = self.channels.iter().filter(|c| c.start.is_some()).count();
        let refused = self
            .channels
            .iter()
            .filter(|c| c.subscription == Subscription::Refused)
            .count();
        if subscribed + refused == self.channels.len() {
            self.ready = true;
            self.subscribed_once = subscribed > 0;
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn check_settled(&mut self) {
        if self.settled || self.phase != Phase::Settling {
            return;
        }
        let at_head = self.channels.iter().all(|c| {
            c.subscription == Subscription::Refused
                || (c.start.is_some()
                    && c.applied >= self.shared.channels[c.table].head.load(Ordering::Relaxed))
        });
        if at_head {
            self.settled = true;
            self.shared.settled.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_subscribed(&mut self, f: &Frame<'_>, now: Instant) {
        let (Some(i), Some(seq)) = (
            f.channel.as_deref().and_then(|n| self.find_channel(n)),
            f.seq,
        ) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let c = &mut self.channels[i];
        if !matches!(c.subscription, Subscription::Pending { .. }) {
            // The reply to a subscribe that was sent again; the first one counted.
            self.stats.bump(Counter::StrayReply);
            return;
        }
        c.subscription = Subscription::Live;
        let epoch = f.epoch.as_deref();
        match c.start {
            None => {
                // The starting point: what came before it is not this client's to apply.
                c.start = Some(seq);
                c.applied = seq;
                c.epoch = epoch.map(str::to_owned);
                while c.buffer.first().is_some_and(|s| *s <= seq) {
                    c.buffer.pop_first();
                }
            }
            Some(_) => {
                if f.recovered == Some(false) {
                    self.stats.not_recovered += 1;
                }
                if let (Some(ours), Some(theirs)) = (&c.epoch, epoch)
                    && ours != theirs
                {
                    // History started over: nothing of ours can be caught up; start again
                    // from the new head (the report already fails on `not_recovered`).
                    self.stats.bump(Counter::EpochChanged);
                    c.epoch = Some(theirs.to_owned());
                    c.start = Some(seq);
                    c.applied = seq;
                    c.applied_count = 0;
                    c.known_head = seq;
                    c.buffer.clear();
                } else if c.epoch.is_none() {
                    c.epoch = epoch.map(str::to_owned);
                }
            }
        }
        c.known_head = c.known_head.max(seq);
        self.check_ready();
        self.apply_ready(i, now);
    }

    fn on_history(&mut self, f: &Frame<'_>, now: Instant) {
        let Some(i) = f.channel.as_deref().and_then(|n| self.find_channel(n)) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        if self.channels[i].history.take().is_none() {
            self.stats.bump(Counter::StrayReply);
        }
        if let Some(head) = f.seq {
            let c = &mut self.channels[i];
            if f.epoch
                .as_deref()
                .is_none_or(|e| c.epoch.as_deref() == Some(e))
            {
                c.known_head = c.known_head.max(head);
            }
        }
        let before = self.channels[i].applied;
        for delta in f.deltas.iter().flatten() {
            self.on_delta(i, delta, Via::History, now);
        }
        self.apply_ready(i, now);
        let c = &mut self.channels[i];
        if c.applied > before {
            c.gap_misses = 0;
        } else {
            c.gap_misses = c.gap_misses.saturating_add(1);
        }
        if c.subscription == Subscription::Live && c.applied < c.known_head {
            if f.more == Some(true) {
                self.ask_history(i, now, false);
            } else {
                // Still behind: what is missing is on its way; ask again after a while.
                c.gap_since = Some(now);
            }
        }
    }

    fn on_ack(&mut self, f: &Frame<'_>) {
        let (Some(id), Some(seq)) = (f.id.as_deref(), f.seq) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let Some(number) = self.publish_number(id) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let Some(p) = self.publisher.as_deref_mut() else {
            return;
        };
        let hash = id_hash(id);
        match p.in_flight.iter().position(|f| f.number == number) {
            Some(index) => {
                let f = p.in_flight.swap_remove(index);
                p.backoff = RATE_LIMIT_BACKOFF;
                let table = &self.shared.channels[f.table];
                if !matches!(table.sight(seq, hash), Sighting::Consistent) {
                    self.stats.content_mismatches += 1;
                }
                table.head.fetch_max(seq, Ordering::Relaxed);
                table.acked.fetch_add(1, Ordering::Relaxed);
                self.stats.publishes_acked += 1;
                self.shared.acked.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // A late ack for a publish sent twice: it must name the same seq.
                if let Some(table) = f
                    .channel
                    .as_deref()
                    .and_then(|n| self.shared.channels.iter().find(|t| t.name == n))
                    && !matches!(table.sight(seq, hash), Sighting::Consistent)
                {
                    self.stats.content_mismatches += 1;
                }
            }
        }
    }

    /// `<run>.<publisher>.<n>` → n, for this client's own publishes.
    fn publish_number(&self, id: &str) -> Option<u64> {
        let p = self.publisher.as_deref()?;
        let mut parts = id.split('.');
        let (run, ordinal, number) = (parts.next()?, parts.next()?, parts.next()?);
        (run == self.shared.plan.run_id && ordinal.parse::<usize>().ok()? == p.ordinal)
            .then(|| number.parse().ok())
            .flatten()
    }

    fn on_error(&mut self, f: &Frame<'_>, now: Instant) {
        let code = f.code.as_deref().unwrap_or("other");
        let id = f.id.as_deref().unwrap_or("");
        if let Some(number) = self.publish_number(id) {
            self.stats.publish_error(code);
            let Some(p) = self.publisher.as_deref_mut() else {
                return;
            };
            let Some(index) = p.in_flight.iter().position(|f| f.number == number) else {
                return;
            };
            match code {
                "rate_limited" => {
                    let pause = jitter(p.backoff);
                    p.backoff = (p.backoff * 2).min(RATE_LIMIT_BACKOFF_MAX);
                    p.paused_until = Some(now + pause);
                    let f = &mut p.in_flight[index];
                    f.awaiting = false;
                    f.resend_at = now + pause;
                }
                "internal" => {
                    let f = &mut p.in_flight[index];
                    let base = Duration::from_millis(100) * (1 << f.attempts.min(4));
                    f.awaiting = false;
                    f.resend_at = now + jitter(base.min(Duration::from_secs(2)));
                }
                _ => {
                    // Refused for good: it stays unacknowledged, and the report says so.
                    p.in_flight.swap_remove(index);
                    self.stats.bump(Counter::PublishRefused);
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let channel = f.channel.as_deref().and_then(|n| self.find_channel(n));
        match (id, channel) {
            ("s", Some(i)) => {
                if code == "internal" {
                    self.stats.bump(Counter::SubscribeError);
                    if let Subscription::Pending { deadline, .. } =
                        &mut self.channels[i].subscription
                    {
                        *deadline = now + jitter(Duration::from_millis(200));
                    }
                } else {
                    self.stats.bump(Counter::SubscribeRefused);
                    self.channels[i].subscription = Subscription::Refused;
                    self.check_ready();
                }
            }
            ("h", Some(i)) => {
                self.stats.bump(Counter::HistoryError);
                // `internal` or not, try again a little later (a refusal keeps counting).
                self.channels[i].history = Some(now + jitter(Duration::from_millis(500)));
            }
            _ => self.stats.bump(Counter::OtherError),
        }
    }

    fn flush_latencies(&mut self) {
        if self.latencies.is_empty() {
            return;
        }
        let shard = &self.shared.latency[self.index % SHARDS];
        let mut histogram = shard.lock().unwrap_or_else(|e| e.into_inner());
        for value in self.latencies.drain(..) {
            histogram.saturating_record(value);
        }
    }
}

// ----- the run ---------------------------------------------------------------------------

/// Runs the load and reports what happened. Fails only when the configuration is
/// unusable; everything that goes wrong during the run is in the report.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    let plan = Plan::new(config)?;
    let started = Instant::now();
    let global_deadline = started + plan.max_run_time;
    let config = plan.config.clone();
    let mut rng = match config.seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_os_rng(),
    };

    // Channel tables sized for what round-robin publishing can put on one channel, with
    // room to notice extra seqs.
    let per_channel = plan.publish_total.div_ceil(config.channels as u64);
    let capacity = per_channel * 2 + 16;
    let channels = (0..config.channels)
        .map(|i| ChannelTable::new(plan.channel_name(i), capacity))
        .collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let shared = Arc::new(Shared {
        handshakes: Semaphore::new(config.connect_concurrency),
        latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        channels,
        ready: AtomicUsize::new(0),
        gave_up: AtomicUsize::new(0),
        publishers_done: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        settled: AtomicUsize::new(0),
        plan,
    });
    let plan = &shared.plan;

    // Who churns, and when (offsets into the expected publish phase, 10 % to 80 %).
    let churners = (config.churn * config.connections as f64).round() as usize;
    let mut order: Vec<usize> = (0..config.connections).collect();
    order.shuffle(&mut rng);
    let mut churn_plan: Vec<Vec<Duration>> = vec![Vec::new(); config.connections];
    let span = plan.publish_expected.min(plan.publish_limit);
    for &client in order.iter().take(churners) {
        let mut times: Vec<Duration> = (0..config.churn_rounds)
            .map(|_| span.mul_f64(0.1 + 0.7 * rand::Rng::random::<f64>(&mut rng)))
            .collect();
        // Soonest last, so the client pops them.
        times.sort_by(|a, b| b.cmp(a));
        churn_plan[client] = times;
    }

    let mut tasks = Vec::with_capacity(config.connections);
    for (index, churn) in churn_plan.into_iter().enumerate() {
        let channels = (0..config.channels_per_connection)
            .map(|j| {
                ChannelState::new((index * config.channels_per_connection + j) % config.channels)
            })
            .collect();
        let publisher = (index < config.publishers).then(|| {
            Box::new(Publisher {
                ordinal: index,
                quota: plan.quota(index),
                next: 0,
                in_flight: Vec::new(),
                paused_until: None,
                backoff: RATE_LIMIT_BACKOFF,
                done: false,
            })
        });
        let client = Client {
            index,
            url: plan.url_with_token(index),
            shared: shared.clone(),
            phase: Phase::Connecting,
            phase_rx: phase_rx.clone(),
            channels,
            publisher,
            churn,
            stats: ClientStats::default(),
            latencies: Vec::new(),
            outbox: Vec::new(),
            ready: false,
            settled: false,
            subscribed_once: false,
        };
        tasks.push(tokio::spawn(client.run()));
    }
    drop(phase_rx);

    let mut report = LoadReport {
        run_id: plan.run_id.clone(),
        url: config.url.clone(),
        connections: config.connections,
        channels: config.channels,
        publishers: config.publishers,
        publishes_planned: plan.publish_total,
        ..LoadReport::default()
    };
    let mut timed_out: Option<&'static str> = None;
    let n = config.connections;

    // Waits until `done` holds or the deadline (or the global one) passes.
    async fn wait_until(deadline: Instant, global: Instant, done: impl Fn() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || now >= global {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // 1. Connecting.
    let phase_started = Instant::now();
    let connected = wait_until(
        phase_started + config.connect_timeout,
        global_deadline,
        || shared.ready.load(Ordering::Relaxed) + shared.gave_up.load(Ordering::Relaxed) >= n,
    )
    .await;
    if !connected {
        // Publishing starts anyway; the laggards count as failures if they never make it.
        timed_out.get_or_insert("connect");
    }
    report.phases.connect = phase_started.elapsed().as_secs_f64();

    // 2. Publishing.
    let publish_start = Instant::now();
    let publish_end = publish_start + plan.publish_limit;
    let _ = phase_tx.send(Phase::Publishing {
        start: publish_start,
        end: publish_end,
    });
    let all_published = wait_until(
        publish_end + Duration::from_secs(1),
        global_deadline,
        || shared.publishers_done.load(Ordering::Relaxed) >= config.publishers,
    )
    .await;
    let publish_seconds = publish_start.elapsed().as_secs_f64();
    report.phases.publish = publish_seconds;
    if !all_published && config.duration.is_none() {
        timed_out.get_or_insert("publish");
    }

    // 3. Draining.
    let _ = phase_tx.send(Phase::Draining);
    let drain_start = Instant::now();
    let drained = wait_until(drain_start + config.drain_timeout, global_deadline, || {
        shared.acked.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed)
            >= shared.sent.load(Ordering::Relaxed)
    })
    .await;
    if !drained {
        timed_out.get_or_insert("drain");
    }
    report.phases.drain = drain_start.elapsed().as_secs_f64();

    // 4. Settling.
    let _ = phase_tx.send(Phase::Settling);
    let settle_start = Instant::now();
    let settled = wait_until(
        settle_start + config.settle_timeout,
        global_deadline,
        || shared.settled.load(Ordering::Relaxed) + shared.gave_up.load(Ordering::Relaxed) >= n,
    )
    .await;
    if !settled {
        timed_out.get_or_insert("settle");
    }
    report.phases.settle = settle_start.elapsed().as_secs_f64();
    if Instant::now() >= global_deadline {
        timed_out = Some("the global deadline");
    }

    // 5. Stopping.
    let _ = phase_tx.send(Phase::Stopping);
    let mut totals = ClientStats::default();
    let mut lost = 0;
    let mut behind = 0;
    let mut stuck = 0;
    let collect_by = Instant::now() + Duration::from_secs(15);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(collect_by, task).await {
            Ok(Ok(outcome)) => {
                totals.absorb(&outcome.stats);
                if outcome.subscribed {
                    report.connected += 1;
                } else {
                    report.connect_failures += 1;
                }
                for c in outcome.channels {
                    let head = shared.channels[c.table].head.load(Ordering::Relaxed);
                    let Some(start) = c.start else {
                        continue;
                    };
                    if c.applied < head {
                        lost += head - c.applied;
                        behind += 1;
                        if report.behind.len() < MAX_BEHIND_LISTED {
                            report.behind.push(BehindClient {
                                client: outcome.index,
                                channel: shared.channels[c.table].name.clone(),
                                start,
                                applied: c.applied,
                                head,
                                known_head: c.known_head,
                                buffered: c.buffered,
                                subscription: c.subscription,
                                history_pending: c.history_pending,
                            });
                        }
                    }
                    // Applied seqs must be exactly start+1 ..= applied.
                    let expected = c.applied.saturating_sub(start);
                    if c.applied_count != expected {
                        totals.out_of_order_applied += expected.abs_diff(c.applied_count);
                    }
                }
            }
            _ => {
                abort.abort();
                stuck += 1;
                timed_out.get_or_insert("stopping");
            }
        }
    }

    // Across everybody: one id per seq, one seq per id, one acked publish per seq.
    for table in &shared.channels {
        let head = table.head.load(Ordering::Relaxed);
        let mut seen = HashSet::new();
        for slot in table.ids.iter().skip(1) {
            let hash = slot.load(Ordering::Relaxed);
            if hash != 0 && !seen.insert(hash) {
                report.duplicates_stored += 1;
            }
        }
        // Only meaningful when every publish to the channel was acked: an unacked one may
        // be stored below the head.
        let acked = table.acked.load(Ordering::Relaxed);
        if acked == table.sent.load(Ordering::Relaxed) {
            report.unexplained_seqs += head.saturating_sub(acked);
        }
    }

    let mut histogram = new_histogram();
    for shard in &shared.latency {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let _ = histogram.add(&*shard);
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    report.latency_ms = LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p95: ms(histogram.value_at_quantile(0.95)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
        count: histogram.len(),
        percentiles: if histogram.is_empty() {
            Vec::new()
        } else {
            (1..=100)
                .map(|p| ms(histogram.value_at_quantile(f64::from(p) / 100.0)))
                .collect()
        },
    };

    report.publishes_sent = totals.publishes_sent;
    report.publish_attempts = totals.publish_attempts;
    report.publishes_acked = totals.publishes_acked;
    report.publish_errors = PUBLISH_CODES
        .iter()
        .zip(totals.publish_errors)
        .filter(|(_, n)| *n > 0)
        .map(|(code, n)| (code.to_string(), n))
        .collect();
    report.errors = COUNTERS
        .iter()
        .zip(totals.counters)
        .filter(|(_, n)| *n > 0)
        .map(|((_, name), n)| (name.to_string(), n))
        .collect();
    if stuck > 0 {
        report.errors.insert("clients_not_stopping".into(), stuck);
    }
    report.deliveries = totals.deliveries;
    report.history_deltas = totals.history_deltas;
    report.history_requests = totals.history_requests;
    report.duplicates_received = totals.duplicates_received;
    report.duplicates_after_dedupe = totals.duplicates_after_dedupe;
    report.out_of_order_applied = totals.out_of_order_applied;
    report.lost = lost;
    report.clients_behind = behind;
    report.not_recovered = totals.not_recovered;
    report.catch_up_fallbacks = totals.catch_up_fallbacks;
    report.content_mismatches = totals.content_mismatches;
    report.reconnects = totals.reconnects;
    report.unexpected_disconnects = totals.unexpected_disconnects;
    let per_second = |count: u64| {
        if publish_seconds > 0.0 {
            count as f64 / publish_seconds
        } else {
            0.0
        }
    };
    report.throughput = Throughput {
        publish_phase_seconds: publish_seconds,
        publishes_per_second: per_second(totals.publishes_sent),
        deliveries_per_second: per_second(totals.deliveries_publishing),
    };
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.timed_out = timed_out.is_some();
    report.timed_out_in = timed_out.map(str::to_owned);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_unless_allowed() {
        for url in [
            "ws://127.0.0.1:3001/local",
            "ws://localhost:3001/local",
            "ws://[::1]:3001/local",
            "ws://127.1.2.3/x",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for url in [
            "ws://10.0.0.1:3001/local",
            "wss://abc.execute-api.us-east-1.amazonaws.com/prod",
            "ws://localhost.example.com/",
        ] {
            assert!(
                matches!(
                    check_url(url, false),
                    Err(LoadError::RemoteNotAllowed { .. })
                ),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(matches!(
            check_url("http://127.0.0.1/", false),
            Err(LoadError::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_url("ws://127.0.0.1/local?token=x", false),
            Err(LoadError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn configurations_are_bounded() {
        let base = || LoadConfig::new("ws://127.0.0.1:1/local", TokenSource::Secret("s".into()));
        assert!(Plan::new(base()).is_ok());
        let bad: [fn(&mut LoadConfig); 8] = [
            |c| c.connections = 0,
            |c| c.connections = MAX_CONNECTIONS + 1,
            |c| c.publishers = c.connections + 1,
            |c| c.rate_per_second = 0.0,
            |c| c.churn = 1.5,
            |c| c.channels_per_connection = c.channels + 1,
            |c| {
                c.publishes = None;
                c.duration = None;
            },
            |c| c.publishes = Some(MAX_PUBLISHES + 1),
        ];
        for change in bad {
            let mut config = base();
            change(&mut config);
            assert!(matches!(
                Plan::new(config),
                Err(LoadError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn publishers_share_the_publishes() {
        let mut config = LoadConfig::new("ws://127.0.0.1:1/local", TokenSource::Secret("s".into()));
        config.publishers = 3;
        config.publishes = Some(10);
        let plan = Plan::new(config).unwrap();
        assert_eq!(plan.quota(0) + plan.quota(1) + plan.quota(2), 10);
        assert_eq!((plan.quota(0), plan.quota(1), plan.quota(2)), (4, 3, 3));
    }

    #[test]
    fn counters_are_listed_in_order() {
        for (index, (counter, _)) in COUNTERS.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
    }

    #[test]
    fn sightings_catch_two_ids_at_one_seq() {
        let table = ChannelTable::new("c".into(), 4);
        assert!(matches!(table.sight(1, id_hash("a")), Sighting::Consistent));
        assert!(matches!(table.sight(1, id_hash("a")), Sighting::Consistent));
        assert!(matches!(table.sight(1, id_hash("b")), Sighting::Mismatch));
        assert!(matches!(table.sight(9, id_hash("a")), Sighting::OutOfRange));
    }

    #[test]
    fn frames_parse_without_their_padding() {
        let text = r#"{"type":"delta","channel":"load:x:0","seq":3,"epoch":"e1","id":"x.0.1","from":"u","ts":1,"data":{"tag":"x.0.1","t":42,"pad":"xxxx"}}"#;
        let frame: Frame = serde_json::from_str(text).unwrap();
        assert_eq!(frame.seq, Some(3));
        let data = frame.data.unwrap();
        assert_eq!(data.tag.as_deref(), Some("x.0.1"));
        assert_eq!(data.t, Some(42));
        let crash: Frame = serde_json::from_str(
            r#"{"message": "Internal server error", "connectionId": "c", "requestId": "r"}"#,
        )
        .unwrap();
        assert!(crash.kind.is_none());
    }
}
