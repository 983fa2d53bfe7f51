//! The end-of-run checks. Per client and channel: the applied seqs are exactly
//! `start + 1 ..= head`, each once, in order. Across everybody: one message id per seq,
//! one seq per message id, and no seq beyond what the acked publishes explain. The
//! clients' counters are summed into the report here too.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use crate::client::ClientOutcome;
use crate::report::{BehindClient, DeliveryPaths, LoadReport, MAX_BEHIND_LISTED, Throughput};
use crate::state::Shared;
use crate::stats::{COUNTERS, ClientStats, PUBLISH_CODES, TIMEOUT};

/// What the clients handed back, summed as they stop.
#[derive(Default)]
pub(crate) struct Tally {
    /// Every client's counters.
    totals: ClientStats,
    /// Seqs clients should have applied and did not.
    lost: u64,
    /// Client channels short of the head.
    behind: u64,
    /// Clients that did not stop in time.
    pub(crate) stuck: u64,
    /// Seqs recovered by clients whose connection never closed.
    recovered_by_steady: u64,
    /// Duplicate pushes to clients whose connection never closed.
    duplicate_pushes_steady: u64,
}

impl Tally {
    /// Adds one client's outcome, noting in `report` where it fell behind.
    pub(crate) fn add(&mut self, outcome: ClientOutcome, shared: &Shared, report: &mut LoadReport) {
        self.totals.absorb(&outcome.stats);
        let s = &outcome.stats;
        if s.connections == 1 {
            self.recovered_by_steady += s.applied_catch_up + s.applied_history;
            self.duplicate_pushes_steady += s.duplicate_pushes;
        }
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
                self.lost += head - c.applied;
                self.behind += 1;
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
                self.totals.out_of_order_applied += expected.abs_diff(c.applied_count);
            }
        }
    }

    /// Writes the sums into `report`; rates are over a publish phase of `publish_seconds`,
    /// whose last first ack came `last_ack_seconds` after it started.
    pub(crate) fn fill(
        self,
        report: &mut LoadReport,
        publish_seconds: f64,
        last_ack_seconds: Option<f64>,
    ) {
        let totals = self.totals;
        report.publishes_sent = totals.publishes_sent;
        report.publish_attempts = totals.publish_attempts;
        report.publishes_acked = totals.publishes_acked;
        report.duplicate_acks = totals.duplicate_acks;
        report.frames_received = totals.frames_received;
        report.deltas_pushed = totals.deltas_pushed;
        let (timeouts, refusals): (Vec<_>, Vec<_>) = PUBLISH_CODES
            .iter()
            .zip(totals.publish_errors)
            .partition(|(code, _)| **code == TIMEOUT);
        report.publish_timeouts = timeouts.iter().map(|(_, n)| n).sum();
        report.refused_by_code = refusals
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| (code.to_string(), n))
            .collect();
        report.errors = COUNTERS
            .iter()
            .zip(totals.counters)
            .filter(|(_, n)| *n > 0)
            .map(|((_, name), n)| (name.to_string(), n))
            .collect();
        if self.stuck > 0 {
            report
                .errors
                .insert("clients_not_stopping".into(), self.stuck);
        }
        report.deliveries = totals.deliveries;
        report.history_deltas = totals.history_deltas;
        report.history_requests = totals.history_requests;
        report.delivered = DeliveryPaths {
            pushed: totals.applied_pushed,
            catch_up: totals.applied_catch_up,
            history: totals.applied_history,
            late_pushes: totals.late_pushes,
            missed_pushes: totals.missed_pushes,
            missed_while_away: totals.missed_while_away,
            recovered_by_steady_clients: self.recovered_by_steady,
            duplicate_pushes_to_steady_clients: self.duplicate_pushes_steady,
        };
        report.duplicates_received = totals.duplicates_received;
        report.duplicates_after_dedupe = totals.duplicates_after_dedupe;
        report.out_of_order_applied = totals.out_of_order_applied;
        report.lost = self.lost;
        report.clients_behind = self.behind;
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
            acked_per_second: acked_per_second(
                totals.publishes_acked,
                publish_seconds,
                last_ack_seconds,
            ),
            deliveries_per_second: per_second(totals.deliveries_publishing),
        };
    }
}

/// Publishes acked per second, over the publish phase or, when acks came after it, up to
/// the last first ack (so a server that falls behind is not credited with acks it gave
/// during the drain as if they came in time).
pub(crate) fn acked_per_second(
    acked: u64,
    publish_seconds: f64,
    last_ack_seconds: Option<f64>,
) -> f64 {
    let span = publish_seconds.max(last_ack_seconds.unwrap_or(0.0));
    if span > 0.0 { acked as f64 / span } else { 0.0 }
}

/// Across everybody: one id per seq, one seq per id, one acked publish per seq.
pub(crate) fn check_channels(shared: &Shared, report: &mut LoadReport) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_per_second_spans_the_acks_that_came_late() {
        // Acks within the phase: over the phase.
        assert_eq!(acked_per_second(3000, 15.0, Some(14.9)), 200.0);
        // Acks that trail the phase: up to the last one.
        assert_eq!(acked_per_second(3000, 15.0, Some(30.0)), 100.0);
        assert_eq!(acked_per_second(0, 15.0, None), 0.0);
        assert_eq!(acked_per_second(10, 0.0, None), 0.0);
    }

    #[test]
    fn answers_and_timeouts_are_reported_apart() {
        let mut tally = Tally::default();
        let code = |c: &str| PUBLISH_CODES.iter().position(|x| *x == c).unwrap();
        tally.totals.publish_errors[code("rate_limited")] = 4;
        tally.totals.publish_errors[code("in_flight")] = 2;
        tally.totals.publish_errors[code("internal")] = 1;
        tally.totals.publish_errors[code(TIMEOUT)] = 7;
        tally.totals.publishes_acked = 10;
        tally.totals.duplicate_acks = 3;
        tally.totals.frames_received = 5;
        tally.totals.deltas_pushed = 25;
        let mut report = LoadReport::default();
        tally.fill(&mut report, 2.0, Some(4.0));
        assert_eq!(report.publish_timeouts, 7);
        let refused: Vec<_> = report
            .refused_by_code
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            refused,
            [("in_flight", 2), ("internal", 1), ("rate_limited", 4)]
        );
        assert_eq!(report.throughput.acked_per_second, 2.5);
        assert_eq!((report.duplicate_acks, report.publishes_acked), (3, 10));
        assert_eq!((report.frames_received, report.deltas_pushed), (5, 25));
    }
}
