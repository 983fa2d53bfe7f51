//! The core of Lambda's Invoke API on the gateway's port:
//! `POST /2015-03-31/functions/{FunctionName}/invocations`, where `FunctionName` is a
//! function's logical id in the template (`FanoutFunction`) or an ARN that ends in
//! `:function:<id>`. The event runs through that function's own pool of processes, as a
//! stream trigger's or a route's would, so a tool can hand any function an event the way
//! Lambda would: `deltacast-local redrive` replays the stream batches the trigger gave up
//! on through it.
//!
//! Answers are Lambda's, so that the AWS CLI and SDKs can read them. By
//! `X-Amz-Invocation-Type`:
//! - `RequestResponse` (the default): the function's response with 200 and
//!   `X-Amz-Executed-Version: $LATEST`; a function error also with 200, but with
//!   `X-Amz-Function-Error: Unhandled` and the error as `{"errorType", "errorMessage"}`.
//!   With `X-Amz-Log-Type: Tail`, `X-Amz-Log-Result` holds the base64 of the last 4 KB of
//!   the invocation's log ([`crate::runtime`] says what it holds, and the rule that has
//!   every line the function wrote before it answered in it).
//! - `Event`: 202 with no body at once; the invocation runs in the background through the
//!   same pool, and a failure is logged (a warning with the function and the request id,
//!   which `x-amzn-RequestId` gave the caller). Unlike Lambda, which retries a failed
//!   asynchronous invocation twice and may send it to a destination or dead-letter queue,
//!   the local stack neither retries nor forwards it. Payloads up to Lambda's 1 MB.
//! - `DryRun`: 204 when the function exists; nothing runs.
//!
//! A failure of the API itself has its status, `x-amzn-ErrorType` and `{"Type",
//! "Message"}`: 400 `InvalidParameterValueException` for an invocation or log type Lambda
//! does not have, 400 `InvalidRequestContentException` for a payload that is not JSON, 404
//! `ResourceNotFoundException`, 413 `RequestTooLargeException`, 429
//! `TooManyRequestsException` when no instance became free, 500 `ServiceException`.
//! `x-amzn-RequestId` is the request id the function saw.
//!
//! Like the Management API it checks no signature, so it answers only this machine (see
//! `management::is_this_machine`): anyone who reaches it can run any function with any
//! event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use base64::Engine;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::management::is_this_machine;
use crate::invoke::{
    Invoke, InvokeError, InvokeOptions, LOCAL_REGION, Whole, WholeInvocation, local_function_arn,
};
use crate::runtime::uuid_v4;

/// The Invoke API's path (the Lambda API version `2015-03-31`).
pub(super) const PATH: &str = "/2015-03-31/functions/{function}/invocations";

/// Lambda's largest synchronous request payload.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// Lambda's largest asynchronous (`Event`) request payload.
const MAX_EVENT_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The functions the API can run, by logical id, and where the gateway listens.
struct InvokeApi<F> {
    functions: BTreeMap<String, F>,
    listening: SocketAddr,
}

/// The route: `POST` on [`PATH`] runs one of `functions` (logical id → function). Its
/// state is its own, so the gateway's router takes it whatever its own state is.
pub(super) fn invocations<F, S>(
    functions: BTreeMap<String, F>,
    listening: SocketAddr,
) -> MethodRouter<S>
where
    F: Invoke + Clone + 'static,
    S: Clone + Send + Sync + 'static,
{
    post(invoke::<F>).with_state(Arc::new(InvokeApi {
        functions,
        listening,
    }))
}

/// How the caller wants the function invoked (`X-Amz-Invocation-Type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InvocationType {
    /// Run it and answer with its response (the default).
    RequestResponse,
    /// Answer at once and run it in the background.
    Event,
    /// Only say whether it could run.
    DryRun,
}

