//! The `/metrics` page: Prometheus's text exposition format, version 0.0.4, which every
//! scraper reads. Written here rather than with `prometheus-client`, which writes
//! OpenMetrics instead (`# EOF`, counters typed without `_total`) and wants its metric
//! families registered in code, while these arrive at run time, named by the functions.
//!
//! Names are `deltacast_` and the EMF name in snake case; counters end in `_total`, and
//! both kinds carry the unit (`deltacast_fanout_lag_milliseconds`), except for `Count`
//! and `None`. Labels are the dimensions. The local runtime's own figures per function
//! follow, under `deltacast_local_`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::figures::FunctionFigures;
use super::registry::{MetricsSnapshot, SeriesKey};
use super::unit::Unit;

/// The page's `Content-Type`.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// What every name starts with.
const PREFIX: &str = "deltacast_";

/// The local runtime's figures: name (within `deltacast_local_..._total`), help, value.
type LocalFigure = (&'static str, &'static str, fn(&FunctionFigures) -> u64);
const LOCAL_FIGURES: [LocalFigure; 5] = [
    (
        "invocations",
        "Invocations the local runtime was asked for, per function (including those that never ran).",
        |figures| figures.invocations,
    ),
    (
        "errors",
        "Invocations that ended in a handler or init error, per function (local runtime).",
        |figures| figures.errors,
    ),
    (
        "timeouts",
        "Invocations stopped at the function's timeout, per function (local runtime).",
        |figures| figures.timeouts,
    ),
    (
        "crashes",
        "Invocations whose process exited or was killed before answering, per function (local runtime).",
        |figures| figures.crashes,
    ),
    (
        "throttles",
        "Invocations that waited too long for an instance and got Lambda's throttling error, per function (local runtime).",
        |figures| figures.throttles,
    ),
];

/// A family of series under one name.
struct Family {
    help: String,
    samples: Samples,
}

/// A family's series, by their rendered labels (`a="x",b="y"`).
enum Samples {
    Counters(BTreeMap<String, f64>),
    Histograms {
        bounds: &'static [f64],
        series: BTreeMap<String, Buckets>,
    },
}

/// A histogram's figures, merged over the series that render alike.
#[derive(Default)]
struct Buckets {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

/// The page for `metrics` and the runtime's `functions` figures.
pub fn render(metrics: &MetricsSnapshot, functions: &[(String, FunctionFigures)]) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (key, value) in &metrics.counters {
        let name = format!("{}_total", base_name(&key.name, key.unit));
        let family = families.entry(name).or_insert_with(|| Family {
            help: help(key, "the sum of its values"),
            samples: Samples::Counters(BTreeMap::new()),
        });
        // A name that two kinds of metric render to keeps its first kind only.
        if let Samples::Counters(series) = &mut family.samples {
            *series.entry(label_pairs(&key.labels, &[])).or_default() += value;
        }
    }
    for (key, histogram) in &metrics.histograms {
        let bounds = key.unit.buckets();
        let family = families
            .entry(base_name(&key.name, key.unit))
            .or_insert_with(|| Family {
                help: help(key, "every value observed"),
                samples: Samples::Histograms {
                    bounds,
                    series: BTreeMap::new(),
                },
            });
        if let Samples::Histograms {
            bounds: family_bounds,
            series,
        } = &mut family.samples
            && *family_bounds == bounds
        {
            let merged = series.entry(label_pairs(&key.labels, &["le"])).or_default();
            merged.buckets.resize(bounds.len() + 1, 0);
            for (total, count) in merged.buckets.iter_mut().zip(&histogram.buckets) {
                *total += count;
            }
            merged.count += histogram.count;
            merged.sum += histogram.sum;
        }
    }

    let mut page = String::new();
    for (name, family) in &families {
        write_family(&mut page, name, family);
    }
    for (figure, help, value) in LOCAL_FIGURES {
        let name = format!("{PREFIX}local_{figure}_total");
        header(&mut page, &name, help, "counter");
        for (function, figures) in functions {
            let labels = label_pairs(&[("function".to_owned(), function.clone())], &[]);
            let _ = writeln!(page, "{name}{{{labels}}} {}", value(figures));
        }
    }
    let name = format!("{PREFIX}local_emf_documents_total");
    header(
        &mut page,
        &name,
        "Valid EMF documents the functions printed.",
        "counter",
    );
    let _ = writeln!(page, "{name} {}", metrics.documents);
    let name = format!("{PREFIX}local_emf_invalid_lines_total");
    header(
        &mut page,
        &name,
        "Function stdout lines meant as EMF documents that broke the specification (each logged as a warning).",
        "counter",
    );
    let _ = writeln!(page, "{name} {}", metrics.invalid_lines);
    page
}

