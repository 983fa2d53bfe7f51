//! `GET /metrics` over real HTTP: the gateway (no functions, no DynamoDB) serving a
//! metrics page whose registry the test fills with the metrics contract's EMF lines, as
//! the runtime fills it from the functions' stdout.

use std::sync::Arc;

use deltacast_local::gateway::{Gateway, GatewayConfig};
use deltacast_local::metrics::{Capture, FunctionFigures, MetricsPage, Registry};
use support::{Answer, NoFunction, no_routes};

mod support;

/// The contract's line of the message function.
const PUBLISHES_LINE: &str = r#"{"_aws":{"Timestamp":1796217683420,"CloudWatchMetrics":[{"Namespace":"deltacast","Dimensions":[["service","function","outcome"]],"Metrics":[{"Name":"Publishes","Unit":"Count"}]}]},"service":"deltacast","function":"message","outcome":"ok","Publishes":3}"#;

/// A gateway on loopback serving `page` (if any) at `/metrics`.
async fn gateway(page: Option<MetricsPage>) -> Gateway<NoFunction> {
    let config = GatewayConfig {
        metrics: page,
        ..GatewayConfig::default()
    };
    Gateway::start("127.0.0.1:0".parse().expect("address"), no_routes(), config)
        .await
        .expect("gateway starts")
}

/// Sends `method path` to `gateway`.
async fn request(gateway: &Gateway<NoFunction>, method: &str, path: &str) -> Answer {
    support::request(gateway.address(), method, path, None, &[], b"").await
}

#[tokio::test]
async fn the_page_serves_the_functions_metrics_and_the_runtimes_figures_as_prometheus_text() {
    // GIVEN a registry that took the message function's line, and a runtime figure
    let registry = Arc::new(Registry::new());
    assert_eq!(registry.capture(PUBLISHES_LINE), Capture::Recorded);
    let page = MetricsPage::new(registry, || {
        vec![(
            "MessageFunction".to_owned(),
            FunctionFigures {
                invocations: 12,
                ..FunctionFigures::default()
            },
        )]
    });
    let gateway = gateway(Some(page)).await;

    // WHEN a scraper asks for /metrics
    let answer = request(&gateway, "GET", "/metrics").await;
    let (status, body) = (answer.status, &answer.body);
    let content_type = answer.header("content-type").unwrap_or_default();

    // THEN it gets both, in the text format's version 0.0.4
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    for line in [
        "# TYPE deltacast_publishes_total counter",
        r#"deltacast_publishes_total{function="message",outcome="ok",service="deltacast"} 3"#,
        r#"deltacast_local_invocations_total{function="MessageFunction"} 12"#,
        "deltacast_local_emf_invalid_lines_total 0",
    ] {
        assert!(
            body.lines().any(|l| l == line),
            "{line} missing from\n{body}"
        );
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_page_answers_get_only() {
    let gateway = gateway(Some(MetricsPage::new(Arc::new(Registry::new()), Vec::new))).await;
    let Answer { status, .. } = request(&gateway, "POST", "/metrics").await;
    assert_eq!(status, 405);
    let Answer { status, body, .. } = request(&gateway, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_a_page_metrics_is_a_stage_like_any_other() {
    let gateway = gateway(None).await;
    let Answer { status, body, .. } = request(&gateway, "GET", "/metrics").await;
    assert_ne!(status, 200, "no page: {body}");
    assert!(!body.contains("deltacast_"), "{body}");
    gateway.shutdown().await;
}
