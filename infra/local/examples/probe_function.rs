//! A Lambda function steered by its event, for tests of the local runtime and of the
//! things that invoke functions (the stream trigger, the gateway).
//!
//! Keys of the event, checked in this order; several can be combined:
//! - `{"log": "text"}`: prints `text` to stdout and `text (stderr)` to stderr first.
//! - `{"exit": code}`: `std::process::exit(code)` mid-invocation.
//! - `{"panic": true}`: panics in the handler.
//! - `{"sleep_ms": n}`: sleeps `n` ms before answering.
//! - `{"error": "msg"}`: the handler fails with error type `ProbeError` and message `msg`.
//! - `{"stream": {"chunks": n, "every_ms": m}}`: answers in streaming mode: status 201,
//!   header `x-probe: stream`, then `chunk 1\n` to `chunk n\n`, one every `m` ms.
//! - otherwise it answers `{"pid": <process id>}`, plus `"echo": X` for `{"echo": X}`,
//!   `"context": {..}` (request id, deadline, ARN, trace id) for `{"context": true}`, and
//!   `"getenv": {NAME: value or null}` for `{"getenv": ["NAME", ..]}`.
//!
//! Environment: `PROBE_INIT_FAIL=1` makes init fail (main returns an error before the
//! runtime starts); `PROBE_ENV_NAME=NAME` adds `"env": <value of NAME or null>` to every
//! response.

use std::time::Duration;

use std::convert::Infallible;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use futures::stream::{self, BoxStream, StreamExt};
use lambda_runtime::{
    Diagnostic, Error, FunctionResponse, LambdaEvent, MetadataPrelude, StreamResponse, service_fn,
};
use serde_json::{Map, Value, json};

/// What the probe answers with: a JSON document, or a stream of chunks.
type Answer = FunctionResponse<Value, BoxStream<'static, Result<Bytes, Infallible>>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::var("PROBE_INIT_FAIL").as_deref() == Ok("1") {
        return Err("probe init failed (PROBE_INIT_FAIL=1)".into());
    }
    let env = std::env::var("PROBE_ENV_NAME")
        .ok()
        .map(|name| std::env::var(name).ok());
    let env = &env;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(event, env).await
    }))
    .await
}

async fn handle(
    event: LambdaEvent<Value>,
    env: &Option<Option<String>>,
) -> Result<Answer, Diagnostic> {
    let (payload, context) = event.into_parts();
    if let Some(text) = payload.get("log").and_then(Value::as_str) {
        println!("{text}");
        eprintln!("{text} (stderr)");
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    if payload.get("panic") == Some(&Value::Bool(true)) {
        panic!("probe panic requested");
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(message) = payload.get("error").and_then(Value::as_str) {
        return Err(Diagnostic {
            error_type: "ProbeError".to_owned(),
            error_message: message.to_owned(),
        });
    }
    if let Some(stream) = payload.get("stream") {
        let chunks = stream["chunks"].as_u64().unwrap_or(1);
        let every = Duration::from_millis(stream["every_ms"].as_u64().unwrap_or(0));
        let body = stream::iter(1..=chunks)
            .then(move |n| async move {
                tokio::time::sleep(every).await;
                Ok::<_, Infallible>(Bytes::from(format!("chunk {n}\n")))
            })
            .boxed();
        let mut headers = HeaderMap::new();
        headers.insert("x-probe", HeaderValue::from_static("stream"));
        return Ok(FunctionResponse::StreamingResponse(StreamResponse {
            metadata_prelude: MetadataPrelude {
                status_code: StatusCode::CREATED,
                headers,
                cookies: Vec::new(),
            },
            stream: body,
        }));
    }

    let mut response = Map::new();
    response.insert("pid".to_owned(), json!(std::process::id()));
    if let Some(echo) = payload.get("echo") {
        response.insert("echo".to_owned(), echo.clone());
    }
    if let Some(value) = env {
        response.insert("env".to_owned(), json!(value));
    }
    if payload.get("context") == Some(&Value::Bool(true)) {
        response.insert(
            "context".to_owned(),
            json!({
                "request_id": context.request_id,
                "deadline_ms": context.deadline,
                "invoked_function_arn": context.invoked_function_arn,
                "xray_trace_id": context.xray_trace_id,
                "function_name": context.env_config.function_name,
                "memory_mb": context.env_config.memory,
            }),
        );
    }
    if let Some(names) = payload.get("getenv").and_then(Value::as_array) {
        let values: Map<String, Value> = names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| (name.to_owned(), json!(std::env::var(name).ok())))
            .collect();
        response.insert("getenv".to_owned(), Value::Object(values));
    }
    Ok(FunctionResponse::BufferedResponse(Value::Object(response)))
}
