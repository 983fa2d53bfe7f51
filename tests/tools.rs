//! The local tools as a user runs them: `deltacast-local serve` (`make dev`) and
//! `deltacast-local token` (`make token`) honour one `JWT_SECRET`; `token` refuses a user
//! it cannot make a channel for; and a function whose configuration is wrong reports a
//! readable init error through the Runtime API instead of just exiting.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use deltacast_local::invoke::{Invoke, InvokeError};
use deltacast_local::runtime::{Function, FunctionConfig, FunctionFaults};
use deltacast_local::stack::{DEV_JWT_SECRET, dev_token};
use deltacast_tests::stack::binaries_dir;
use deltacast_tests::{dynamodb_endpoint, unique_name, workspace_root};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A secret other than the development one (HS256 wants 32 bytes).
const CUSTOM_SECRET: &str = "a-custom-jwt-secret-for-this-test-only-0123";

/// `deltacast-local` as `make dev` and `make token` run it, with `JWT_SECRET` set.
fn local_tool(secret: &str) -> Command {
    let mut command = Command::new(binaries_dir().join("deltacast-local"));
    command
        .current_dir(workspace_root())
        .env("JWT_SECRET", secret)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    command
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// Starts `deltacast-local serve` on a free port and waits for its banner.
async fn serve(secret: &str) -> (Child, u16) {
    let port = free_port();
    let table = unique_name("tools");
    let mut child = local_tool(secret)
        .args(["serve", "--port", &port.to_string(), "--table", &table])
        .arg("--dynamodb")
        .arg(dynamodb_endpoint())
        .arg("--functions-dir")
        .arg(binaries_dir())
        .arg("--on-failure-file")
        .arg(std::env::temp_dir().join(format!("{table}.jsonl")))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("deltacast-local starts (cargo build --workspace --bins first)");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("deltacast is running") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(banner, Ok(true), "deltacast-local serve did not start");
    // Keep reading the banner so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, port)
}

/// The HTTP status of a handshake with `token` (101 when accepted).
async fn handshake(port: u16, token: &str) -> u16 {
    let url = format!("ws://127.0.0.1:{port}/local?token={token}");
    match tokio_tungstenite::connect_async(url).await {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(err) => panic!("handshake failed without an HTTP status: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_dev_and_make_token_share_the_jwt_secret_variable() {
    // GIVEN `make dev` started with JWT_SECRET set to a custom secret
    let (mut stack, port) = serve(CUSTOM_SECRET).await;

    // WHEN `make token` runs in the same environment
    let output = local_tool(CUSTOM_SECRET)
        .args(["token", "--user", "bob"])
        .output()
        .await
        .expect("deltacast-local token runs");
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).expect("UTF-8");

    // THEN its token is accepted, and one signed with the default secret is refused
    assert_eq!(handshake(port, token.trim()).await, 101, "custom token");
    let default = dev_token(DEV_JWT_SECRET, "bob", Duration::from_secs(600));
    assert_eq!(handshake(port, &default).await, 401, "default token");
    stack.kill().await.expect("the stack stops");
}

#[tokio::test]
async fn make_token_refuses_a_user_that_cannot_name_a_channel() {
    for user in ["bad user", ""] {
        // WHEN `make token USER='bad user'` (or `USER=`) runs
        let output = local_tool(DEV_JWT_SECRET)
            .args(["token", "--user", user])
            .output()
            .await
            .expect("deltacast-local token runs");

        // THEN it fails, naming the field and the rule, and prints no token
        assert!(!output.status.success(), "{user:?}");
        assert!(output.stdout.is_empty(), "{user:?}");
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("--user"), "{error}");
        assert!(
            error.contains("must be 1 to 123 characters of A-Z a-z 0-9 _ - : . @ (no spaces)"),
            "{error}"
        );
    }
}

/// The real function `binary` with `env`, under the local Runtime API.
fn function(binary: &str, env: &[(&str, &str)]) -> Function {
    let mut variables: BTreeMap<String, String> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    variables.insert("AWS_REGION".into(), "us-east-1".into());
    Function::new(FunctionConfig {
        name: format!("{binary}-misconfigured"),
        binary: binaries_dir().join(binary),
        env: variables,
        timeout: Duration::from_secs(20),
        memory_mb: 128,
        max_instances: 1,
        faults: FunctionFaults::default(),
    })
}

/// Invokes `function` once and returns its init error.
async fn init_error(function: Function) -> (String, String) {
    let outcome = function.invoke(serde_json::json!({})).await;
    function.shutdown().await;
    match outcome {
        Err(InvokeError::Init {
            error_type,
            error_message,
        }) => (error_type, error_message),
        other => panic!("expected an init error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_function_without_its_table_reports_a_readable_init_error() {
    // GIVEN `connect` without TABLE_NAME
    let connect = function("connect", &[]);

    // WHEN it is invoked
    let (error_type, message) = init_error(connect).await;

    // THEN the invocation fails with the init error it reported, naming the variable
    assert_eq!(error_type, "Runtime.ConfigError");
    assert_eq!(
        message,
        "the function cannot start: environment variable TABLE_NAME is required but not set"
    );
}

#[tokio::test]
async fn an_authorizer_with_a_short_secret_reports_the_rule_it_broke() {
    // GIVEN the authorizer with a 5-byte JWT_SECRET
    let authorizer = function("authorizer", &[("JWT_SECRET", "short")]);

    // WHEN it is invoked
    let (error_type, message) = init_error(authorizer).await;

    // THEN the init error names the variable and the rule, not Rust debug text
    assert_eq!(error_type, "Runtime.ConfigError");
    assert_eq!(
        message,
        "the function cannot start: environment variable JWT_SECRET is invalid: must be at least 32 bytes, got 5"
    );
}
