//! `GET /metrics` over real HTTP: the gateway (no functions, no DynamoDB) serving a
//! metrics page whose registry the test fills with the metrics contract's EMF lines, as
//! the runtime fills it from the functions' stdout.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deltacast_local::gateway::{Gateway, GatewayConfig, Routes};
use deltacast_local::invoke::{Invoke, InvokeError};
use deltacast_local::metrics::{Capture, FunctionFigures, MetricsPage, Registry};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only against hangs: every step here takes milliseconds.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// The contract's line of the message function.
const PUBLISHES_LINE: &str = r#"{"_aws":{"Timestamp":1796217683420,"CloudWatchMetrics":[{"Namespace":"deltacast","Dimensions":[["service","function","outcome"]],"Metrics":[{"Name":"Publishes","Unit":"Count"}]}]},"service":"deltacast","function":"message","outcome":"ok","Publishes":3}"#;

/// The page serves metrics; it invokes no function.
#[derive(Clone)]
struct NoFunction;

impl Invoke for NoFunction {
    fn invoke(&self, _: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send {
        std::future::ready(Err(InvokeError::Function {
            error_type: "NoFunction".into(),
            error_message: "no function runs in these tests".into(),
        }))
    }
}

/// A gateway on loopback serving `page` (if any) at `/metrics`.
async fn gateway(page: Option<MetricsPage>) -> Gateway<NoFunction> {
    let config = GatewayConfig {
        metrics: page,
        ..GatewayConfig::default()
    };
    let routes = Routes {
        selection_expression: "$request.body.action".into(),
        routes: BTreeMap::new(),
        authorizer: None,
        identity_sources: Vec::new(),
        http: None,
    };
    Gateway::start("127.0.0.1:0".parse().expect("address"), routes, config)
        .await
        .expect("gateway starts")
}

/// Sends `method path` and returns the status, the headers (lower-cased) and the body.
async fn request(gateway: &Gateway<NoFunction>, method: &str, path: &str) -> (u16, String, String) {
    tokio::time::timeout(HANG_GUARD, async {
        let mut stream = TcpStream::connect(gateway.address())
            .await
            .expect("connect");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            gateway.address()
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|status| status.parse().ok())
            .expect("a status");
        (status, head.to_ascii_lowercase(), body.to_owned())
    })
    .await
    .expect("the gateway answers")
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
    let (status, head, body) = request(&gateway, "GET", "/metrics").await;

    // THEN it gets both, in the text format's version 0.0.4
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
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
    let (status, _, _) = request(&gateway, "POST", "/metrics").await;
    assert_eq!(status, 405);
    let (status, _, body) = request(&gateway, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_a_page_metrics_is_a_stage_like_any_other() {
    let gateway = gateway(None).await;
    let (status, _, body) = request(&gateway, "GET", "/metrics").await;
    assert_ne!(status, 200, "no page: {body}");
    assert!(!body.contains("deltacast_"), "{body}");
    gateway.shutdown().await;
}
