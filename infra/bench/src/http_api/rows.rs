//! The `http_api` section as rows of the printed table (figure, value, baseline).

use serde_json::Value;

/// The section's rows; `f` formats a number as the rest of the table does.
pub fn rows(summary: &Value, f: &dyn Fn(&Value) -> String) -> Vec<(String, String, String)> {
    let Some(http) = summary.get("http_api") else {
        return Vec::new();
    };
    let publish = &http["publish_ms"];
    let delivery = &http["delivery_ms"];
    let delivered = &http["delivered"];
    let cost = &http["cost_per_subscriber_hour"];
    [
        (
            "http_publish_p50_ms",
            f(&publish["http"]["p50"]),
            format!("websocket {}", f(&publish["websocket"]["p50"])),
        ),
        (
            "http_publish_p99_ms",
            f(&publish["http"]["p99"]),
            format!("websocket {}", f(&publish["websocket"]["p99"])),
        ),
        (
            "sse_delivery_p50_ms",
            f(&delivery["sse"]["p50"]),
            format!("websocket {}", f(&delivery["websocket"]["p50"])),
        ),
        (
            "sse_delivery_p99_ms",
            f(&delivery["sse"]["p99"]),
            format!("websocket {}", f(&delivery["websocket"]["p99"])),
        ),
        (
            "sse_delivered",
            f(&delivered["sse"]),
            format!(
                "expected {} (websocket {})",
                f(&delivered["expected_per_path"]),
                f(&delivered["websocket"])
            ),
        ),
        (
            "sse_subscriber_hour_usd",
            dollars(&cost["sse_usd"]),
            format!(
                "websocket idle {} ({}× less)",
                dollars(&cost["websocket_idle_usd"]),
                f(&cost["sse_over_websocket_idle"])
            ),
        ),
        (
            "sse_break_even_messages_per_hour",
            f(&cost["break_even_messages_per_hour"]),
            "beyond, SSE is the cheaper".to_owned(),
        ),
    ]
    .into_iter()
    .map(|(name, value, baseline)| (name.to_owned(), value, baseline))
    .collect()
}

/// Dollars with the digits a fraction of a cent needs (the table rounds to two places).
fn dollars(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| "-".to_owned(), |usd| format!("${usd:.6}"))
}
