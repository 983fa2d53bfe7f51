//! The one line `make dev` logs about traffic every few seconds: what a developer glances
//! at to see that the stack is busy and healthy, without opening `/metrics`. Computed
//! from two snapshots, so it is a pure function of what was counted in the window.
//!
//! - connections open: `ConnectionsOpened` minus `ConnectionsClosed`, since the start;
//! - publishes/s: `Publishes` answered `ok` or `duplicate` (a publish the sequencer took
//!   counts once, when it answers `ok`; the message function's `queued` is not counted);
//! - deliveries/s: `Deliveries`;
//! - fan-out lag p99: over the window's `FanoutLag` values (`-` when there were none);
//! - errors: the runtime's failed invocations (errors, timeouts, crashes, throttles),
//!   `PostsFailed`, `Publishes` and `Requests` answered `internal`, and `HttpRequests`
//!   answered with a 5xx status.

use std::fmt;
use std::time::Duration;

use super::figures::FunctionFigures;
use super::registry::MetricsSnapshot;

/// Everything the summary reads, as of one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficSnapshot {
    /// The functions' metrics.
    pub metrics: MetricsSnapshot,
    /// The runtime's figures, by function.
    pub functions: Vec<(String, FunctionFigures)>,
}

/// What happened in one window.
#[derive(Clone, Debug, PartialEq)]
pub struct Traffic {
    /// Connections open at the window's end.
    pub connections_open: u64,
    /// Publishes accepted per second.
    pub publishes_per_second: f64,
    /// Deltas delivered per second.
    pub deliveries_per_second: f64,
    /// The 99th percentile of the window's fan-out lags, in milliseconds.
    pub fanout_lag_p99_ms: Option<f64>,
    /// Errors of every kind in the window.
    pub errors: u64,
}

impl Traffic {
    /// The traffic between `before` and `after`, `window` apart; `None` when nothing at
    /// all changed.
    pub fn between(
        before: &TrafficSnapshot,
        after: &TrafficSnapshot,
        window: Duration,
    ) -> Option<Self> {
        if before == after {
            return None;
        }
        let (old, new) = (&before.metrics, &after.metrics);
        let counted = |name: &str, labels: &[(&str, &str)]| {
            (new.counter(name, labels) - old.counter(name, labels)).max(0.0)
        };
        let per_second = |count: f64| {
            let seconds = window.as_secs_f64();
            if seconds > 0.0 { count / seconds } else { 0.0 }
        };
        let opened = new.counter("ConnectionsOpened", &[]);
        let closed = new.counter("ConnectionsClosed", &[]);
        let server_errors = |snapshot: &MetricsSnapshot| {
            snapshot.counter_where("HttpRequests", |labels| {
                labels.iter().any(|(key, value)| {
                    key == "status" && value.parse::<u16>().is_ok_and(|status| status >= 500)
                })
            })
        };
        // A publish that failed is one `Requests` (socket) or one 5xx (HTTP) already; its
        // `Publishes{internal}` would count it twice.
        let metric_errors = counted("PostsFailed", &[])
            + counted("Requests", &[("outcome", "internal")])
            + (server_errors(new) - server_errors(old)).max(0.0);
        // The authorizer refuses a 401 by failing its invocation: those are not errors.
        let refused_handshakes = counted("HandshakesRefused", &[("reason", "missing_token")])
            + counted("HandshakesRefused", &[("reason", "invalid_token")]);
        let failed_invocations: u64 = after
            .functions
            .iter()
            .map(|(name, figures)| {
                let earlier = before
                    .functions
                    .iter()
                    .find(|(known, _)| known == name)
                    .map_or(0, |(_, figures)| figures.failures());
                figures.failures().saturating_sub(earlier)
            })
            .sum();
        Some(Self {
            connections_open: (opened - closed).max(0.0) as u64,
            publishes_per_second: per_second(
                counted("Publishes", &[("outcome", "ok")])
                    + counted("Publishes", &[("outcome", "duplicate")]),
            ),
            deliveries_per_second: per_second(counted("Deliveries", &[])),
            fanout_lag_p99_ms: p99(window_values(old, new, "FanoutLag")),
            errors: failed_invocations.saturating_sub(refused_handshakes as u64)
                + metric_errors as u64,
        })
    }
}

