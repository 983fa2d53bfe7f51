//! Metrics through the local stack: every function's Embedded Metric Format lines, read by
//! the stack and served at `/metrics`, move for the action that should move them, and
//! every line the functions printed was valid EMF.

use std::time::Duration;

use deltacast_local::gateway::ManagementFaults;
use deltacast_local::runtime::FunctionFaults;
use deltacast_tests::http::Http;
use deltacast_tests::stack::{TestStack, eventually, start_stack, start_stack_with};
use serde_json::{Value, json};

/// How long a metric may take to show: the function flushes at the end of its invocation,
/// and the stream functions run a poll later.
const WITHIN: Duration = Duration::from_secs(20);

/// One scrape of `/metrics`.
struct Scrape(String);

impl Scrape {
    async fn of(stack: &TestStack) -> Self {
        let answer = Http::new(stack.stack.address).get("/metrics", None).await;
        assert_eq!(answer.status, 200);
        assert!(
            answer.header("content-type").starts_with("text/plain"),
            "{}",
            answer.header("content-type")
        );
        match answer.body {
            Value::String(text) => Self(text),
            other => panic!("not Prometheus text: {other}"),
        }
    }

    /// The sum of every sample of `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
                (metric == name
                    && labels
                        .iter()
                        .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\""))))
                .then(|| value.parse::<f64>().ok())?
            })
            .sum()
    }
}

/// Waits until `name{labels}` reaches `at_least`; fails naming the metric otherwise.
async fn reaches(stack: &TestStack, name: &str, labels: &[(&str, &str)], at_least: f64) {
    let reached = eventually(WITHIN, || async {
        Scrape::of(stack).await.value(name, labels) >= at_least
    })
    .await;
    if !reached {
        let scrape = Scrape::of(stack).await;
        let last = scrape.value(name, labels);
        panic!(
            "{name}{labels:?} stayed at {last}, below {at_least}:\n{}",
            scrape.0
        );
    }
}

/// `name{labels}` is exactly `expected` (once everything that moves it has settled).
async fn exactly(stack: &TestStack, name: &str, labels: &[(&str, &str)], expected: f64) {
    let scrape = Scrape::of(stack).await;
    assert_eq!(
        scrape.value(name, labels),
        expected,
        "{name}{labels:?}:\n{}",
        scrape.0
    );
}

