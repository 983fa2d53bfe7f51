//! Where the functions' EMF lines add up. CloudWatch keeps every value and computes
//! statistics at query time; a scrape needs running totals instead, so each metric
//! becomes what Prometheus would make of it: a scalar (the functions' counters, counted
//! since their last flush) is added to a counter, and each value of an array (their
//! distributions) is observed by a histogram. A series is a metric name, its unit and
//! the document's dimensions, all of them (`service` and `function` too).
//!
//! Histograms also keep their most recent values, so that a summary over a window (see
//! `traffic`) can give exact percentiles rather than bucket estimates.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::emf::{EmfDocument, EmfError, MetricValue};
use super::unit::Unit;

/// How many of its most recent values a histogram keeps for window percentiles.
pub const RECENT_VALUES: usize = 1024;

/// What a line of a function's stdout turned out to be.
#[derive(Debug, PartialEq)]
pub enum Capture {
    /// Not an EMF document: an ordinary log line.
    NotEmf,
    /// An EMF document, now counted.
    Recorded,
    /// Meant as an EMF document (an `_aws` member on a JSON object, or a line that starts
    /// with `{"_aws"`) but invalid; counted in [`MetricsSnapshot::invalid_lines`].
    Invalid(EmfError),
}

/// One series: a metric, its unit, and its labels (dimension keys and values, sorted by key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    /// The metric's EMF name, e.g. `FanoutLag`.
    pub name: String,
    /// Its unit.
    pub unit: Unit,
    /// Its dimensions, sorted by key.
    pub labels: Vec<(String, String)>,
}

/// A histogram's running state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket of the unit's [`Unit::buckets`], not cumulative; the last
    /// one counts the values above every bound.
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The last [`RECENT_VALUES`] observations, oldest first.
    pub recent: VecDeque<f64>,
}

/// Everything counted so far, as of one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// Counters: the sum of every scalar value.
    pub counters: BTreeMap<SeriesKey, f64>,
    /// Histograms: every value of every array.
    pub histograms: BTreeMap<SeriesKey, Histogram>,
    /// Lines meant as EMF that broke the specification.
    pub invalid_lines: u64,
    /// Valid EMF documents read.
    pub documents: u64,
}

/// The stack's metrics: every function hands its EMF lines here.
#[derive(Debug, Default)]
pub struct Registry {
    state: Mutex<MetricsSnapshot>,
}

impl Histogram {
    /// Observes `value`, with bucket bounds `bounds`.
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; bounds.len() + 1];
        }
        let bucket = bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(bounds.len());
        self.buckets[bucket] += 1;
        self.count += 1;
        self.sum += value;
        if self.recent.len() == RECENT_VALUES {
            self.recent.pop_front();
        }
        self.recent.push_back(value);
    }
}

impl MetricsSnapshot {
    /// The sum of counter `name` over the series whose labels pass `keep`.
    pub fn counter_where(&self, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> f64 {
        self.counters
            .iter()
            .filter(|(key, _)| key.name == name && keep(&key.labels))
            .map(|(_, value)| value)
            .sum()
    }

    /// The sum of counter `name` over the series that have every label of `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.counter_where(name, |series| has_labels(series, labels))
    }

    /// The histograms of `name` that have every label of `labels`.
    pub fn histogram_series<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = (&'a SeriesKey, &'a Histogram)> + 'a {
        self.histograms
            .iter()
            .filter(move |(key, _)| key.name == name && has_labels(&key.labels, labels))
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads one line of a function's stdout: an EMF document is counted (or, if invalid,
    /// counted as such); anything else is left alone.
    pub fn capture(&self, line: &str) -> Capture {
        match meant_as_emf(line) {
            None => Capture::NotEmf,
            Some(Ok(document)) => {
                self.lock().documents += 1;
                self.record(&document);
                Capture::Recorded
            }
            Some(Err(error)) => {
                self.lock().invalid_lines += 1;
                Capture::Invalid(error)
            }
        }
    }

    /// Counts a valid document's metrics.
    pub fn record(&self, document: &EmfDocument) {
        let mut state = self.lock();
        for metric in &document.metrics {
            let mut labels = metric.dimensions.clone();
            labels.sort();
            let key = SeriesKey {
                name: metric.name.clone(),
                unit: metric.unit,
                labels,
            };
            match &metric.value {
                MetricValue::Scalar(value) => *state.counters.entry(key).or_default() += value,
                MetricValue::Values(values) => {
                    let histogram = state.histograms.entry(key).or_default();
                    for value in values {
                        histogram.observe(metric.unit.buckets(), *value);
                    }
                }
            }
        }
    }

    /// Everything counted so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        self.lock().clone()
    }

    /// The sum of counter `name` over the series that have every label of `labels`, e.g.
    /// `counter("Publishes", &[("outcome", "ok")])`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.lock().counter(name, labels)
    }

    fn lock(&self) -> MutexGuard<'_, MetricsSnapshot> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `series` has every label of `wanted`.
fn has_labels(series: &[(String, String)], wanted: &[(&str, &str)]) -> bool {
    wanted
        .iter()
        .all(|(key, value)| series.iter().any(|(k, v)| k == key && v == value))
}