fn write_family(page: &mut String, name: &str, family: &Family) {
    match &family.samples {
        Samples::Counters(series) => {
            header(page, name, &family.help, "counter");
            for (labels, value) in series {
                let _ = writeln!(page, "{name}{} {}", braced(labels), number(*value));
            }
        }
        Samples::Histograms { bounds, series } => {
            header(page, name, &family.help, "histogram");
            for (labels, histogram) in series {
                let separator = if labels.is_empty() { "" } else { "," };
                let mut cumulative = 0;
                let les = bounds.iter().map(|bound| number(*bound));
                for (le, count) in les
                    .chain(std::iter::once("+Inf".to_owned()))
                    .zip(&histogram.buckets)
                {
                    cumulative += count;
                    let _ = writeln!(
                        page,
                        "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {cumulative}"
                    );
                }
                let labels = braced(labels);
                let _ = writeln!(page, "{name}_sum{labels} {}", number(histogram.sum));
                let _ = writeln!(page, "{name}_count{labels} {}", histogram.count);
            }
        }
    }
}

fn header(page: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(page, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(page, "# TYPE {name} {kind}");
}

/// The HELP text of an EMF metric.
fn help(key: &SeriesKey, what: &str) -> String {
    format!(
        "{} ({}) from the functions' EMF lines: {what}.",
        key.name, key.unit
    )
}

/// `deltacast_` and the snake-case name, with the unit's suffix unless it is there already.
fn base_name(name: &str, unit: Unit) -> String {
    let mut base = format!("{PREFIX}{}", snake_case(name));
    let suffix = unit.suffix();
    if !suffix.is_empty() && !base.ends_with(&format!("_{suffix}")) {
        base.push('_');
        base.push_str(suffix);
    }
    base
}

/// `FanoutLag` → `fanout_lag`, `HTTPRequests` → `http_requests`; anything but ASCII
/// letters and digits becomes one `_`.
pub(super) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut snake = String::with_capacity(name.len() + 4);
    let underscore = |snake: &mut String| {
        if !snake.is_empty() && !snake.ends_with('_') {
            snake.push('_');
        }
    };
    for (at, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            underscore(&mut snake);
            continue;
        }
        if c.is_ascii_uppercase() && at > 0 {
            let before = chars[at - 1];
            let next_lower = chars.get(at + 1).is_some_and(char::is_ascii_lowercase);
            if before.is_ascii_lowercase()
                || before.is_ascii_digit()
                || (before.is_ascii_uppercase() && next_lower)
            {
                underscore(&mut snake);
            }
        }
        snake.push(c.to_ascii_lowercase());
    }
    let snake = snake.trim_end_matches('_');
    if snake.is_empty() {
        "unnamed".to_owned()
    } else {
        snake.to_owned()
    }
}

/// `key="value",...` with label names made valid and values escaped; a key in `reserved`
/// (a histogram's `le`) and one that starts with `__` become `exported_<key>`, and a key
/// that repeats one before it (once made valid) is left out.
fn label_pairs(labels: &[(String, String)], reserved: &[&str]) -> String {
    let mut names: Vec<String> = Vec::with_capacity(labels.len());
    let mut pairs = String::new();
    for (key, value) in labels {
        let mut name: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if reserved.contains(&name.as_str()) || name.starts_with("__") {
            name.insert_str(0, "exported_");
        }
        if names.contains(&name) {
            continue;
        }
        if !pairs.is_empty() {
            pairs.push(',');
        }
        let _ = write!(pairs, "{name}=\"{}\"", escape_label_value(value));
        names.push(name);
    }
    pairs
}

fn braced(pairs: &str) -> String {
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{pairs}}}")
    }
}

