//! `redrive` end to end, and the Invoke API it replays through: the whole stack in-process
//! with the real function binaries (`cargo build --workspace --bins` first; `make test`
//! does) against DynamoDB Local, which the test run starts outside the tests
//! (`infra/dynamodb-local/dynamodb-local start 8123`) and names in
//! `DELTACAST_TEST_DYNAMODB`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltacast_local::gateway::ManagementFaults;
use deltacast_local::redrive::{Outcome, RedriveOptions, redrive};
use deltacast_local::stack::{Stack, StackOptions, dev_token, local_sdk_config};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Answer, dynamodb_endpoint, root};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;

/// Hang guard of every wait; a passing test stays well within it.
const WAIT: Duration = Duration::from_secs(60);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `target/<profile>`, where `cargo build --workspace --bins` put the function binaries.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A stack of the test's own: its table, its on-failure file, fast polling, and a
/// fan-out that tries each post once, so a failing Management API fails its records at
/// once and the trigger gives up after the template's retries (about 7 s).
async fn start_stack() -> Stack {
    let name = format!("redrive-{:016x}", rand::random::<u64>());
    let mut options = StackOptions::new(root());
    options.bind = "127.0.0.1:0".parse().expect("address");
    options.dynamodb_endpoint = dynamodb_endpoint();
    options.table_name = name.clone();
    options.functions_dir = binaries_dir();
    options.on_failure_path = std::env::temp_dir().join(format!("{name}.jsonl"));
    options.poll_interval = Duration::from_millis(50);
    options.max_instances = 2;
    options.env.insert("PUSH_RETRY_ATTEMPTS".into(), "1".into());
    options.env.insert("PUSH_RETRY_BASE_MS".into(), "1".into());
    Stack::start(options)
        .await
        .expect("the stack starts (build the functions first: cargo build --workspace --bins)")
}

async fn stop(stack: Stack, on_failure: &Path) {
    let table = stack.table_name.clone();
    stack.shutdown().await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&local_sdk_config(&dynamodb_endpoint()).await);
    let _ = dynamodb.delete_table().table_name(table).send().await;
    let _ = std::fs::remove_file(on_failure);
}

fn token(stack: &Stack, user: &str) -> String {
    dev_token(&stack.jwt_secret, user, Duration::from_secs(3600))
}

/// Opens a connection as `user` and subscribes it to `channel`.
async fn subscriber(stack: &Stack, user: &str, channel: &str) -> Socket {
    let url = format!("{}?token={}", stack.url, token(stack, user));
    let (mut socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake within the hang guard")
        .expect("handshake accepted");
    let subscribe = json!({"action": "subscribe", "channel": channel, "id": "s"});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .expect("sent");
    next_of(&mut socket, "subscribed").await;
    socket
}

/// The next text frame whose `type` is `kind`, skipping others.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("a {kind} frame within the hang guard"))
            .unwrap_or_else(|| panic!("socket closed waiting for {kind}"))
            .expect("a frame");
        if let Message::Text(text) = frame {
            let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
            if frame["type"] == kind {
                return frame;
            }
        }
    }
}

/// A JSON `POST` over a fresh connection, with more header lines (`name`, `value`).
async fn post(address: SocketAddr, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let headers: Vec<_> = [("Content-Type", "application/json")]
        .into_iter()
        .chain(headers.iter().copied())
        .collect();
    support::request(address, "POST", path, None, &headers, body.as_bytes()).await
}

