//! What a run saw, and its verdict: [`LoadReport`] (serialised as the `--json` report)
//! with [`LoadReport::ok`], the failures and warnings that explain it, and the text
//! summary the CLI prints. Nothing here measures: the run fills it in.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

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
    /// Distinct publishes acked per second, from the start of publishing to the later of
    /// the end of the publish phase and the last first ack: what the server sustained (at
    /// most the offered rate when it keeps up; lower when acks fall behind).
    pub acked_per_second: f64,
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

/// Deltas applied, by the path by which each first reached its client.
///
/// Every seq a client applied (from its starting point to the head) counts once, in
/// `pushed`, `catch_up` or `history`, by the first copy it received; later copies are
/// duplicates. So `pushed + catch_up + history` is the number of seqs applied, and a delta
/// the fan-out should have pushed but `history` recovered is not counted as pushed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryPaths {
    /// First received as a `delta` frame the fan-out pushed to a live subscription
    /// (including ones that raced a `subscribed`, above the head it names).
    pub pushed: u64,
    /// First received as a `delta` frame of the catch-up of a resubscribe with `since`:
    /// before its `subscribed`, at or below the head it names.
    pub catch_up: u64,
    /// First received in a `history` reply, after a gap.
    pub history: u64,
    /// Owed seqs that `history` brought before their push, whose push then came (slow, not
    /// lost). A seq is owed on a connection when it is above the head of its `subscribed`
    /// (the fan-out's) or, after a `recovered: true` resubscribe, above its `since` (the
    /// catch-up's).
    pub late_pushes: u64,
    /// Owed seqs that only `history` delivered: no push came while the connection stayed
    /// open, up to a short grace after settling (must be 0). Seqs awaited on a connection
    /// that then closed are not counted (their push may have been on its way).
    pub missed_pushes: u64,
    /// Per resubscribe, the head named by its `subscribed` minus the last seq applied:
    /// what the client missed while away, which catch-up (or `history`) had to recover.
    pub missed_while_away: u64,
    /// Seqs recovered (catch-up or `history`) by clients whose connection never closed
    /// (with no faults, 0: a client that stays connected gets every delta pushed).
    pub recovered_by_steady_clients: u64,
    /// Pushed `delta` frames of a seq the client already had, at clients whose connection
    /// never closed, late pushes aside: the fan-out sent a seq twice (a stream batch
    /// delivered again). Catch-up plays no part, so it cannot make this non-zero.
    pub duplicate_pushes_to_steady_clients: u64,
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
    /// Acks of a publish already acked (acks are asynchronous; a publish sent again may be
    /// acked twice with the same seq): counted once in `publishes_acked`, and here.
    pub duplicate_acks: u64,
    /// The server's refusals of publish attempts, by error code (`rate_limited`,
    /// `in_flight`, `internal`, ...), retried ones included.
    pub refused_by_code: BTreeMap<String, u64>,
    /// Publish attempts with no answer within the request timeout (each was sent again).
    pub publish_timeouts: u64,
    /// `delta` and `deltas` frames received on live subscriptions (history replies and
    /// catch-up before `subscribed` aside): with `coalesce`, one frame may carry several
    /// deltas.
    pub frames_received: u64,
    /// Deltas those frames carried: `frames_received / deltas_pushed` is the frames per
    /// delivered delta.
    pub deltas_pushed: u64,
    /// Deltas received in `delta` and `deltas` frames (fan-out and catch-up), duplicates
    /// included.
    pub deliveries: u64,
    /// Deltas received in `history` replies.
    pub history_deltas: u64,
    /// `history` requests sent.
    pub history_requests: u64,
    /// Deltas applied, by path (pushed, catch-up, history), and pushes missed.
    pub delivered: DeliveryPaths,
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
    /// Nothing lost, no push missed, nothing applied twice or out of order, every publish
    /// acked, every catch-up recovered, every client connected, content consistent, no
    /// deadline missed.
    pub fn ok(&self) -> bool {
        self.lost == 0
            && self.delivered.missed_pushes == 0
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
            self.delivered.missed_pushes > 0,
            format!(
                "{} deltas never pushed to a live connection (recovered only by history)",
                self.delivered.missed_pushes
            ),
        );
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
            "  publishes       {} sent of {} planned, {} acked ({} acked twice), {} attempts; {} timed out; refused: {}",
            self.publishes_sent,
            self.publishes_planned,
            self.publishes_acked,
            self.duplicate_acks,
            self.publish_attempts,
            self.publish_timeouts,
            counts(&self.refused_by_code)
        )?;
        writeln!(
            f,
            "  deliveries      {} deltas, {} via history ({} requests), {} duplicates dropped; live: {} frames carried {} deltas",
            self.deliveries,
            self.history_deltas,
            self.history_requests,
            self.duplicates_received,
            self.frames_received,
            self.deltas_pushed
        )?;
        let d = &self.delivered;
        writeln!(
            f,
            "  applied by path pushed {}, catch-up {}, history {}; late pushes {}, missed pushes {}; missed while away {}; steady clients: {} recovered, {} pushed twice",
            d.pushed,
            d.catch_up,
            d.history,
            d.late_pushes,
            d.missed_pushes,
            d.missed_while_away,
            d.recovered_by_steady_clients,
            d.duplicate_pushes_to_steady_clients
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
            "  throughput      {:.1} publishes/s sent, {:.1} acked/s, {:.1} deliveries/s over {:.1} s",
            t.publishes_per_second,
            t.acked_per_second,
            t.deliveries_per_second,
            t.publish_phase_seconds
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