/// A label value as the format wants it: `\`, `"` and line feeds escaped.
fn escape_label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// HELP text as the format wants it: `\` and line feeds escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Go's float syntax, which Rust's shortest form matches, and `+Inf`.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{FANOUT_LINE, PUBLISHES_LINE};
    use super::super::registry::Registry;
    use super::*;

    /// The page for `lines`, with no function figures.
    fn page(lines: &[&str]) -> String {
        let registry = Registry::new();
        for line in lines {
            registry.capture(line);
        }
        render(&registry.snapshot(), &[])
    }

    #[test]
    fn the_contracts_lines_render_as_a_counter_per_series_and_histograms_with_units() {
        let text = page(&[PUBLISHES_LINE, FANOUT_LINE, FANOUT_LINE]);
        let emf: String = text
            .lines()
            .take_while(|line| !line.contains("deltacast_local_"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            emf,
            r#"# HELP deltacast_batch_size BatchSize (Count) from the functions' EMF lines: every value observed.
# TYPE deltacast_batch_size histogram
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="1"} 0
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="2"} 0
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="5"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="10"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="20"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="50"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="100"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="200"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="500"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="1000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="2000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="5000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="10000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="100000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="1000000"} 2
deltacast_batch_size_bucket{function="fanout",service="deltacast",le="+Inf"} 2
deltacast_batch_size_sum{function="fanout",service="deltacast"} 8
deltacast_batch_size_count{function="fanout",service="deltacast"} 2
# HELP deltacast_deliveries_total Deliveries (Count) from the functions' EMF lines: the sum of its values.
# TYPE deltacast_deliveries_total counter
deltacast_deliveries_total{function="fanout",service="deltacast"} 80
# HELP deltacast_fanout_lag_milliseconds FanoutLag (Milliseconds) from the functions' EMF lines: every value observed.
# TYPE deltacast_fanout_lag_milliseconds histogram
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="1"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="2.5"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="5"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="10"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="25"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="50"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="100"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="250"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="500"} 0
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="1000"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="2500"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="5000"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="10000"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="30000"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="60000"} 2
deltacast_fanout_lag_milliseconds_bucket{function="fanout",service="deltacast",le="+Inf"} 2
deltacast_fanout_lag_milliseconds_sum{function="fanout",service="deltacast"} 1624
deltacast_fanout_lag_milliseconds_count{function="fanout",service="deltacast"} 2
# HELP deltacast_publishes_total Publishes (Count) from the functions' EMF lines: the sum of its values.
# TYPE deltacast_publishes_total counter
deltacast_publishes_total{function="message",outcome="ok",service="deltacast"} 3
"#
        );
    }

    #[test]
    fn the_runtimes_own_figures_follow_per_function() {
        let registry = Registry::new();
        registry.capture(r#"{"_aws":{"Timestamp":1}}"#);
        let functions = [
            (
                "FanoutFunction".to_owned(),
                FunctionFigures {
                    invocations: 7,
                    errors: 1,
                    timeouts: 2,
                    crashes: 3,
                    throttles: 4,
                },
            ),
            (
                "MessageFunction".to_owned(),
                FunctionFigures {
                    invocations: 12,
                    ..FunctionFigures::default()
                },
            ),
        ];
        let text = render(&registry.snapshot(), &functions);
        for line in [
            "# TYPE deltacast_local_invocations_total counter",
            r#"deltacast_local_invocations_total{function="FanoutFunction"} 7"#,
            r#"deltacast_local_invocations_total{function="MessageFunction"} 12"#,
            r#"deltacast_local_errors_total{function="FanoutFunction"} 1"#,
            r#"deltacast_local_timeouts_total{function="FanoutFunction"} 2"#,
            r#"deltacast_local_crashes_total{function="FanoutFunction"} 3"#,
            r#"deltacast_local_throttles_total{function="FanoutFunction"} 4"#,
            r#"deltacast_local_throttles_total{function="MessageFunction"} 0"#,
            "# TYPE deltacast_local_emf_invalid_lines_total counter",
            "deltacast_local_emf_invalid_lines_total 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        let line = PUBLISHES_LINE.replace(r#""outcome":"ok""#, r#""outcome":"a\\b \"q\"\nc""#);
        let text = page(&[&line]);
        assert!(
            text.contains(r#"outcome="a\\b \"q\"\nc""#),
            "backslash, quote and line feed escaped:\n{text}"
        );
    }

    #[test]
    fn label_names_are_made_valid_and_le_is_left_to_the_buckets() {
        let line = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"n","Dimensions":[["le","my-key","9x","my_key"]],"Metrics":[{"Name":"Lag","Unit":"Seconds"}]}]},"le":"a","my-key":"b","9x":"c","my_key":"d","Lag":[0.2]}"#;
        let text = page(&[line]);
        assert!(
            text.contains(
                r#"deltacast_lag_seconds_bucket{_9x="c",exported_le="a",my_key="b",le="0.25"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn names_are_snake_case() {
        for (name, snake) in [
            ("FanoutLag", "fanout_lag"),
            ("HttpRequests", "http_requests"),
            ("HTTPRequests", "http_requests"),
            ("ConnectionsOpened", "connections_opened"),
            ("P99Latency", "p99_latency"),
            ("request.time ms", "request_time_ms"),
            ("already_snake", "already_snake"),
            ("Été", "t"),
            ("!!!", "unnamed"),
        ] {
            assert_eq!(snake_case(name), snake, "{name}");
        }
    }

    #[test]
    fn a_unit_already_in_the_name_is_not_repeated_and_counts_have_no_suffix() {
        assert_eq!(
            base_name("LatencyMilliseconds", Unit::Milliseconds),
            "deltacast_latency_milliseconds"
        );
        assert_eq!(base_name("Frames", Unit::Count), "deltacast_frames");
        assert_eq!(base_name("Frames", Unit::None), "deltacast_frames");
        assert_eq!(base_name("Sent", Unit::Bytes), "deltacast_sent_bytes");
        assert_eq!(
            base_name("Rate", Unit::CountPerSecond),
            "deltacast_rate_per_second"
        );
    }

    #[test]
    fn help_text_escapes_backslashes_and_line_feeds() {
        assert_eq!(escape_help("a\\b\nc"), "a\\\\b\\nc");
    }

    #[test]
    fn numbers_use_prometheus_spelling() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(2.5), "2.5");
        assert_eq!(number(0.001), "0.001");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }
}