impl InvocationType {
    /// Reads the header; `Err` says why it is not one of Lambda's.
    fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        match header(headers, "x-amz-invocation-type") {
            None | Some("RequestResponse") => Ok(Self::RequestResponse),
            Some("Event") => Ok(Self::Event),
            Some("DryRun") => Ok(Self::DryRun),
            Some(other) => Err(format!(
                "X-Amz-Invocation-Type {other:?} is not one of RequestResponse, Event, DryRun"
            )),
        }
    }
}

/// Whether the caller asks for the log's tail (`X-Amz-Log-Type: Tail`); `Err` says why
/// the header is not one of Lambda's values. Only `RequestResponse` invocations give one.
fn tail_asked(headers: &HeaderMap) -> Result<bool, String> {
    match header(headers, "x-amz-log-type") {
        None | Some("None") => Ok(false),
        Some("Tail") => Ok(true),
        Some(other) => Err(format!("X-Amz-Log-Type {other:?} is not one of None, Tail")),
    }
}

/// The header `name`, as text (a value that is not text reads as empty).
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap_or_default())
}

async fn invoke<F: Invoke + Clone + 'static>(
    State(api): State<Arc<InvokeApi<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = answer(&api, peer, &name, &uri, &headers, body).await;
    info!(
        function = %name,
        status = response.status().as_u16(),
        request_id = response
            .headers()
            .get("x-amzn-requestid")
            .and_then(|value| value.to_str().ok()),
        function_error = response
            .headers()
            .get("x-amz-function-error")
            .and_then(|value| value.to_str().ok()),
        "Invoke API"
    );
    response
}

async fn answer<F: Invoke + Clone + 'static>(
    api: &InvokeApi<F>,
    peer: SocketAddr,
    name: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    if !is_this_machine(peer.ip(), api.listening.ip()) {
        return api_error(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            "the local Invoke API checks no signature, so it answers only the machine the \
             stack runs on (loopback)",
        );
    }
    let (invocation, tail) = match InvocationType::from_headers(headers)
        .and_then(|invocation| Ok((invocation, tail_asked(headers)?)))
    {
        Ok(asked) => asked,
        Err(message) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValueException",
                &message,
            );
        }
    };
    let Some(function) = find(&api.functions, name, qualifier(uri).as_deref()) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            &format!("Function not found: {}", arn(name)),
        );
    };
    let (in_background, limit) = match invocation {
        InvocationType::DryRun => return empty(StatusCode::NO_CONTENT, &uuid_v4()),
        InvocationType::Event => (true, MAX_EVENT_PAYLOAD_BYTES),
        InvocationType::RequestResponse => (false, MAX_PAYLOAD_BYTES),
    };
    let Ok(payload) = to_bytes(body, limit).await else {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            &format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        );
    };
    // No payload is an empty event, as the CLI sends without `--payload`.
    let event = if payload.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice::<Value>(&payload) {
            Ok(event) => event,
            Err(err) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "InvalidRequestContentException",
                    &format!("Could not parse request body into json: {err}"),
                );
            }
        }
    };
    let request_id = uuid_v4();
    let options = InvokeOptions {
        request_id: Some(request_id.clone()),
        tail: tail && !in_background,
    };
    if in_background {
        let function = function.clone();
        tokio::spawn(run_event(function, name.to_owned(), event, options));
        return empty(StatusCode::ACCEPTED, &request_id);
    }
    // As Lambda does, a function that streams its response (the http function) may be
    // invoked whole: its stream is gathered and answered as the payload.
    invoked(
        function
            .invoke_whole(event, options, MAX_PAYLOAD_BYTES)
            .await,
        &request_id,
    )
}

/// Runs an asynchronous (`Event`) invocation to its end, and logs its failure; the local
/// stack neither retries it nor sends it to a destination.
async fn run_event<F: Invoke>(function: F, name: String, event: Value, options: InvokeOptions) {
    let request_id = options.request_id.clone().unwrap_or_default();
    let invoked = function.invoke_whole(event, options, MAX_PAYLOAD_BYTES);
    if let Err(error) = invoked.await.result {
        warn!(
            function = %name,
            %request_id,
            %error,
            "asynchronous invocation failed (the local stack does not retry it)"
        );
    }
}

