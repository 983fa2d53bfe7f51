//! The `hot_channel` section as rows of the printed table (figure, value, baseline or
//! goal): the 1:100 comparison, the sustained rate beside DynamoDB Local's write ceiling,
//! the overload's answers, frames per delta, and the figures of other sections that show
//! regressions of the publish path (quiet-channel latency, WCU per publish).

use serde_json::Value;

/// The section's rows; `f` formats a number as the rest of the table does.
pub fn rows(summary: &Value, f: &dyn Fn(&Value) -> String) -> Vec<(String, String, String)> {
    let Some(hot) = summary.get("hot_channel") else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    let mut row = |name: &str, value: String, baseline: String| {
        rows.push((format!("hot_{name}"), value, baseline));
    };
    let offered = format!("offered {}/s", f(&hot["offered_per_second"]));
    for (key, label) in [("hundred_channels", "100ch"), ("one_channel", "1ch")] {
        let run = &hot[key];
        for (figure, baseline) in [
            ("acked_per_second", offered.as_str()),
            ("delivery_p50_ms", ""),
            ("delivery_p99_ms", ""),
            ("timeouts", "must be 0"),
            ("internal", "must be 0"),
        ] {
            let name = format!("{label}_{}", figure.replace("per_second", "per_s"));
            row(&name, f(&run[figure]), baseline.into());
        }
    }
    row(
        "acked_ratio_1_vs_100",
        f(&hot["acked_ratio_1_vs_100"]),
        "goal ≥ 0.9".into(),
    );
    row(
        "p99_ratio_1_vs_100",
        f(&hot["p99_ratio_1_vs_100"]),
        "goal ≤ 2".into(),
    );
    let sustained = &hot["sustained"];
    row(
        "1ch_sustained_per_s",
        f(&sustained["rate_per_second"]),
        format!(
            "dynamodb_local_write_items_per_s {}",
            f(&sustained["dynamodb_local_write_ceiling"]["items_per_second"])
        ),
    );
    let overload = &hot["overload"];
    if let Some(reason) = overload["skipped"].as_str() {
        row("overload_run", "SKIPPED".into(), reason.into());
    } else {
        let figures = &overload["figures"];
        row(
            "overload_run",
            if overload["clean"] == Value::Bool(true) {
                "OK".into()
            } else {
                "FAILED".into()
            },
            format!(
                "offered {}/s, channel limit {}/s; must be OK",
                f(&overload["offered_per_second"]),
                f(&overload["channel_limit_per_second"])
            ),
        );
        row(
            "overload_rate_limited",
            f(&figures["refused_by_code"]["rate_limited"]),
            "the only refusal expected".into(),
        );
        let zeros = [
            ("overload_other_refusals", &overload["other_refusals"]),
            ("overload_timeouts", &figures["timeouts"]),
            ("overload_lost", &figures["lost"]),
            ("overload_duplicates", &figures["duplicates"]),
            ("overload_out_of_order", &figures["out_of_order"]),
        ];
        for (name, value) in zeros {
            row(name, f(value), "must be 0".into());
        }
    }
    row(
        "coalesce_frames_per_delta",
        f(&hot["coalesce"]["frames_per_delta"]),
        "goal ≤ 0.2 (100 subscribers, 50 deltas/s)".into(),
    );
    let references = &hot["references"];
    row(
        "wcu_per_publish",
        f(&references["wcu_per_publish"]),
        "goal ≤ 4 (from cost)".into(),
    );
    row(
        "quiet_e2e_p50_ms",
        f(&references["quiet_e2e_p50_ms"]),
        "goal ≤ before + one stream poll (from latency)".into(),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: &Value) -> String {
        v.as_f64().map_or("-".into(), |x| format!("{x}"))
    }

    #[test]
    fn rows_name_every_figure_and_mark_missing_ones() {
        let summary = json!({"hot_channel": {
            "offered_per_second": 200.0,
            "hundred_channels": {"acked_per_second": 200.0, "delivery_p99_ms": 900.0, "timeouts": 0, "internal": 0},
            "one_channel": {"acked_per_second": 124.0, "delivery_p99_ms": 41000.0, "timeouts": 5455, "internal": 4},
            "acked_ratio_1_vs_100": 0.62,
            "p99_ratio_1_vs_100": null,
            "sustained": {"rate_per_second": 100.0, "dynamodb_local_write_ceiling": {"items_per_second": 3000.0}},
            "overload": {"clean": true, "offered_per_second": 200.0, "channel_limit_per_second": 100, "other_refusals": 0,
                         "figures": {"refused_by_code": {"rate_limited": 7}, "timeouts": 0, "lost": 0, "duplicates": 0, "out_of_order": 0}},
            "coalesce": {"frames_per_delta": 0.1},
            "references": {"wcu_per_publish": 3.0, "quiet_e2e_p50_ms": null},
        }});
        let table = rows(&summary, &f);
        let get = |name: &str| {
            table
                .iter()
                .find(|r| r.0 == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .clone()
        };
        assert_eq!(get("hot_1ch_timeouts").1, "5455");
        assert_eq!(get("hot_acked_ratio_1_vs_100").1, "0.62");
        assert_eq!(get("hot_p99_ratio_1_vs_100").1, "-");
        assert_eq!(get("hot_overload_run").1, "OK");
        assert_eq!(get("hot_overload_rate_limited").1, "7");
        assert!(get("hot_1ch_sustained_per_s").2.contains("3000"));
        assert_eq!(get("hot_coalesce_frames_per_delta").1, "0.1");
        assert_eq!(get("hot_quiet_e2e_p50_ms").1, "-");
        assert!(rows(&json!({}), &f).is_empty());
    }

    #[test]
    fn a_skipped_overload_says_why() {
        let summary = json!({"hot_channel": {"overload": {"skipped": "no rate was sustained"}}});
        let table = rows(&summary, &f);
        let overload = table.iter().find(|r| r.0 == "hot_overload_run").unwrap();
        assert_eq!(overload.1, "SKIPPED");
        assert!(!table.iter().any(|r| r.0 == "hot_overload_lost"));
    }
}