/// The on-failure file's lines, parsed.
fn on_failure_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redrive_replays_a_batch_the_fanout_gave_up_on_and_the_subscriber_gets_the_delta() {
    // GIVEN a subscriber, and a Management API that fails every post
    let stack = start_stack().await;
    let on_failure = std::env::temp_dir().join(format!("{}.jsonl", stack.table_name));
    let channel = "chat:redrive";
    let mut alice = subscriber(&stack, "alice", channel).await;
    stack.gateway().set_faults(ManagementFaults {
        error_rate: 1.0,
        ..ManagementFaults::default()
    });

    // WHEN a message is published (over HTTP: its answer needs no Management API)
    let published = post(
        stack.address,
        &format!("/v1/channels/{channel}/messages"),
        &[("Authorization", &format!("Bearer {}", token(&stack, "bob")))],
        r#"{"id":"m1","data":{"n":1}}"#,
    )
    .await;
    assert_eq!(published.status, 200, "{}", published.body);

    // THEN the fan-out gives up on its batch: one line, and no delta for the subscriber
    let deadline = tokio::time::Instant::now() + WAIT;
    while on_failure_lines(&on_failure).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the trigger gave up within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines = on_failure_lines(&on_failure);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let function_arn = lines[0]["requestContext"]["functionArn"]
        .as_str()
        .expect("functionArn");
    assert!(
        function_arn.ends_with(":function:FanoutFunction"),
        "{function_arn}"
    );
    assert_eq!(
        lines[0]["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), alice.next())
            .await
            .is_err(),
        "no frame reached the subscriber while every post failed"
    );

    // WHEN the Management API works again and the failures are redriven
    stack.gateway().set_faults(ManagementFaults::default());
    let options = RedriveOptions {
        file: on_failure.clone(),
        endpoint: format!("http://{}", stack.address),
        dynamodb_endpoint: dynamodb_endpoint(),
        template: root().join("template.yaml"),
    };
    let report = redrive(&options).await.expect("redrive runs");

    // THEN the line is replayed, the subscriber gets the delta and the file is empty
    assert_eq!((report.replayed(), report.kept()), (1, 0), "{report:?}");
    let entry = &report.entries[0];
    assert_eq!(entry.outcome, Outcome::Replayed { records: 1 }, "{entry}");
    assert_eq!(
        entry.entry.as_ref().map(|e| e.function.as_str()),
        Some("FanoutFunction")
    );
    let delta = next_of(&mut alice, "delta").await;
    assert_eq!(delta["channel"], channel);
    assert_eq!(delta["seq"], 1);
    assert_eq!(delta["data"], json!({"n": 1}));
    assert_eq!(std::fs::read_to_string(&on_failure).expect("the file"), "");

    // AND a second redrive has nothing to do
    let again = redrive(&options).await.expect("redrive runs");
    assert!(again.entries.is_empty(), "{again:?}");
    assert!(
        again.summary().contains("nothing to replay"),
        "{}",
        again.summary()
    );

    let _ = alice.close(None).await;
    stop(stack, &on_failure).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_invoke_api_runs_a_real_function_and_answers_as_lambda_does() {
    let stack = start_stack().await;
    let on_failure = std::env::temp_dir().join(format!("{}.jsonl", stack.table_name));
    let invoke = |function: &str| format!("/2015-03-31/functions/{function}/invocations");

    // A batch with no records: the fan-out answers, without a function error.
    let ok = post(
        stack.address,
        &invoke("FanoutFunction"),
        &[],
        r#"{"Records":[]}"#,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.header("x-amz-function-error"), None, "{}", ok.body);
    assert_eq!(ok.header("x-amz-executed-version"), Some("$LATEST"));
    let batch_item_failures = &ok.json()["batchItemFailures"];
    assert!(
        batch_item_failures.is_null() || batch_item_failures == &json!([]),
        "{}",
        ok.body
    );

    // An event the fan-out cannot read: a function error, still 200.
    let arn = "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction";
    let failed = post(
        stack.address,
        &invoke(arn),
        &[("X-Amz-Invocation-Type", "RequestResponse")],
        r#"{"Records":"not a list"}"#,
    )
    .await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    assert_eq!(failed.header("x-amz-function-error"), Some("Unhandled"));
    let error = failed.json();
    assert!(
        error["errorType"].as_str().is_some_and(|t| !t.is_empty()),
        "{error}"
    );
    assert!(error["errorMessage"].is_string(), "{error}");

    // A function the template does not have.
    let missing = post(stack.address, &invoke("NoSuchFunction"), &[], "{}").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert_eq!(
        missing.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    assert_eq!(missing.json()["Type"], "User");
    assert!(
        missing.json()["Message"]
            .as_str()
            .is_some_and(|m| m.contains("function:NoSuchFunction")),
        "{}",
        missing.body
    );

    stop(stack, &on_failure).await;
}