impl fmt::Display for Traffic {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = |count: u64| if count == 1 { "" } else { "s" };
        write!(
            formatter,
            "{} connection{} open, {:.1} publishes/s, {:.1} deliveries/s, fan-out lag p99 ",
            self.connections_open,
            plural(self.connections_open),
            self.publishes_per_second,
            self.deliveries_per_second,
        )?;
        match self.fanout_lag_p99_ms {
            Some(lag) => write!(formatter, "{lag:.0} ms")?,
            None => formatter.write_str("-")?,
        }
        write!(formatter, ", {} error{}", self.errors, plural(self.errors))
    }
}

/// The values histogram `name` observed after `old` and up to `new` (as many as it still
/// remembers).
fn window_values(old: &MetricsSnapshot, new: &MetricsSnapshot, name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for (key, histogram) in new.histogram_series(name, &[]) {
        let seen = old.histograms.get(key).map_or(0, |earlier| earlier.count);
        let fresh = usize::try_from(histogram.count.saturating_sub(seen)).unwrap_or(usize::MAX);
        let skip = histogram.recent.len().saturating_sub(fresh);
        values.extend(histogram.recent.iter().skip(skip));
    }
    values
}

/// The 99th percentile (nearest rank) of `values`, if any.
fn p99(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (values.len() as f64 * 0.99).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{FANOUT_LINE, PUBLISHES_LINE};
    use super::super::registry::Registry;
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    /// A line of `function` counting `name` (with one label, if any) by `value`.
    fn counter_line(function: &str, name: &str, label: Option<(&str, &str)>, value: u64) -> String {
        let (keys, members) = match label {
            Some((key, value)) => (format!(r#","{key}""#), format!(r#","{key}":"{value}""#)),
            None => (String::new(), String::new()),
        };
        format!(
            r#"{{"_aws":{{"Timestamp":1,"CloudWatchMetrics":[{{"Namespace":"deltacast","Dimensions":[["service","function"{keys}]],"Metrics":[{{"Name":"{name}","Unit":"Count"}}]}}]}},"service":"deltacast","function":"{function}"{members},"{name}":{value}}}"#
        )
    }

    fn snapshot(registry: &Registry, functions: &[(&str, FunctionFigures)]) -> TrafficSnapshot {
        TrafficSnapshot {
            metrics: registry.snapshot(),
            functions: functions
                .iter()
                .map(|(name, figures)| ((*name).to_owned(), *figures))
                .collect(),
        }
    }

    #[test]
    fn a_window_where_nothing_happened_says_nothing() {
        let registry = Registry::new();
        registry.capture(PUBLISHES_LINE);
        let figures = [("MessageFunction", FunctionFigures::default())];
        let before = snapshot(&registry, &figures);
        let after = snapshot(&registry, &figures);
        assert_eq!(Traffic::between(&before, &after, WINDOW), None);
    }

    #[test]
    fn a_busy_window_sums_up_in_one_line() {
        // GIVEN two connections opened before the window and a lag seen before it
        let registry = Registry::new();
        registry.capture(&counter_line("connect", "ConnectionsOpened", None, 2));
        registry.capture(&FANOUT_LINE.replace("[812.0]", "[5000]"));
        let quiet = FunctionFigures {
            invocations: 10,
            ..FunctionFigures::default()
        };
        let before = snapshot(&registry, &[("MessageFunction", quiet)]);

        // WHEN, in the window, a third opens and one closes, 120 publishes are accepted
        // (and more queued or refused), the fan-out delivers twice, and errors happen
        registry.capture(&counter_line("connect", "ConnectionsOpened", None, 1));
        registry.capture(&counter_line("disconnect", "ConnectionsClosed", None, 1));
        registry.capture(&counter_line(
            "message",
            "Publishes",
            Some(("outcome", "ok")),
            100,
        ));
        registry.capture(&counter_line(
            "message",
            "Publishes",
            Some(("outcome", "duplicate")),
            20,
        ));
        registry.capture(&counter_line(
            "message",
            "Publishes",
            Some(("outcome", "queued")),
            50,
        ));
        registry.capture(&counter_line(
            "message",
            "Publishes",
            Some(("outcome", "internal")),
            1,
        ));
        registry.capture(&counter_line(
            "message",
            "Requests",
            Some(("outcome", "internal")),
            2,
        ));
        registry.capture(&counter_line("fanout", "PostsFailed", None, 3));
        registry.capture(&counter_line(
            "http",
            "HttpRequests",
            Some(("status", "503")),
            4,
        ));
        registry.capture(&counter_line(
            "http",
            "HttpRequests",
            Some(("status", "429")),
            50,
        ));
        registry.capture(&FANOUT_LINE.replace("[812.0]", "[10, 20, 812]"));
        registry.capture(PUBLISHES_LINE.replace("Publishes", "Unrelated").as_str());
        let failing = FunctionFigures {
            invocations: 30,
            errors: 1,
            timeouts: 1,
            crashes: 1,
            throttles: 1,
        };
        // and a handshake is refused (the authorizer's invocation fails, as a 401 does)
        registry.capture(&counter_line(
            "authorizer",
            "HandshakesRefused",
            Some(("reason", "invalid_token")),
            1,
        ));
        let refusing = FunctionFigures {
            invocations: 1,
            errors: 1,
            ..FunctionFigures::default()
        };
        let after = snapshot(
            &registry,
            &[
                ("MessageFunction", failing),
                ("AuthorizerFunction", refusing),
            ],
        );

        // THEN (a failed publish is its `Requests` line, not also its `Publishes` line;
        // the refused handshake is no error)
        let traffic = Traffic::between(&before, &after, WINDOW).expect("something happened");
        assert_eq!(
            traffic,
            Traffic {
                connections_open: 2,
                publishes_per_second: 12.0,
                deliveries_per_second: 4.0,
                fanout_lag_p99_ms: Some(812.0),
                errors: 4 + 2 + 3 + 4,
            }
        );
        assert_eq!(
            traffic.to_string(),
            "2 connections open, 12.0 publishes/s, 4.0 deliveries/s, fan-out lag p99 812 ms, 13 errors"
        );
    }

    #[test]
    fn runtime_figures_alone_are_enough_to_speak() {
        let registry = Registry::new();
        let before = snapshot(&registry, &[]);
        let crashed = FunctionFigures {
            invocations: 1,
            crashes: 1,
            ..FunctionFigures::default()
        };
        let after = snapshot(&registry, &[("FanoutFunction", crashed)]);
        let traffic = Traffic::between(&before, &after, WINDOW).expect("an invocation");
        assert_eq!(
            traffic.to_string(),
            "0 connections open, 0.0 publishes/s, 0.0 deliveries/s, fan-out lag p99 -, 1 error"
        );
    }

    #[test]
    fn the_lag_percentile_is_the_nearest_rank_of_the_windows_values() {
        assert_eq!(p99(Vec::new()), None);
        assert_eq!(p99(vec![7.0]), Some(7.0));
        let hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(p99(hundred), Some(99.0));
        let thousand: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(p99(thousand), Some(990.0));
    }

    #[test]
    fn one_connection_and_one_error_are_singular() {
        let traffic = Traffic {
            connections_open: 1,
            publishes_per_second: 0.26,
            deliveries_per_second: 40.06,
            fanout_lag_p99_ms: Some(0.4),
            errors: 1,
        };
        assert_eq!(
            traffic.to_string(),
            "1 connection open, 0.3 publishes/s, 40.1 deliveries/s, fan-out lag p99 0 ms, 1 error"
        );
    }
}
