//! The figures of one hot-channel load run, taken from the load generator's report, the
//! verdicts on them (does the channel sustain the rate, was an overload refused cleanly)
//! and the 1-channel-to-100-channels ratios. Pure, so the arithmetic is tested apart.

use std::collections::BTreeMap;

use deltacast_load::LoadReport;
use serde::Serialize;

/// Least share of the planned publishes acked for a rate to count as sustained.
pub const SUSTAINED_ACKED_FRACTION: f64 = 0.99;
/// Highest p99 delivery latency for a rate to count as sustained, ms.
pub const SUSTAINED_P99_MS: f64 = 1000.0;
/// Least acked rate, as a share of the offered one, for a rate to count as sustained
/// (latency is measured from the first send, so a publisher held back by its window of
/// unacknowledged publishes would otherwise hide a server that falls behind).
pub const SUSTAINED_ACKED_RATE: f64 = 0.9;

/// One run's figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunFigures {
    /// Channels the publishes went to.
    pub channels: usize,
    /// Offered rate, publishes/s.
    pub offered_per_second: f64,
    /// Publishes planned.
    pub publishes_planned: u64,
    /// Distinct publishes acked.
    pub publishes_acked: u64,
    /// Acked publishes per second (from the start of publishing to the last ack).
    pub acked_per_second: f64,
    /// `publishes_acked / publishes_planned`.
    pub acked_fraction: f64,
    /// Delivery latency (publish sent → delta received), ms.
    pub delivery_p50_ms: f64,
    /// Delivery latency p99, ms.
    pub delivery_p99_ms: f64,
    /// Latency samples (live deliveries).
    pub deliveries: u64,
    /// Publish attempts with no answer within the request timeout.
    pub timeouts: u64,
    /// Publish attempts answered `internal`.
    pub internal: u64,
    /// The server's refusals of publish attempts, by code.
    pub refused_by_code: BTreeMap<String, u64>,
    /// Acks of an already acked publish.
    pub duplicate_acks: u64,
    /// Seqs a subscriber should have applied and never did.
    pub lost: u64,
    /// Seqs applied twice.
    pub duplicates: u64,
    /// Seqs applied out of order.
    pub out_of_order: u64,
    /// Live `delta`/`deltas` frames received, and the deltas they carried.
    pub frames_received: u64,
    /// Deltas in those frames.
    pub deltas_pushed: u64,
    /// The load generator's verdict, and why not.
    pub ok: bool,
    /// The load generator's failures.
    pub failures: Vec<String>,
    /// Its other errors by kind (handshakes, subscribe refusals and timeouts, ...), to
    /// tell why clients never connected.
    pub errors: BTreeMap<String, u64>,
}

impl RunFigures {
    /// The figures of `report`, a run offered `offered` publishes/s.
    pub fn from_report(report: &LoadReport, offered: f64) -> Self {
        Self {
            channels: report.channels,
            offered_per_second: offered,
            publishes_planned: report.publishes_planned,
            publishes_acked: report.publishes_acked,
            acked_per_second: report.throughput.acked_per_second,
            acked_fraction: ratio(
                report.publishes_acked as f64,
                report.publishes_planned as f64,
            )
            .unwrap_or(0.0),
            delivery_p50_ms: report.latency_ms.p50,
            delivery_p99_ms: report.latency_ms.p99,
            deliveries: report.latency_ms.count,
            timeouts: report.publish_timeouts,
            internal: report.refused_by_code.get("internal").copied().unwrap_or(0),
            refused_by_code: report.refused_by_code.clone(),
            duplicate_acks: report.duplicate_acks,
            lost: report.lost,
            duplicates: report.duplicates_after_dedupe,
            out_of_order: report.out_of_order_applied,
            frames_received: report.frames_received,
            deltas_pushed: report.deltas_pushed,
            ok: report.ok(),
            failures: report.failures(),
            errors: report.errors.clone(),
        }
    }

    /// Whether the channel sustained the offered rate: at least 99 % acked, p99 delivery
    /// under 1 s, and acks keeping up with the offered rate.
    pub fn sustains(&self) -> bool {
        self.acked_fraction >= SUSTAINED_ACKED_FRACTION
            && self.deliveries > 0
            && self.delivery_p99_ms < SUSTAINED_P99_MS
            && self.acked_per_second >= SUSTAINED_ACKED_RATE * self.offered_per_second
    }

    /// Live frames per delivered delta (`None` when nothing was delivered).
    pub fn frames_per_delta(&self) -> Option<f64> {
        ratio(self.frames_received as f64, self.deltas_pushed as f64)
    }

    /// Refusals with a code other than `rate_limited`.
    pub fn other_refusals(&self) -> u64 {
        self.refused_by_code
            .iter()
            .filter(|(code, _)| *code != "rate_limited")
            .map(|(_, n)| n)
            .sum()
    }

