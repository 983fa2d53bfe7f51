//! The summary's figures as a table: (figure, value, baseline) rows, printed on stdout
//! and written as `summary.md`, each figure beside what it is measured against.

use serde_json::Value;

use crate::{POLL_INTERVAL_MS, designs, hot_channel, http_api, live_state};

/// A figure as the table shows it: whole numbers without decimals, others with two.
fn figure(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.2}"),
        None => "-".to_owned(),
    }
}

/// The summary's figures as (figure, value, baseline) rows.
pub fn rows(summary: &Value) -> Vec<(String, String, String)> {
    let f = figure;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if let Some(startup) = summary.get("startup") {
        let hello = &startup["hello_init_ms_p50"];
        if let Some(functions) = startup["functions"].as_object() {
            for (name, m) in functions {
                rows.push((
                    format!("init_ms_p50 {name}"),
                    f(&m["init_ms_p50"]),
                    format!("hello_init_ms_p50 {}", f(hello)),
                ));
                rows.push((
                    format!("peak_rss_kb {name}"),
                    f(&m["peak_rss_kb"]),
                    "goal ≤ 30720".into(),
                ));
                rows.push((
                    format!("zip_bytes {name}"),
                    f(&m["zip_bytes"]),
                    "goal ≤ 6291456".into(),
                ));
            }
        }
    }
    if let Some(fanout) = summary.get("fanout") {
        rows.push((
            "fanout_msgs_per_s".into(),
            f(&fanout["fanout_msgs_per_s"]),
            format!("mgmt_max_msgs_per_s {}", f(&fanout["mgmt_max_msgs_per_s"])),
        ));
        rows.push((
            "ws_send_msgs_per_s".into(),
            f(&fanout["ws_send_msgs_per_s"]),
            "the ceiling".into(),
        ));
        rows.push((
            "fanout_10k_p99_ms".into(),
            f(&fanout["fanout_10k_p99_ms"]),
            "goal ≤ 2000".into(),
        ));
    }
    if let Some(latency) = summary.get("latency") {
        rows.push((
            "e2e_p50_ms".into(),
            f(&latency["e2e_p50_ms"]),
            format!("poll interval {POLL_INTERVAL_MS} ms"),
        ));
        rows.push((
            "e2e_p99_ms".into(),
            f(&latency["e2e_p99_ms"]),
            format!("poll interval {POLL_INTERVAL_MS} ms"),
        ));
    }
    if let Some(cost) = summary.get("cost") {
        let capacity = &cost["capacity"];
        rows.push((
            "wcu_per_publish".into(),
            f(&capacity["wcu_per_publish"]),
            format!("pricing rule {}", f(&capacity["expected_wcu_per_publish"])),
        ));
        rows.push((
            "rcu_per_delivery".into(),
            f(&capacity["rcu_per_delivery"]),
            "".into(),
        ));
        rows.push((
            "usd_per_million_deliveries".into(),
            f(&cost["usd_per_million_deliveries"]["total"]),
            format!(
                "scan-every-connection {}",
                f(&cost["scan_every_connection_usd_per_million_deliveries"]["total"])
            ),
        ));
    }
    if let Some(section) = summary.get("publish_designs") {
        rows.extend(designs::rows(section));
    }
    if let Some(churn) = summary.get("churn") {
        // A figure of a failed run means little: the verdict comes first.
        let failures = churn["failures"]
            .as_array()
            .map(|f| {
                f.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        rows.push((
            "churn_run".into(),
            if churn["ok"] == Value::Bool(true) {
                "OK".into()
            } else {
                "FAILED".into()
            },
            if failures.is_empty() {
                "must be OK".into()
            } else {
                failures
            },
        ));
        // `lost` counts only seqs no path delivered: `history` can hide a lost push from
        // it, so the paths come first, and missed pushes have a row of their own.
        for (path, note) in [
            ("pushed", "by the fan-out, live"),
            ("catch_up", "on resubscribe, by reconnecting clients"),
            ("history", "after a gap; 0 expected"),
        ] {
            rows.push((
                format!("delivered_{path}"),
                f(&churn[format!("delivered_{path}").as_str()]),
                note.into(),
            ));
        }
        rows.push((
            "missed_pushes".into(),
            f(&churn["missed_pushes"]),
            "must be 0 (owed pushes only history delivered)".into(),
        ));
        rows.push((
            "lost".into(),
            f(&churn["lost"]),
            "must be 0 (seqs no path delivered)".into(),
        ));
        rows.push((
            "duplicates_after_dedupe".into(),
            f(&churn["duplicates_after_dedupe"]),
            "must be 0".into(),
        ));
    }
    rows.extend(hot_channel::rows(summary, &figure));
    rows.extend(live_state::rows(summary, &figure));
    rows.extend(http_api::rows(summary, &figure));
    rows
}

pub fn print_table(rows: &[(String, String, String)]) {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(10);
    println!("{:width$}  {:>12}  baseline", "figure", "value");
    for (name, value, baseline) in rows {
        println!("{name:width$}  {value:>12}  {baseline}");
    }
}

pub fn markdown_table(rows: &[(String, String, String)]) -> String {
    let mut table = String::from("| figure | value | baseline / goal |\n|---|---:|---|\n");
    for (name, value, baseline) in rows {
        table.push_str(&format!("| `{name}` | {value} | {baseline} |\n"));
    }
    table
}
