//! Starting the stack against DynamoDB Local, which the test run starts outside the tests
//! (`infra/dynamodb-local/dynamodb-local start 8123`) and names in
//! `DELTACAST_TEST_DYNAMODB`: a start that fails leaves nothing behind.

use std::net::SocketAddr;
use std::path::PathBuf;

use deltacast_local::stack::{Stack, StackError, StackOptions, local_sdk_config};
use deltacast_local::template::StackSpec;
use support::{dynamodb_endpoint, root};

mod support;

/// A folder with an empty file for each function binary: enough to pass the start's
/// check that the binaries exist, not to run any.
fn fake_binaries(spec: &StackSpec, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for function in spec.functions.values() {
        std::fs::write(dir.join(&function.binary), b"").expect("fake binary");
    }
    dir
}

/// A port nothing listens on right now.
async fn free_address() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_leaves_nothing_listening() {
    // GIVEN the template's table, but made without its stream, so the trigger cannot start
    let spec = StackSpec::load(&root().join("template.yaml")).expect("template");
    let name = format!("stack-{:016x}", rand::random::<u64>());
    let dynamodb = aws_sdk_dynamodb::Client::new(&local_sdk_config(&dynamodb_endpoint()).await);
    let mut table = spec.table.clone();
    table.stream_view_type = None;
    table.create(&dynamodb, &name).await.expect("table created");
    let mut options = StackOptions::new(root());
    options.bind = free_address().await;
    options.dynamodb_endpoint = dynamodb_endpoint();
    options.table_name = name.clone();
    options.functions_dir = fake_binaries(&spec, &name);

    // WHEN the stack starts
    let started = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        Stack::start(options.clone()),
    )
    .await
    .expect("start finished within the hang guard");

    // THEN it fails, and the gateway's port is free
    match started {
        Err(StackError::DynamoDb { message, .. }) => {
            assert!(message.contains("no stream"), "{message}")
        }
        Err(other) => panic!("expected the missing stream, got {other}"),
        Ok(_) => panic!("the stack started without a stream"),
    }
    assert!(
        tokio::net::TcpStream::connect(options.bind).await.is_err(),
        "nothing listens on {}",
        options.bind
    );
    let _ = dynamodb.delete_table().table_name(&name).send().await;
    let _ = std::fs::remove_dir_all(&options.functions_dir);
}

/// Options whose start fails at the template, the first step after the bind check, so a
/// start that got past the check binds nothing (tests never listen beyond loopback).
fn options_binding(bind: &str, parameters: &[(&str, &str)]) -> StackOptions {
    let mut options = StackOptions::new(root());
    options.bind = bind.parse().expect("address");
    options.template = root().join("no-such-template.yaml");
    options.dynamodb_endpoint = "http://127.0.0.1:9".into();
    for (name, value) in parameters {
        options
            .parameters
            .insert((*name).to_owned(), (*value).to_owned());
    }
    options
}

#[tokio::test]
async fn the_development_secret_is_never_served_beyond_loopback() {
    let own = ("JwtSecret", "a-secret-of-my-own-that-is-32-bytes-long");
    let key_set = ("JwtAlgorithm", "RS256");
    for bind in ["0.0.0.0:0", "[::]:0"] {
        let options = options_binding(bind, &[]);
        assert!(options.uses_dev_secret());
        match Stack::start(options).await {
            Err(StackError::Exposure(refused)) => {
                let message = refused.to_string();
                assert!(message.contains("Set JWT_SECRET"), "{message}");
                assert!(message.contains("at least 32 bytes"), "{message}");
            }
            Err(other) => panic!("{bind}: refused for another reason: {other}"),
            Ok(_) => panic!("{bind}: a stack with the development secret started"),
        }
    }
    for (bind, parameters) in [
        ("127.0.0.1:0", vec![]),
        ("[::1]:0", vec![]),
        ("0.0.0.0:0", vec![own]),
        ("0.0.0.0:0", vec![key_set]),
    ] {
        let options = options_binding(bind, &parameters);
        assert!(
            matches!(Stack::start(options).await, Err(StackError::Template(_))),
            "{bind} with {parameters:?} gets past the bind check"
        );
    }
}