/// Every EMF line the functions printed was valid, and there were some.
async fn every_line_was_emf(stack: &TestStack) {
    let scrape = Scrape::of(stack).await;
    assert_eq!(
        scrape.value("deltacast_local_emf_invalid_lines_total", &[]),
        0.0,
        "{}",
        scrape.0
    );
    assert!(scrape.value("deltacast_local_emf_documents_total", &[]) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_socket_and_http_action_moves_its_metric() {
    let t = start_stack().await;
    let message = ("function", "message");

    // Handshakes: refused by reason, then a connection opened and closed.
    assert_eq!(t.connect_url(&t.stack.url).await.err().unwrap().status, 401);
    assert_eq!(t.connect("not-a-jwt").await.err().unwrap().status, 401);
    let bad_claims = t.token("alice", json!({"chat:*": ["fly"]}));
    assert_eq!(t.connect(&bad_claims).await.err().unwrap().status, 403);
    for reason in ["missing_token", "invalid_token", "denied"] {
        let labels = [("function", "authorizer"), ("reason", reason)];
        reaches(&t, "deltacast_handshakes_refused_total", &labels, 1.0).await;
    }
    let brief = t.connect_as("brief").await;
    reaches(&t, "deltacast_connections_opened_total", &[], 1.0).await;
    brief.close().await;
    reaches(&t, "deltacast_connections_closed_total", &[], 1.0).await;

    // Publishes by outcome, deliveries to a subscriber, and the fan-out's batches.
    let every = json!({"*": ["subscribe", "publish", "history", "presence"]});
    let mut reader = t.connect(&t.token("reader", every.clone())).await.unwrap();
    reader
        .request(
            json!({"action": "subscribe", "channel": "chat:m"}),
            "subscribed",
        )
        .await;
    let mut writer = t.connect(&t.token("writer", every)).await.unwrap();
    let publish = json!({"action": "publish", "channel": "chat:m", "id": "m1", "data": 1});
    writer.request(publish.clone(), "ack").await;
    writer.request(publish, "ack").await;
    let conflict =
        json!({"action": "publish", "channel": "chat:m", "id": "m2", "data": 2, "expectSeq": 0});
    assert_eq!(writer.request(conflict, "error").await["code"], "conflict");
    writer.send_text("not json").await;
    assert_eq!(writer.next_of("error").await["code"], "bad_request");
    reader.next_of("delta").await;
    for (outcome, n) in [("ok", 1.0), ("duplicate", 1.0), ("conflict", 1.0)] {
        let labels = [message, ("outcome", outcome)];
        reaches(&t, "deltacast_publishes_total", &labels, n).await;
    }
    let labels = [message, ("action", "publish"), ("outcome", "ok")];
    reaches(&t, "deltacast_requests_total", &labels, 2.0).await;
    let labels = [message, ("action", "unparsed"), ("outcome", "bad_request")];
    reaches(&t, "deltacast_requests_total", &labels, 1.0).await;
    let fanout = [("function", "fanout")];
    reaches(&t, "deltacast_deliveries_total", &fanout, 1.0).await;
    reaches(&t, "deltacast_frames_total", &fanout, 1.0).await;
    reaches(&t, "deltacast_fanout_lag_milliseconds_count", &fanout, 1.0).await;
    reaches(&t, "deltacast_batch_size_count", &fanout, 1.0).await;

    // Live state: an update, its patch; presence: an enter, its patch.
    reader
        .request(
            json!({"action": "subscribe", "channel": "state:m", "presence": true}),
            "state",
        )
        .await;
    let update = json!({"action": "update", "channel": "state:m", "id": "u1", "ops": [{"op": "inc", "path": "/n", "by": 1}]});
    writer.request(update, "updated").await;
    reaches(
        &t,
        "deltacast_state_updates_total",
        &[message, ("outcome", "ok")],
        1.0,
    )
    .await;
    reaches(&t, "deltacast_state_patches_total", &fanout, 1.0).await;
    // The sequencer sees a quiet channel's publishes only when busy; it folds every op.
    let sequencer = [("function", "sequencer")];
    reaches(&t, "deltacast_batch_size_count", &sequencer, 1.0).await;
    writer
        .request(
            json!({"action": "presence", "channel": "state:m", "op": "enter", "id": "p1"}),
            "presence",
        )
        .await;
    reaches(&t, "deltacast_presence_patches_total", &fanout, 1.0).await;

    // The HTTP API: requests by route and status, its publishes by outcome.
    let http = Http::new(t.stack.address);
    let token = t.token("shop", json!({"*": ["publish", "subscribe", "history"]}));
    let body = json!({"id": "h1", "data": {"paid": true}});
    let answer = http
        .post("/v1/channels/chat:m/messages", Some(&token), &body)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(http.get("/v1/nowhere", Some(&token)).await.status, 404);
    let route = ("route", "POST /v1/channels/{channel}/messages");
    reaches(
        &t,
        "deltacast_http_requests_total",
        &[route, ("status", "200")],
        1.0,
    )
    .await;
    let unrouted = [("route", "unrouted"), ("status", "404")];
    reaches(&t, "deltacast_http_requests_total", &unrouted, 1.0).await;
    let labels = [("function", "http"), ("outcome", "ok")];
    reaches(&t, "deltacast_publishes_total", &labels, 1.0).await;

    // Counted once each: the retry was a duplicate, not a second publish.
    for outcome in ["ok", "duplicate", "conflict"] {
        let labels = [message, ("outcome", outcome)];
        exactly(&t, "deltacast_publishes_total", &labels, 1.0).await;
    }

    // The stack's own figures, as Lambda's metrics would be.
    let labels = [("function", "MessageFunction")];
    reaches(&t, "deltacast_local_invocations_total", &labels, 5.0).await;
    every_line_was_emf(&t).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_retried_failed_and_gone_move_their_metrics() {
    // Once the stack is up, every post fails with 500: a reply is tried twice, then fails.
    let t = start_stack_with(|o| {
        o.env.insert("PUSH_RETRY_ATTEMPTS".into(), "2".into());
    })
    .await;
    let mut client = t.connect_as("alice").await;
    t.stack.gateway().set_faults(ManagementFaults {
        error_rate: 1.0,
        ..ManagementFaults::default()
    });
    client.send(json!({"action": "ping", "id": "p"})).await;
    let message = ("function", "message");
    reaches(&t, "deltacast_posts_retried_total", &[message], 1.0).await;
    reaches(&t, "deltacast_posts_failed_total", &[message], 1.0).await;
    every_line_was_emf(&t).await;
    t.shutdown().await;

    // `$disconnect` crashes every time: a closed connection keeps its subscription, and
    // the next delta's post finds it gone.
    // One publish per channel every 20 seconds, no burst beyond it.
    let t = start_stack_with(|o| {
        o.function_faults = FunctionFaults {
            crash_rate: 1.0,
            only: vec!["DisconnectFunction".into()],
        };
        o.env
            .insert("CHANNEL_RATE_LIMIT_PER_SECOND".into(), "0.05".into());
        o.env.insert("CHANNEL_RATE_LIMIT_BURST".into(), "1".into());
    })
    .await;
    let mut ghost = t.connect_as("ghost").await;
    ghost
        .request(
            json!({"action": "subscribe", "channel": "chat:g"}),
            "subscribed",
        )
        .await;
    ghost.close().await;
    let mut writer = t.connect_as("writer").await;
    let publish = json!({"action": "publish", "channel": "chat:g", "id": "g1", "data": 1});
    writer.request(publish, "ack").await;
    // The channel's one publish of these 20 seconds is taken: the next is refused.
    let again = json!({"action": "publish", "channel": "chat:g", "id": "g2", "data": 2});
    assert_eq!(writer.request(again, "error").await["code"], "rate_limited");
    let labels = [("function", "message"), ("outcome", "rate_limited")];
    reaches(&t, "deltacast_publishes_total", &labels, 1.0).await;
    let fanout = [("function", "fanout")];
    reaches(&t, "deltacast_connections_pruned_total", &fanout, 1.0).await;

    let labels = [("function", "DisconnectFunction")];
    reaches(&t, "deltacast_local_crashes_total", &labels, 1.0).await;
    every_line_was_emf(&t).await;
    t.shutdown().await;
}
