//! The core of Lambda's Invoke API on the gateway's port:
//! `POST /2015-03-31/functions/{FunctionName}/invocations`, where `FunctionName` is a
//! function's logical id in the template (`FanoutFunction`) or an ARN that ends in
//! `:function:<id>`. The event runs through that function's own pool of processes, as a
//! stream trigger's or a route's would, so a tool can hand any function an event the way
//! Lambda would: `deltacast-local redrive` replays the stream batches the trigger gave up
//! on through it.
//!
//! Answers are Lambda's, so that the AWS CLI and SDKs can read them: the function's
//! response with 200; a function error also with 200, but with `X-Amz-Function-Error:
//! Unhandled` and the error as `{"errorType", "errorMessage"}`; a failure of the API
//! itself with its status, `x-amzn-ErrorType` and `{"Type", "Message"}`.
//!
//! Only `RequestResponse` invocations for now. What a request asks for is read in one
//! place ([`InvocationType`]), so asynchronous (`Event`) invocations and log tails can be
//! added there; until then they are refused plainly rather than run the wrong way.
//!
//! Like the Management API it checks no signature, so it answers only this machine (see
//! `management::is_this_machine`): anyone who reaches it can run any function with any
//! event.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, post};
use serde_json::{Value, json};
use tracing::info;

use super::management::is_this_machine;
use crate::invoke::{Invoke, InvokeError};

/// The Invoke API's path (the Lambda API version `2015-03-31`).
pub(super) const PATH: &str = "/2015-03-31/functions/{function}/invocations";

/// Lambda's largest synchronous request payload.
const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// The account local ARNs are written with (as the stream trigger writes them).
const LOCAL_ACCOUNT: &str = "000000000000";

/// The region local ARNs are written with.
const LOCAL_REGION: &str = "us-east-1";

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
}

impl InvocationType {
    /// Reads the header; `Err` says why the local stack does not run that type.
    fn from_headers(headers: &HeaderMap) -> Result<Self, String> {
        match headers
            .get("x-amz-invocation-type")
            .map(|value| value.to_str().unwrap_or_default())
        {
            None | Some("RequestResponse") => Ok(Self::RequestResponse),
            Some(other @ ("Event" | "DryRun")) => Err(format!(
                "the local stack runs RequestResponse invocations only, not {other} (yet)"
            )),
            Some(other) => Err(format!(
                "X-Amz-Invocation-Type {other:?} is not one of RequestResponse, Event, DryRun"
            )),
        }
    }
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
    let invocation = match InvocationType::from_headers(headers) {
        Ok(invocation) => invocation,
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
    let Ok(payload) = to_bytes(body, MAX_PAYLOAD_BYTES).await else {
        return api_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            "Request must be smaller than 6291456 bytes for the InvokeFunction operation",
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
    match invocation {
        InvocationType::RequestResponse => invoked(function.invoke(event).await),
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
        format!("arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{name}")
    }
}

/// The answer to an invocation that ran: the response, or the function's error as
/// Lambda reports it (still 200); 429 when throttled, 500 when it could not run.
fn invoked(result: Result<Value, InvokeError>) -> Response {
    let error = match result {
        Ok(response) => return ok(response.to_string(), None),
        Err(InvokeError::Function {
            error_type,
            error_message,
        })
        | Err(InvokeError::Init {
            error_type,
            error_message,
        }) => (error_type, error_message),
        Err(err @ InvokeError::Timeout(_)) => ("Sandbox.Timedout".to_owned(), err.to_string()),
        Err(err @ InvokeError::Crashed(_)) => ("Runtime.ExitError".to_owned(), err.to_string()),
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
    };
    let (error_type, error_message) = error;
    ok(
        json!({"errorType": error_type, "errorMessage": error_message}).to_string(),
        Some("Unhandled"),
    )
}

/// 200 with `body`, and `X-Amz-Function-Error` when the function failed.
fn ok(body: String, function_error: Option<&'static str>) -> Response {
    let mut response = (
        StatusCode::OK,
        [
            ("content-type", "application/json".to_owned()),
            ("x-amz-executed-version", "$LATEST".to_owned()),
            ("x-amzn-requestid", crate::runtime::uuid_v4()),
        ],
        body,
    )
        .into_response();
    if let Some(kind) = function_error {
        response.headers_mut().insert(
            "x-amz-function-error",
            axum::http::HeaderValue::from_static(kind),
        );
    }
    response
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
            ("x-amzn-requestid", crate::runtime::uuid_v4()),
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
        answer(&api(), peer, name, &uri, &map, Body::from(body.to_owned())).await
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
    async fn invocation_types_other_than_request_response_are_refused_for_now() {
        let response = call(
            "FanoutFunction",
            "",
            &[("x-amz-invocation-type", "RequestResponse")],
            "{}",
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        for kind in ["Event", "DryRun", "Sometimes"] {
            let response = call(
                "FanoutFunction",
                "",
                &[("x-amz-invocation-type", kind)],
                "{}",
            )
            .await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{kind}");
            assert_eq!(
                response.headers()["x-amzn-ErrorType"],
                "InvalidParameterValueException"
            );
        }
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
}