/// `None` when `line` is not meant as EMF; else the document, or why it is invalid. Only
/// lines that mention `"_aws"` are parsed, so ordinary log lines cost a substring search.
fn meant_as_emf(line: &str) -> Option<Result<EmfDocument, EmfError>> {
    if !line.contains("\"_aws\"") {
        return None;
    }
    let line = line.trim();
    match serde_json::from_str::<Value>(line) {
        Ok(value) => value.get("_aws").map(|_| EmfDocument::from_json(&value)),
        Err(error) => {
            let starts_as_emf = line
                .strip_prefix('{')
                .is_some_and(|rest| rest.trim_start().starts_with("\"_aws\""));
            starts_as_emf.then(|| Err(EmfError::NotJson(error.to_string())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{FANOUT_LINE, PUBLISHES_LINE};
    use super::*;

    #[test]
    fn scalars_add_up_per_series() {
        let registry = Registry::new();
        assert_eq!(registry.capture(PUBLISHES_LINE), Capture::Recorded);
        assert_eq!(registry.capture(PUBLISHES_LINE), Capture::Recorded);
        let duplicate = PUBLISHES_LINE.replace(r#""outcome":"ok""#, r#""outcome":"duplicate""#);
        assert_eq!(registry.capture(&duplicate), Capture::Recorded);

        assert_eq!(registry.counter("Publishes", &[("outcome", "ok")]), 6.0);
        assert_eq!(registry.counter("Publishes", &[]), 9.0);
        assert_eq!(
            registry.counter(
                "Publishes",
                &[("function", "message"), ("outcome", "duplicate")]
            ),
            3.0
        );
        assert_eq!(registry.counter("Publishes", &[("function", "http")]), 0.0);
        let snapshot = registry.snapshot();
        let key = snapshot.counters.keys().next().expect("a series");
        assert_eq!(
            key.labels,
            [
                ("function".to_owned(), "message".to_owned()),
                ("outcome".to_owned(), "duplicate".to_owned()),
                ("service".to_owned(), "deltacast".to_owned()),
            ],
            "every dimension is a label, sorted by key"
        );
    }

    #[test]
    fn every_value_of_an_array_is_observed() {
        let registry = Registry::new();
        registry.capture(FANOUT_LINE);
        registry.capture(&FANOUT_LINE.replace("[812.0]", "[3, 60000, 70000]"));

        let snapshot = registry.snapshot();
        let (key, lag) = snapshot
            .histogram_series("FanoutLag", &[("function", "fanout")])
            .next()
            .expect("a histogram");
        assert_eq!(key.unit, Unit::Milliseconds);
        assert_eq!(lag.count, 4);
        assert_eq!(lag.sum, 130_815.0);
        assert_eq!(lag.recent, [812.0, 3.0, 60_000.0, 70_000.0]);
        let bounds = Unit::Milliseconds.buckets();
        let bucket_of = |value: f64| bounds.iter().position(|b| value <= *b).unwrap();
        assert_eq!(lag.buckets[bucket_of(3.0)], 1, "3 ms is at most 5 ms");
        assert_eq!(lag.buckets[bucket_of(812.0)], 1);
        assert_eq!(lag.buckets[bucket_of(60_000.0)], 1, "a bound is inclusive");
        assert_eq!(lag.buckets[bounds.len()], 1, "above every bound");
        assert_eq!(registry.counter("Deliveries", &[]), 80.0);
    }

    #[test]
    fn a_histogram_keeps_only_its_most_recent_values() {
        let mut histogram = Histogram::default();
        for value in 0..RECENT_VALUES + 10 {
            histogram.observe(Unit::Count.buckets(), value as f64);
        }
        assert_eq!(histogram.count, (RECENT_VALUES + 10) as u64);
        assert_eq!(histogram.recent.len(), RECENT_VALUES);
        assert_eq!(histogram.recent.front(), Some(&10.0));
    }

    #[test]
    fn ordinary_log_lines_are_not_emf() {
        let registry = Registry::new();
        for line in [
            "INFO connected connection_id=\"c\"",
            r#"{"level":"INFO","message":"hello"}"#,
            r#"{"level":"INFO","fields":{"_aws":{}}}"#,
            r#"INFO the "_aws" member is described in the spec"#,
            r#"["_aws"]"#,
        ] {
            assert_eq!(registry.capture(line), Capture::NotEmf, "{line}");
        }
        assert_eq!(registry.snapshot(), MetricsSnapshot::default());
    }

    #[test]
    fn lines_meant_as_emf_that_break_the_specification_are_counted_as_invalid() {
        let registry = Registry::new();
        let no_timestamp = PUBLISHES_LINE.replace(r#""Timestamp":1796217683420,"#, "");
        assert_eq!(
            registry.capture(&no_timestamp),
            Capture::Invalid(EmfError::Timestamp)
        );
        let cut = &PUBLISHES_LINE[..40];
        assert!(matches!(
            registry.capture(cut),
            Capture::Invalid(EmfError::NotJson(_))
        ));
        assert!(matches!(
            registry.capture(r#"{ "_aws": oops"#),
            Capture::Invalid(EmfError::NotJson(_))
        ));
        let snapshot = registry.snapshot();
        assert_eq!(snapshot.invalid_lines, 3);
        assert!(snapshot.counters.is_empty(), "nothing of them is counted");
    }
}