/// The function `name` names: a logical id, or an ARN (full or partial,
/// `123456789012:function:Id`) ending in `:function:<id>`, with no qualifier but
/// `$LATEST` (the only version the local stack has).
fn find<'a, F>(
    functions: &'a BTreeMap<String, F>,
    name: &str,
    qualifier: Option<&str>,
) -> Option<&'a F> {
    let (id, version) = match name.split_once(":function:") {
        Some((_, rest)) => match rest.split_once(':') {
            Some((id, version)) => (id, Some(version)),
            None => (rest, None),
        },
        None => (name, None),
    };
    let latest = |version: Option<&str>| version.is_none_or(|v| v == "$LATEST");
    if !latest(version) || !latest(qualifier) {
        return None;
    }
    functions.get(id)
}

/// The `Qualifier` query parameter.
fn qualifier(uri: &Uri) -> Option<String> {
    form_urlencoded::parse(uri.query()?.as_bytes())
        .find(|(key, _)| key == "Qualifier")
        .map(|(_, value)| value.into_owned())
}

/// `name` as the ARN Lambda names in its "not found" message.
fn arn(name: &str) -> String {
    if name.starts_with("arn:") {
        name.to_owned()
    } else if name.contains(":function:") {
        format!("arn:aws:lambda:{LOCAL_REGION}:{name}")
    } else {
        local_function_arn(name)
    }
}

/// The answer to an invocation that ran: the response, or the function's error as
/// Lambda reports it (still 200), with the log's tail if there is one; 429 when
/// throttled, 500 when it could not run.
fn invoked(invocation: WholeInvocation, request_id: &str) -> Response {
    let WholeInvocation { result, log_tail } = invocation;
    let (body, function_error) = match result {
        Ok(Whole::Json(response)) => (response.to_string().into_bytes(), None),
        Ok(Whole::Streamed(written)) => (written, None),
        Err(InvokeError::Unavailable(message))
            if message.starts_with("TooManyRequestsException") =>
        {
            return api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                &message,
            );
        }
        Err(InvokeError::Unavailable(message)) => {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "ServiceException",
                &message,
            );
        }
        Err(error) => {
            let (error_type, error_message) = function_error(error);
            let body = json!({"errorType": error_type, "errorMessage": error_message});
            (body.to_string().into_bytes(), Some("Unhandled"))
        }
    };
    let mut response = (
        StatusCode::OK,
        [
            ("content-type", "application/json"),
            ("x-amz-executed-version", "$LATEST"),
        ],
        body,
    )
        .into_response();
    let headers = response.headers_mut();
    set(headers, "x-amzn-requestid", request_id);
    if let Some(kind) = function_error {
        headers.insert("x-amz-function-error", HeaderValue::from_static(kind));
    }
    if let Some(tail) = log_tail {
        let encoded = base64::engine::general_purpose::STANDARD.encode(tail);
        set(headers, "x-amz-log-result", &encoded);
    }
    response
}

/// The `errorType` and `errorMessage` of an invocation that ran and failed.
fn function_error(error: InvokeError) -> (String, String) {
    match error {
        InvokeError::Function {
            error_type,
            error_message,
        }
        | InvokeError::Init {
            error_type,
            error_message,
        } => (error_type, error_message),
        error @ InvokeError::Timeout(_) => ("Sandbox.Timedout".to_owned(), error.to_string()),
        error @ InvokeError::Crashed(_) => ("Runtime.ExitError".to_owned(), error.to_string()),
        error @ InvokeError::Unavailable(_) => ("ServiceException".to_owned(), error.to_string()),
    }
}

