//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: counted during an
//! invocation through the `metrics` facade, written to stdout once at its end
//! ([`flushed`]), one JSON document per line. CloudWatch Logs turns the lines into metrics
//! with no API call on the hot path (as Powertools for AWS Lambda does); the local stack
//! reads the same lines and serves them at `/metrics`.
//!
//! Dimensions stay few and low-cardinality: `service` (the stack's name,
//! `METRICS_SERVICE`), `function` (the binary's role) and the metric's own label (an
//! outcome, a reason, a route and status): never a channel, connection or user. What
//! each metric counts is in [`record`] and docs/operations.md.
//!
//! Without [`init`] (unit tests, tools) the recording functions do nothing.

pub mod record;

use std::io::Write;
use std::sync::OnceLock;

use metrics::Unit;
use metrics_cloudwatch_embedded::{Builder, Collector};

pub use record::*;

/// The variable that names the metrics' CloudWatch namespace.
pub const NAMESPACE_VARIABLE: &str = "METRICS_NAMESPACE";
/// The variable that names the service dimension (the template sets the stack's name).
pub const SERVICE_VARIABLE: &str = "METRICS_SERVICE";
/// The namespace and service when their variables are unset or empty.
pub const DEFAULT_NAMESPACE: &str = "deltacast";

/// The process's recorder, once [`init`] installed it.
static COLLECTOR: OnceLock<&'static Collector> = OnceLock::new();

/// The value of `variable`, or [`DEFAULT_NAMESPACE`] when unset or empty.
fn setting(variable: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
}

/// Installs the EMF recorder for the function `function` (its role: `message`,
/// `fanout`, ...); call once at the top of `main`. A second call does nothing.
pub fn init(function: &'static str) {
    if COLLECTOR.get().is_some() {
        return;
    }
    let built = Builder::new()
        .cloudwatch_namespace(setting(NAMESPACE_VARIABLE))
        .with_dimension("service", setting(SERVICE_VARIABLE))
        .with_dimension("function", function)
        .init();
    match built {
        Ok(collector) => {
            collector.set_property("level", line_level());
            describe();
            let _ = COLLECTOR.set(collector);
        }
        // Another recorder is installed (a test harness): metrics go there instead.
        Err(error) => tracing::warn!(%error, "metrics recorder not installed"),
    }
}

/// The `level` the EMF lines carry: the function's own log level. Lambda's log-level
/// filtering (JSON format) reads a line without `level` as INFO and would drop every
/// metric line of a function logging at WARN or ERROR; at its own level a line is kept.
fn line_level() -> String {
    std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .filter(|level| !level.trim().is_empty())
        .map_or_else(|| "INFO".to_owned(), |level| level.trim().to_uppercase())
}

/// The units CloudWatch shows: counts, except the lag in milliseconds.
fn describe() {
    for name in record::COUNTERS {
        metrics::describe_counter!(name, Unit::Count, "");
    }
    metrics::describe_histogram!(record::FANOUT_LAG, Unit::Milliseconds, "");
    metrics::describe_histogram!(record::BATCH_SIZE, Unit::Count, "");
}

/// Writes what was counted since the last flush to stdout as EMF lines, in one write so
/// no log line lands inside a document.
pub fn flush() {
    let lines = take_lines();
    if !lines.is_empty() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&lines).and_then(|()| stdout.flush());
    }
}

/// What was counted since the last flush, as EMF lines (empty without [`init`]).
fn take_lines() -> Vec<u8> {
    let mut lines = Vec::new();
    if let Some(collector) = COLLECTOR.get()
        && let Err(error) = collector.flush(&mut lines)
    {
        tracing::warn!(%error, "metrics not written");
        lines.clear();
    }
    lines
}

/// Runs `work` (an invocation), then [`flush`]es what it counted.
pub async fn flushed<T>(work: impl Future<Output = T>) -> T {
    let output = work.await;
    flush();
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The one test that installs the recorder (it is process-wide): other tests of this
    /// crate may count into it meanwhile, so it looks for its own documents only.
    #[test]
    fn a_flush_writes_one_emf_document_per_label_set_with_its_dimensions_and_units() {
        init("test");
        publish(PublishOutcome::Duplicate);
        publish(PublishOutcome::Duplicate);
        http_request("GET /v1/openapi.json", 200);
        stream_batch(7, Some(1_250));
        let text = String::from_utf8(take_lines()).unwrap();
        let documents: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
            .collect();
        let find = |metric: &str| {
            documents
                .iter()
                .find(|d| d.get(metric).is_some())
                .unwrap_or_else(|| panic!("no {metric} in {text}"))
        };
        let publishes = find(PUBLISHES);
        assert_eq!(publishes["Publishes"], 2);
        assert_eq!(publishes["outcome"], "duplicate");
        assert_eq!(publishes["function"], "test");
        assert_eq!(publishes["service"], "deltacast");
        let directive = &publishes["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "deltacast");
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([["service", "function", "outcome"]])
        );
        assert_eq!(
            directive["Metrics"],
            serde_json::json!([{"Name": "Publishes", "Unit": "Count"}])
        );
        assert!(publishes["_aws"]["Timestamp"].is_u64());
        assert_eq!(
            publishes["level"], "INFO",
            "kept by Lambda's log-level filter"
        );
        assert_eq!(find(HTTP_REQUESTS)["status"], "200");
        let batch = find(FANOUT_LAG);
        assert_eq!(batch[FANOUT_LAG], serde_json::json!([1250.0]));
        assert_eq!(batch[BATCH_SIZE], serde_json::json!([7.0]));
        let units = &batch["_aws"]["CloudWatchMetrics"][0]["Metrics"];
        assert!(
            units
                .as_array()
                .unwrap()
                .contains(&serde_json::json!({"Name": "FanoutLag", "Unit": "Milliseconds"})),
            "{units}"
        );
        // Counted once: the next flush has none of it.
        let again = String::from_utf8(take_lines()).unwrap();
        assert!(!again.contains("\"duplicate\""), "{again}");
    }
}