    /// Overload handled as promised: every refusal `rate_limited` (and some), no timeout,
    /// nothing lost or duplicated, in order, every publish acked in the end.
    pub fn overload_clean(&self) -> bool {
        self.refused_by_code
            .get("rate_limited")
            .copied()
            .unwrap_or(0)
            > 0
            && self.other_refusals() == 0
            && self.timeouts == 0
            && self.lost == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.ok
    }
}

/// `a / b` when it means something (`b` positive, both finite).
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// 1 channel against 100 at the same offered load.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Acked publishes/s on one channel over that on 100 (goal ≥ 0.9).
    pub acked_ratio: Option<f64>,
    /// p99 delivery on one channel over that on 100 (goal ≤ 2).
    pub p99_ratio: Option<f64>,
    /// Both goals met, with no timeout and no `internal` on either.
    pub meets_goals: bool,
}

/// Goals of the comparison (issue 12).
pub const GOAL_ACKED_RATIO: f64 = 0.9;
/// Goal: one channel's p99 at most this many times the 100 channels'.
pub const GOAL_P99_RATIO: f64 = 2.0;

/// Compares the 1-channel run with the 100-channel run.
pub fn compare(one: &RunFigures, hundred: &RunFigures) -> Comparison {
    let acked_ratio = ratio(one.acked_per_second, hundred.acked_per_second);
    let p99_ratio = ratio(one.delivery_p99_ms, hundred.delivery_p99_ms);
    let clean = |r: &RunFigures| r.timeouts == 0 && r.internal == 0;
    Comparison {
        acked_ratio,
        p99_ratio,
        meets_goals: acked_ratio.is_some_and(|r| r >= GOAL_ACKED_RATIO)
            && p99_ratio.is_some_and(|r| r <= GOAL_P99_RATIO)
            && clean(one)
            && clean(hundred),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(acked_per_second: f64, p99: f64) -> RunFigures {
        RunFigures {
            offered_per_second: 200.0,
            publishes_planned: 3000,
            publishes_acked: 3000,
            acked_fraction: 1.0,
            acked_per_second,
            delivery_p99_ms: p99,
            deliveries: 300_000,
            ok: true,
            ..RunFigures::default()
        }
    }

    #[test]
    fn ratios_of_the_issue_table() {
        // The issue's figures: 124 acked/s and p99 41 s on one channel, 200 and 1.3 s on 100.
        let c = compare(&run(124.0, 41_000.0), &run(200.0, 1_300.0));
        assert!((c.acked_ratio.unwrap() - 0.62).abs() < 1e-9);
        assert!((c.p99_ratio.unwrap() - 41_000.0 / 1_300.0).abs() < 1e-9);
        assert!(!c.meets_goals);
        let good = compare(&run(195.0, 900.0), &run(200.0, 600.0));
        assert!(good.meets_goals, "{good:?}");
    }

    #[test]
    fn a_timeout_or_internal_fails_the_comparison() {
        let mut one = run(200.0, 500.0);
        one.timeouts = 1;
        assert!(!compare(&one, &run(200.0, 500.0)).meets_goals);
        let mut hundred = run(200.0, 500.0);
        hundred.internal = 1;
        assert!(!compare(&run(200.0, 500.0), &hundred).meets_goals);
    }

    #[test]
    fn ratios_of_nothing_are_none() {
        let c = compare(&run(100.0, 100.0), &run(0.0, 0.0));
        assert_eq!((c.acked_ratio, c.p99_ratio), (None, None));
        assert!(!c.meets_goals);
        assert_eq!(ratio(1.0, f64::NAN), None);
    }

    #[test]
    fn sustained_needs_acks_latency_and_pace() {
        assert!(run(199.0, 999.0).sustains());
        assert!(!run(199.0, 1000.0).sustains(), "p99 must be under 1 s");
        assert!(!run(150.0, 500.0).sustains(), "acks must keep pace");
        let mut short = run(200.0, 500.0);
        short.acked_fraction = 0.98;
        assert!(!short.sustains(), "99 % must be acked");
        let mut silent = run(200.0, 0.0);
        silent.deliveries = 0;
        assert!(!silent.sustains(), "no delivery, no latency to trust");
    }

    #[test]
    fn overload_is_clean_only_with_rate_limited_alone() {
        let mut overload = run(100.0, 800.0);
        assert!(!overload.overload_clean(), "the limit never engaged");
        overload.refused_by_code.insert("rate_limited".into(), 40);
        assert!(overload.overload_clean());
        overload.refused_by_code.insert("in_flight".into(), 1);
        assert_eq!(overload.other_refusals(), 1);
        assert!(!overload.overload_clean());
        overload.refused_by_code.remove("in_flight");
        overload.lost = 1;
        assert!(!overload.overload_clean());
    }

    #[test]
    fn frames_per_delta() {
        let mut burst = run(50.0, 300.0);
        (burst.frames_received, burst.deltas_pushed) = (2_500, 25_000);
        assert_eq!(burst.frames_per_delta(), Some(0.1));
        burst.deltas_pushed = 0;
        assert_eq!(burst.frames_per_delta(), None);
    }
}
