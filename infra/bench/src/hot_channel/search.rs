//! The search for the highest rate one channel sustains: double from a starting rate
//! while runs pass, halve while they fail, then bisect between the highest pass and the
//! lowest failure until they are within a resolution, all in a bounded number of steps.
//! Pure (the caller runs each step), so the order of rates is tested without a stack.

use serde::Serialize;

/// A bounded doubling-then-bisecting search over publish rates.
#[derive(Clone, Debug)]
pub struct RateSearch {
    /// The highest rate that passed.
    passed: Option<f64>,
    /// The lowest rate that failed.
    failed: Option<f64>,
    /// The rate to try next (`None`: done).
    next: Option<f64>,
    /// Steps left.
    steps_left: usize,
    /// Lowest and highest rates tried.
    min_rate: f64,
    max_rate: f64,
    /// Stop bisecting when `failed / passed` is at most `1 + resolution`.
    resolution: f64,
}

/// One step of the search, as reported.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Offered rate, publishes/s.
    pub rate: f64,
    /// Whether the channel sustained it.
    pub passed: bool,
}

impl RateSearch {
    /// A search from `start` within `min_rate..=max_rate`, at most `steps` runs, stopping
    /// when the bracket is within `resolution` (0.1: 10 %).
    pub fn new(start: f64, min_rate: f64, max_rate: f64, steps: usize, resolution: f64) -> Self {
        Self {
            passed: None,
            failed: None,
            next: (steps > 0).then_some(start.clamp(min_rate, max_rate)),
            steps_left: steps,
            min_rate,
            max_rate,
            resolution,
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        self.next
    }

    /// Records the outcome of a run at `rate` and chooses the next one.
    pub fn record(&mut self, rate: f64, passed: bool) {
        self.steps_left = self.steps_left.saturating_sub(1);
        if passed {
            self.passed = Some(self.passed.map_or(rate, |p| p.max(rate)));
        } else {
            self.failed = Some(self.failed.map_or(rate, |f| f.min(rate)));
        }
        self.next = if self.steps_left == 0 {
            None
        } else {
            match (self.passed, self.failed) {
                (Some(p), None) if p >= self.max_rate => None,
                (Some(p), None) => Some((p * 2.0).min(self.max_rate)),
                (None, Some(f)) if f <= self.min_rate => None,
                (None, Some(f)) => Some((f / 2.0).max(self.min_rate)),
                (Some(p), Some(f)) if f <= p * (1.0 + self.resolution) => None,
                (Some(p), Some(f)) => Some(((p + f) / 2.0).round().max(1.0)),
                (None, None) => None,
            }
        };
        // Rounded rates only, and never one already decided.
        if let Some(n) = self.next {
            let n = n.round();
            let decided = self.passed == Some(n) || self.failed == Some(n);
            self.next = (!decided).then_some(n);
        }
    }

    /// The highest rate that passed (0 when none did).
    pub fn sustained(&self) -> f64 {
        self.passed.unwrap_or(0.0)
    }

    /// The lowest rate that failed, if one did.
    pub fn first_failure(&self) -> Option<f64> {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search against a channel that sustains up to `capacity`; returns the rates
    /// tried and the result.
    fn against(capacity: f64, search: &mut RateSearch) -> Vec<f64> {
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            search.record(rate, rate <= capacity);
        }
        tried
    }

    #[test]
    fn doubles_then_bisects_to_the_resolution() {
        let mut search = RateSearch::new(50.0, 10.0, 5000.0, 20, 0.1);
        let tried = against(300.0, &mut search);
        assert_eq!(&tried[..4], [50.0, 100.0, 200.0, 400.0]);
        assert_eq!(tried[4], 300.0, "bisects 200..400");
        let sustained = search.sustained();
        let failed = search.first_failure().unwrap();
        assert!(sustained <= 300.0 && failed > 300.0);
        assert!(failed <= sustained * 1.1 + 1.0, "{sustained}..{failed}");
    }

    #[test]
    fn halves_when_the_start_fails() {
        let mut search = RateSearch::new(200.0, 10.0, 5000.0, 20, 0.1);
        let tried = against(30.0, &mut search);
        assert_eq!(&tried[..3], [200.0, 100.0, 50.0]);
        assert!(search.sustained() <= 30.0 && search.sustained() >= 25.0);
    }

    #[test]
    fn stops_at_the_bounds() {
        let mut search = RateSearch::new(50.0, 10.0, 400.0, 20, 0.1);
        assert_eq!(against(1e9, &mut search), [50.0, 100.0, 200.0, 400.0]);
        assert_eq!(search.sustained(), 400.0);

        let mut search = RateSearch::new(50.0, 10.0, 400.0, 20, 0.1);
        assert_eq!(against(1.0, &mut search), [50.0, 25.0, 13.0, 10.0]);
        assert_eq!(search.sustained(), 0.0);
        assert_eq!(search.first_failure(), Some(10.0));
    }

    #[test]
    fn the_step_budget_bounds_the_search() {
        let mut search = RateSearch::new(50.0, 10.0, 5000.0, 3, 0.01);
        assert_eq!(against(1e9, &mut search).len(), 3);
        assert_eq!(search.sustained(), 200.0);
        let mut none = RateSearch::new(50.0, 10.0, 5000.0, 0, 0.1);
        assert!(none.next_rate().is_none());
        assert!(against(1.0, &mut none).is_empty());
    }
}