/// `status` with no body (an `Event`'s 202, a `DryRun`'s 204).
fn empty(status: StatusCode, request_id: &str) -> Response {
    let mut response = status.into_response();
    set(response.headers_mut(), "x-amzn-requestid", request_id);
    response
}

/// Sets header `name` to `value`; a value that cannot be a header (none made here) is
/// left out.
fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// An error of the API itself, in Lambda's shape: `x-amzn-ErrorType` and
/// `{"Type", "Message"}` (`Type` is `User` for the caller's mistakes, `Service` for ours).
fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let origin = if status.is_server_error() {
        "Service"
    } else {
        "User"
    };
    (
        status,
        [
            ("x-amzn-ErrorType", kind.to_owned()),
            ("content-type", "application/json".to_owned()),
            ("x-amzn-requestid", uuid_v4()),
        ],
        json!({"Type": origin, "Message": message}).to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A function that answers `{"echo": event}`, or fails on `{"fail": true}`.
    #[derive(Clone)]
    struct Echo;

    impl Invoke for Echo {
        async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
            if event["fail"] == true {
                return Err(InvokeError::Function {
                    error_type: "Poison".into(),
                    error_message: "told to fail".into(),
                });
            }
            Ok(json!({ "echo": event }))
        }
    }

    fn api() -> InvokeApi<Echo> {
        InvokeApi {
            functions: BTreeMap::from([("FanoutFunction".to_owned(), Echo)]),
            listening: "127.0.0.1:3001".parse().expect("address"),
        }
    }

    async fn call(name: &str, query: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");
        call_from(local, name, query, headers, body).await
    }

    async fn call_from(
        peer: SocketAddr,
        name: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        call_api(&api(), peer, name, query, headers, body).await
    }

    async fn call_api<F: Invoke + Clone + 'static>(
        api: &InvokeApi<F>,
        peer: SocketAddr,
        name: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Response {
        let uri: Uri = format!("/2015-03-31/functions/{name}/invocations{query}")
            .parse()
            .expect("a URI");
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        answer(api, peer, name, &uri, &map, Body::from(body.to_owned())).await
    }

    async fn json_body(response: Response) -> Value {
        let bytes = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        serde_json::from_slice(&bytes).expect("a JSON body")
    }

    #[tokio::test]
    async fn a_function_answers_200_with_its_response() {
        let response = call("FanoutFunction", "", &[], r#"{"Records":[]}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("x-amz-function-error").is_none());
        assert_eq!(response.headers()["x-amz-executed-version"], "$LATEST");
        assert_eq!(json_body(response).await, json!({"echo": {"Records": []}}));
    }

    #[tokio::test]
    async fn a_function_error_is_200_with_x_amz_function_error_and_the_error_payload() {
        let response = call("FanoutFunction", "", &[], r#"{"fail":true}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
        assert_eq!(
            json_body(response).await,
            json!({"errorType": "Poison", "errorMessage": "told to fail"})
        );
    }

    #[tokio::test]
    async fn an_unknown_function_is_404_resource_not_found_in_lambdas_error_shape() {
        let response = call("NoSuchFunction", "", &[], "{}").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "ResourceNotFoundException"
        );
        assert_eq!(
            json_body(response).await,
            json!({
                "Type": "User",
                "Message": "Function not found: arn:aws:lambda:us-east-1:000000000000:function:NoSuchFunction"
            })
        );
    }

    #[tokio::test]
    async fn a_function_is_found_by_its_arn_and_only_at_latest() {
        for name in [
            "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction",
            "arn:aws:lambda:eu-west-1:123456789012:function:FanoutFunction:$LATEST",
            "123456789012:function:FanoutFunction",
        ] {
            let response = call(name, "", &[], "{}").await;
            assert_eq!(response.status(), StatusCode::OK, "{name}");
        }
        let response = call(
            "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction:prod",
            "",
            &[],
            "{}",
        )
        .await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "an alias");
        let response = call("FanoutFunction", "?Qualifier=3", &[], "{}").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "a version");
        let response = call("FanoutFunction", "?Qualifier=%24LATEST", &[], "{}").await;
        assert_eq!(response.status(), StatusCode::OK, "$LATEST");
    }

    #[tokio::test]
    async fn an_empty_payload_is_an_empty_event_and_a_payload_that_is_not_json_is_400() {
        let response = call("FanoutFunction", "", &[], "").await;
        assert_eq!(json_body(response).await, json!({"echo": {}}));
        let response = call("FanoutFunction", "", &[], "not json").await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "InvalidRequestContentException"
        );
    }

    #[tokio::test]
    async fn an_invocation_or_log_type_lambda_does_not_have_is_400_invalid_parameter_value() {
        let response = call(
            "FanoutFunction",
            "",
            &[("x-amz-invocation-type", "RequestResponse")],
            "{}",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        for header in [
            ("x-amz-invocation-type", "Sometimes"),
            ("x-amz-invocation-type", "event"),
            ("x-amz-log-type", "Everything"),
        ] {
            let response = call("FanoutFunction", "", &[header], "{}").await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{header:?}");
            assert_eq!(
                response.headers()["x-amzn-ErrorType"],
                "InvalidParameterValueException"
            );
            assert_eq!(json_body(response).await["Type"], "User");
        }
    }

    #[tokio::test]
    async fn an_event_payload_over_1_mb_is_413_request_too_large() {
        let payload = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_EVENT_PAYLOAD_BYTES));
        let response = call(
            "FanoutFunction",
            "",
            &[("x-amz-invocation-type", "Event")],
            &payload,
        )
        .await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "RequestTooLargeException"
        );
        let response = call("FanoutFunction", "", &[], &payload).await;
        assert_eq!(response.status(), StatusCode::OK, "6 MB synchronously");
    }

    #[tokio::test]
    async fn another_machine_is_refused_with_403() {
        let peer: SocketAddr = "192.168.1.30:50000".parse().expect("address");
        let response = call_from(peer, "FanoutFunction", "", &[], "{}").await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()["x-amzn-ErrorType"],
            "AccessDeniedException"
        );
    }

    /// The answer to an invocation that ended with `result`.
    fn invoked(result: Result<Value, InvokeError>) -> Response {
        let invocation = WholeInvocation {
            result: result.map(Whole::Json),
            log_tail: None,
        };
        super::invoked(invocation, "request-1")
    }

    #[tokio::test]
    async fn timeouts_and_crashes_are_function_errors_and_throttles_are_429() {
        let timed_out = invoked(Err(InvokeError::Timeout(Duration::from_secs(3))));
        assert_eq!(timed_out.status(), StatusCode::OK);
        assert_eq!(timed_out.headers()["x-amz-function-error"], "Unhandled");
        assert_eq!(json_body(timed_out).await["errorType"], "Sandbox.Timedout");

        let crashed = invoked(Err(InvokeError::Crashed("signal 9".into())));
        assert_eq!(json_body(crashed).await["errorType"], "Runtime.ExitError");

        let throttled = invoked(Err(InvokeError::Unavailable(
            "TooManyRequestsException: Rate Exceeded. No instance became free".into(),
        )));
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            throttled.headers()["x-amzn-ErrorType"],
            "TooManyRequestsException"
        );

        let stopped = invoked(Err(InvokeError::Unavailable("shut down".into())));
        assert_eq!(stopped.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(json_body(stopped).await["Type"], "Service");
    }

    /// The Invoke API over one real function: the runtime's `probe_function`.
    mod with_the_probe {
        use std::time::Instant;

        use super::*;
        use crate::invoke::LOG_TAIL_BYTES;
        use crate::runtime::tests::{bounded, config};
        use crate::runtime::{Function, FunctionStats};

        fn probe_api(function: &Function) -> InvokeApi<Function> {
            InvokeApi {
                functions: BTreeMap::from([(function.name().to_owned(), function.clone())]),
                listening: "127.0.0.1:3001".parse().expect("address"),
            }
        }

        async fn call(function: &Function, headers: &[(&str, &str)], body: &str) -> Response {
            let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");
            let api = probe_api(function);
            call_api(&api, local, function.name(), "", headers, body).await
        }

        /// The function's stats once `done` says they show what the test waits for.
        async fn stats_once(
            function: &Function,
            done: impl Fn(&FunctionStats) -> bool,
        ) -> FunctionStats {
            loop {
                let stats = function.stats();
                if done(&stats) {
                    return stats;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// The decoded `X-Amz-Log-Result` of `response`.
        fn log_result(response: &Response) -> String {
            let encoded = response.headers()["x-amz-log-result"]
                .to_str()
                .expect("ASCII");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .expect("base64");
            String::from_utf8(decoded).expect("UTF-8")
        }

        #[tokio::test]
        async fn a_streamed_response_is_answered_whole_and_a_timeout_mid_stream_is_its_error() {
            bounded(async {
                // GIVEN a function that answers in streaming mode
                let function = Function::new(config("StreamingFunction"));

                // WHEN it is invoked whole, with a tail
                let tail = [("x-amz-log-type", "Tail")];
                let stream = r#"{"stream": {"chunks": 3, "every_ms": 10}}"#;
                let response = call(&function, &tail, stream).await;

                // THEN the payload is what it wrote: prelude, eight NUL bytes, body
                assert_eq!(response.status(), StatusCode::OK);
                assert!(!response.headers().contains_key("x-amz-function-error"));
                assert!(log_result(&response).contains("START RequestId: "));
                let body = to_bytes(response.into_body(), 4096).await.expect("body");
                let at = body
                    .windows(8)
                    .position(|window| window == [0; 8])
                    .expect("the delimiter");
                let prelude: Value = serde_json::from_slice(&body[..at]).expect("JSON");
                assert_eq!(prelude["statusCode"], 201);
                assert_eq!(&body[at + 8..], b"chunk 1\nchunk 2\nchunk 3\n");

                // AND a stream cut by the timeout (2 s) is a function error, not a 200
                let slow = r#"{"stream": {"chunks": 5, "every_ms": 1000}}"#;
                let response = call(&function, &[], slow).await;
                assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
                assert_eq!(json_body(response).await["errorType"], "Sandbox.Timedout");
                function.shutdown().await;
            })
            .await;
        }

        #[tokio::test]
        async fn an_event_invocation_answers_202_at_once_and_runs_in_the_background() {
            bounded(async {
                // GIVEN a function whose handler takes 300 ms
                let function = Function::new(config("EventFunction"));

                // WHEN it is invoked asynchronously
                let started = Instant::now();
                let response = call(
                    &function,
                    &[("x-amz-invocation-type", "Event")],
                    r#"{"sleep_ms": 300}"#,
                )
                .await;

                // THEN the answer is 202, empty, before the handler is done
                assert!(started.elapsed() < Duration::from_millis(300));
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                assert!(response.headers().contains_key("x-amzn-requestid"));
                let body = to_bytes(response.into_body(), 1024).await.expect("body");
                assert!(body.is_empty());
                // AND the invocation runs to its end
                let stats = stats_once(&function, |stats| stats.invocation_log.len() == 1).await;
                assert!(stats.invocation_log[0].1 >= Duration::from_millis(300));
                assert_eq!((stats.invocations, stats.errors), (1, 0));
                function.shutdown().await;
            })
            .await;
        }

        #[tokio::test]
        async fn a_failed_event_invocation_is_counted_and_not_retried() {
            bounded(async {
                let function = Function::new(config("FailingEventFunction"));
                let response = call(
                    &function,
                    &[("x-amz-invocation-type", "Event")],
                    r#"{"error": "no luck"}"#,
                )
                .await;
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                stats_once(&function, |stats| stats.errors == 1).await;
                // Lambda would try twice more; the local stack does not.
                tokio::time::sleep(Duration::from_millis(200)).await;
                assert_eq!(function.stats().invocations, 1);
                function.shutdown().await;
            })
            .await;
        }

        #[tokio::test]
        async fn a_dry_run_answers_204_and_runs_nothing() {
            bounded(async {
                let function = Function::new(config("DryRunFunction"));
                let dry_run = [("x-amz-invocation-type", "DryRun")];
                let response = call(&function, &dry_run, r#"{"exit": 1}"#).await;
                assert_eq!(response.status(), StatusCode::NO_CONTENT);
                assert_eq!(function.stats(), FunctionStats::default());

                let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");
                let api = probe_api(&function);
                let response = call_api(&api, local, "NoSuchFunction", "", &dry_run, "{}").await;
                assert_eq!(response.status(), StatusCode::NOT_FOUND);
                function.shutdown().await;
            })
            .await;
        }

        #[tokio::test]
        async fn a_tail_holds_the_functions_lines_between_start_end_and_report() {
            bounded(async {
                // GIVEN a function that prints a line to stdout and one to stderr
                let function = Function::new(config("TailFunction"));
                let tail = [("x-amz-log-type", "Tail")];

                // WHEN it is invoked with a log tail
                let response = call(
                    &function,
                    &tail,
                    r#"{"log": "hello from the probe", "context": true}"#,
                )
                .await;

                // THEN the tail frames both lines as Lambda does, under the request id the
                // function saw and the caller was given
                assert_eq!(response.status(), StatusCode::OK);
                let request_id = response.headers()["x-amzn-requestid"]
                    .to_str()
                    .expect("text")
                    .to_owned();
                let log = log_result(&response);
                let body = json_body(response).await;
                assert_eq!(body["context"]["request_id"], request_id.as_str());
                assert!(log.len() <= LOG_TAIL_BYTES);
                let start = format!("START RequestId: {request_id} Version: $LATEST\n");
                assert!(log.starts_with(&start), "{log}");
                assert!(log.contains("\nhello from the probe\n"), "{log}");
                assert!(log.contains("\nhello from the probe (stderr)\n"), "{log}");
                let end = format!(
                    "\nEND RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: "
                );
                assert!(log.contains(&end), "{log}");
                assert!(log.contains("\tMemory Size: 128 MB\t\n"), "{log}");

                // AND without Tail there is none, and the caller is still given the request
                // id the function saw
                let response = call(&function, &[], r#"{"log": "untold", "context": true}"#).await;
                assert_eq!(response.status(), StatusCode::OK);
                assert!(!response.headers().contains_key("x-amz-log-result"));
                let request_id = response.headers()["x-amzn-requestid"]
                    .to_str()
                    .expect("text")
                    .to_owned();
                let body = json_body(response).await;
                assert_eq!(body["context"]["request_id"], request_id.as_str());

                // AND a log longer than a tail keeps its last 4 KB, with the end and report
                let long = "x".repeat(3 * LOG_TAIL_BYTES);
                let response = call(&function, &tail, &json!({ "log": long }).to_string()).await;
                let log = log_result(&response);
                assert!(log.len() <= LOG_TAIL_BYTES, "{}", log.len());
                assert!(!log.contains("START") && !log.contains("untold"));
                // The stdout and stderr lines come in either order.
                let (lines, _) = log.split_once("\nEND RequestId: ").expect("an END line");
                assert!(lines.starts_with('x'), "{log}");
                assert!(
                    lines.ends_with('x') || lines.ends_with("x (stderr)"),
                    "{log}"
                );

                // AND a function error comes with its tail too
                let response = call(&function, &tail, r#"{"log": "failing", "error": "no"}"#).await;
                assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
                assert!(log_result(&response).contains("\nfailing (stderr)\n"));
                function.shutdown().await;
            })
            .await;
        }
    }
}
