//! The Lambda Invoke API of the local stack, as `sam local start-lambda` serves it: every
//! function invoked with every file of `events/` through the AWS SDK for Rust's Lambda
//! client and through boto3 (`tests/invoke_boto3.py`), answering as on Lambda; a function
//! error; an `Event` invocation that runs after its 202; a log tail.

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::{InvocationType, LogType};
use base64::Engine;
use deltacast_local::stack::local_sdk_config;
use deltacast_tests::stack::{TestStack, eventually, start_stack};
use deltacast_tests::{all_items, workspace_root};
use serde_json::Value;

/// The function an event file is for: its name's first word (events/README.md).
fn function_of(file: &str) -> &'static str {
    match file.split(['-', '.']).next() {
        Some("authorizer") => "AuthorizerFunction",
        Some("connect") => "ConnectFunction",
        Some("disconnect") => "DisconnectFunction",
        Some("message") => "MessageFunction",
        Some("fanout") => "FanoutFunction",
        Some("sequencer") => "SequencerFunction",
        Some("http") => "HttpFunction",
        _ => panic!("events/{file} names no function"),
    }
}

/// Where an event comes in a connection's life: the message events act as the
/// connection `connect.json` stores and `disconnect.json` removes; subscribed, the
/// connection would be pruned by the fan-out of the next publish (it has no socket), so
/// `message-subscribe.json` comes last of them.
fn order(file: &str) -> u8 {
    match file.split(['-', '.']).next() {
        Some("authorizer") => 0,
        Some("connect") => 1,
        Some("message") if file == "message-subscribe.json" => 3,
        Some("message") => 2,
        Some("sequencer") => 4,
        Some("fanout") => 5,
        Some("http") => 6,
        _ => 7,
    }
}

/// Every `events/*.json`, by name, in the order of a connection's life.
fn events() -> Vec<(String, Vec<u8>)> {
    let folder = workspace_root().join("events");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&folder)
        .expect("events/")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    files.sort_by(|(a, _), (b, _)| (order(a), a).cmp(&(order(b), b)));
    assert!(
        files.len() >= 10,
        "an event per function and route: {files:?}"
    );
    files
}

/// Whether `payload` is what `function` answers when all went well.
fn answered_as_its_function_answers(function: &str, payload: &Value) -> bool {
    match function {
        "AuthorizerFunction" => payload["policyDocument"]["Statement"][0]["Effect"] == "Allow",
        "ConnectFunction" | "DisconnectFunction" | "MessageFunction" => {
            payload["statusCode"] == 200
        }
        "FanoutFunction" | "SequencerFunction" => {
            payload["batchItemFailures"] == Value::Array(Vec::new())
        }
        // A streamed response gathered whole: the prelude, eight NUL bytes, the body.
        "HttpFunction" => payload.as_str().is_some_and(|text| {
            text.split_once("\0\0\0\0\0\0\0\0")
                .and_then(|(prelude, _)| serde_json::from_str::<Value>(prelude).ok())
                .is_some_and(|prelude| prelude["statusCode"] == 200)
        }),
        _ => false,
    }
}

/// Whether the table holds a delta.
async fn has_a_delta(t: &TestStack) -> bool {
    all_items(&t.store).await.iter().any(|item| {
        item.get("pk")
            .and_then(|pk| pk.as_s().ok())
            .is_some_and(|pk| pk.starts_with("h#"))
    })
}

