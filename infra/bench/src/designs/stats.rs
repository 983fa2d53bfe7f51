//! The arithmetic of a design run, kept apart from DynamoDB so it can be unit-tested:
//! what one run counted ([`Tally`]) becomes the figures of the report ([`DesignRun`]).

use std::time::Duration;

use serde::Serialize;

/// What one run of one design with `publishers` concurrent publishers counted.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// The latency of each completed publish.
    pub latencies: Vec<Duration>,
    /// Publishes that gave up (the race's attempt limit).
    pub gave_up: u64,
    /// Lost races: claim or delta writes refused because another publisher got there first.
    pub retries: u64,
    /// DynamoDB requests sent, refused conditional writes included.
    pub requests: u64,
    /// Write units: `ConsumedCapacity` of the accepted writes, plus one per refused write.
    pub wcu: f64,
    /// Read units (`ConsumedCapacity`).
    pub rcu: f64,
    /// Sequencer batches (0 for the designs without one).
    pub batches: u64,
    /// Wall time from the first publish to the last publisher's end.
    pub elapsed: Duration,
}

/// The figures of one design at one concurrency.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DesignRun {
    /// `ceiling`, `race`, `counter` or `sequencer`.
    pub design: String,
    /// Concurrent publishers.
    pub publishers: usize,
    /// Completed publishes.
    pub publishes: u64,
    /// Publishes that gave up.
    pub gave_up: u64,
    /// Completed publishes per second.
    pub per_s: f64,
    /// Median publish latency (ms).
    pub p50_ms: f64,
    /// 99th percentile publish latency (ms).
    pub p99_ms: f64,
    /// DynamoDB requests per completed publish.
    pub requests_per_publish: f64,
    /// Write units per completed publish.
    pub wcu_per_publish: f64,
    /// Read units per completed publish.
    pub rcu_per_publish: f64,
    /// Lost races per completed publish.
    pub retries_per_publish: f64,
    /// Mean publishes per sequencer batch, for the sequencer.
    pub mean_batch: Option<f64>,
    /// What the check of the stored deltas found wrong (gaps, duplicates, a wrong count);
    /// `None` when nothing was checked (the ceiling stores no deltas).
    pub problems: Option<Vec<String>>,
}

impl DesignRun {
    /// The figures of a tally.
    pub fn from_tally(design: &str, publishers: usize, tally: &Tally) -> Self {
        let publishes = tally.latencies.len() as u64;
        let mut ms: Vec<f64> = tally
            .latencies
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        ms.sort_by(f64::total_cmp);
        let seconds = tally.elapsed.as_secs_f64();
        DesignRun {
            design: design.to_owned(),
            publishers,
            publishes,
            gave_up: tally.gave_up,
            per_s: if seconds > 0.0 {
                publishes as f64 / seconds
            } else {
                0.0
            },
            p50_ms: percentile(&ms, 50.0),
            p99_ms: percentile(&ms, 99.0),
            requests_per_publish: per(tally.requests as f64, publishes),
            wcu_per_publish: per(tally.wcu, publishes),
            rcu_per_publish: per(tally.rcu, publishes),
            retries_per_publish: per(tally.retries as f64, publishes),
            mean_batch: (tally.batches > 0).then(|| per(publishes as f64, tally.batches)),
            problems: None,
        }
    }
}

/// `total / count`, 0 when nothing was counted (so the report holds no NaN, which JSON
/// cannot carry).
pub fn per(total: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// The nearest-rank percentile `p` (0–100) of ascending `sorted`; 0 when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    crate::percentile::nearest_rank(sorted, p / 100.0).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn figures_are_per_completed_publish() {
        let tally = Tally {
            latencies: [4, 1, 3, 2]
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            gave_up: 1,
            retries: 6,
            requests: 20,
            wcu: 10.0,
            rcu: 12.0,
            batches: 2,
            elapsed: Duration::from_secs(2),
        };
        let run = DesignRun::from_tally("race", 10, &tally);
        assert_eq!(run.publishes, 4);
        assert_eq!(run.gave_up, 1);
        assert_eq!(run.per_s, 2.0);
        assert_eq!(run.p50_ms, 2.0);
        assert_eq!(run.p99_ms, 4.0);
        assert_eq!(run.requests_per_publish, 5.0);
        assert_eq!(run.wcu_per_publish, 2.5);
        assert_eq!(run.rcu_per_publish, 3.0);
        assert_eq!(run.retries_per_publish, 1.5);
        assert_eq!(run.mean_batch, Some(2.0));
    }

    #[test]
    fn an_empty_run_has_zeros_not_nan() {
        let run = DesignRun::from_tally("counter", 1, &Tally::default());
        assert_eq!(run.per_s, 0.0);
        assert_eq!(run.requests_per_publish, 0.0);
        assert_eq!(run.p99_ms, 0.0);
        assert_eq!(run.mean_batch, None);
        assert!(
            serde_json::to_string(&run)
                .unwrap()
                .contains("\"per_s\":0.0")
        );
    }
}