async fn lambda(t: &TestStack) -> aws_sdk_lambda::Client {
    let config = local_sdk_config(&format!("http://{}", t.stack.address)).await;
    aws_sdk_lambda::Client::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_invokes_every_function_with_every_event() {
    let t = start_stack().await;
    let client = lambda(&t).await;
    for (file, payload) in events() {
        let function = function_of(&file);
        let answer = client
            .invoke()
            .function_name(function)
            .payload(Blob::new(payload))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let raw = answer
            .payload()
            .map(|p| p.as_ref().to_vec())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(answer.status_code(), 200, "{file}: {text}");
        assert_eq!(answer.function_error(), None, "{file}: {text}");
        assert_eq!(answer.executed_version(), Some("$LATEST"), "{file}");
        let payload = serde_json::from_slice(&raw).unwrap_or(Value::String(text.to_string()));
        assert!(
            answered_as_its_function_answers(function, &payload),
            "{file}: {function} answered {payload}"
        );
    }
    // The events did what they say: message-publish.json stored its delta `m1`, and
    // message-update.json its ops.
    let items = all_items(&t.store).await;
    let stored = |pk_prefix: &str, id: &str| {
        items.iter().any(|item| {
            let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
            text("pk").is_some_and(|pk| pk.starts_with(pk_prefix))
                && text("id").as_deref() == Some(id)
        })
    };
    assert!(
        stored("h#chat:lobby", "m1"),
        "message-publish.json stored nothing"
    );
    assert!(
        stored("o#state:poll", "vote:alice"),
        "message-update.json stored nothing"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_an_event_invocation_and_a_log_tail_answer_as_lambda_does() {
    let t = start_stack().await;
    let client = lambda(&t).await;

    // A number is no WebSocket event: the function fails, the API still answers 200.
    let answer = client
        .invoke()
        .function_name("MessageFunction")
        .payload(Blob::new("42"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status_code(), 200);
    assert_eq!(answer.function_error(), Some("Unhandled"));
    let error: Value = serde_json::from_slice(answer.payload().unwrap().as_ref()).unwrap();
    assert!(error["errorMessage"].is_string(), "{error}");

    // An Event invocation is answered 202 at once, and runs: its publish (from the
    // connection connect.json stores) is stored.
    let connect = std::fs::read(workspace_root().join("events/connect.json")).unwrap();
    let answer = client
        .invoke()
        .function_name("ConnectFunction")
        .payload(Blob::new(connect))
        .send()
        .await
        .expect("connected");
    assert_eq!(answer.function_error(), None);
    let publish = std::fs::read(workspace_root().join("events/message-publish.json")).unwrap();
    let answer = client
        .invoke()
        .function_name("MessageFunction")
        .invocation_type(InvocationType::Event)
        .payload(Blob::new(publish))
        .send()
        .await
        .expect("accepted");
    assert_eq!(answer.status_code(), 202);
    let stored = eventually(Duration::from_secs(20), || has_a_delta(&t)).await;
    assert!(stored, "the Event invocation's publish was never stored");

    // A tail: the invocation's own log, base64, at most 4 KB.
    let ping = std::fs::read(workspace_root().join("events/message-ping.json")).unwrap();
    let answer = client
        .invoke()
        .function_name("MessageFunction")
        .log_type(LogType::Tail)
        .payload(Blob::new(ping))
        .send()
        .await
        .expect("answered");
    let tail = base64::engine::general_purpose::STANDARD
        .decode(answer.log_result().expect("a log result"))
        .expect("base64");
    assert!(tail.len() <= 4096);
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains("START RequestId:"), "{tail}");
    assert!(tail.contains("REPORT RequestId:"), "{tail}");

    // An unknown function is ResourceNotFoundException.
    let error = client
        .invoke()
        .function_name("NoSuchFunction")
        .send()
        .await
        .expect_err("no such function");
    assert!(
        error.into_service_error().is_resource_not_found_exception(),
        "ResourceNotFoundException"
    );
    t.shutdown().await;
}

/// The Python interpreter of `make tools` (`.local/venv`), which has boto3.
fn python() -> PathBuf {
    workspace_root().join(".local/venv/bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_invokes_every_function_with_every_event() {
    let python = python();
    assert!(
        python.exists(),
        "{} is missing: `make tools` installs it (make test does)",
        python.display()
    );
    let t = start_stack().await;
    let output = tokio::process::Command::new(python)
        .arg(workspace_root().join("tests/invoke_boto3.py"))
        .arg(format!("http://{}", t.stack.address))
        .arg(workspace_root().join("events"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), output)
        .await
        .expect("boto3's run ends")
        .expect("python runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{printed}");
    assert!(printed.contains("ok   message-publish.json"), "{printed}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_cli_invokes_a_function_as_the_readme_shows() {
    let aws = workspace_root().join(".local/venv/bin/aws");
    assert!(
        aws.exists(),
        "{} is missing: `make tools` installs it (make test does)",
        aws.display()
    );
    let t = start_stack().await;
    let out = std::env::temp_dir().join(format!("invoke-{}.json", std::process::id()));
    let run = tokio::process::Command::new(aws)
        .current_dir(workspace_root())
        .args(["lambda", "invoke", "--endpoint-url"])
        .arg(format!("http://{}", t.stack.address))
        .args(["--no-sign-request", "--region", "us-east-1"])
        .args(["--function-name", "MessageFunction"])
        .args(["--payload", "file://events/message-publish.json"])
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the CLI ends")
        .expect("the CLI runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{printed}");
    let summary: Value = serde_json::from_str(&printed).expect("the CLI prints JSON");
    assert_eq!(summary["StatusCode"], 200, "{printed}");
    let answer: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let _ = std::fs::remove_file(&out);
    t.shutdown().await;
}
