//! The Lambda Runtime API (version 2018-06-01) as one instance's process sees it.
//!
//! The server only translates HTTP into [`ApiCall`]s for the instance's task and the
//! task's answers back into HTTP; every decision (which event, which request id is valid,
//! what a late answer means) is taken by the task, so this file holds no state of its own.
//! Bodies are read here, off the task, with a size limit, and parsed leniently: whatever a
//! function sends, it becomes either a JSON value or a [`FunctionError`].

use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::stream;
use crate::invoke::StreamHead;

/// Lambda's limit on a synchronous response payload (6 MB).
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;
/// Error reports are small; anything bigger is cut off.
const MAX_ERROR_BYTES: usize = 256 * 1024;

/// A request of the function's process, handed to the instance's task.
pub(super) enum ApiCall {
    /// `GET /runtime/invocation/next`: the process is free; answer with the next event.
    Next {
        /// Where to send the event; dropped if the instance goes away first.
        reply: oneshot::Sender<Delivery>,
    },
    /// `POST /runtime/invocation/{id}/response` or `/error`.
    Answer {
        /// The request id in the path.
        request_id: String,
        /// The response, or the error the handler (or this server) reported.
        answer: Result<Answered, FunctionError>,
        /// The HTTP status to send back.
        reply: oneshot::Sender<Reply>,
    },
    /// A streamed response (started with [`Answered::Stream`]) has ended.
    StreamEnded {
        /// The request id in the path.
        request_id: String,
        /// The HTTP status to send back.
        reply: oneshot::Sender<Reply>,
    },
    /// `POST /runtime/init/error`.
    InitError {
        /// What the runtime reported.
        error: FunctionError,
        /// The HTTP status to send back.
        reply: oneshot::Sender<Reply>,
    },
}

/// A response as the process sent it.
pub(super) enum Answered {
    /// A whole JSON response.
    Json(Value),
    /// A streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`), as it
    /// starts: the rest of its body is still coming.
    Stream(StreamHead),
}

/// An error as the Runtime API carries it (`{"errorType": .., "errorMessage": ..}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct FunctionError {
    /// `errorType`.
    pub(super) error_type: String,
    /// `errorMessage`.
    pub(super) error_message: String,
}

impl FunctionError {
    pub(super) fn new(error_type: &str, error_message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.to_owned(),
            error_message: error_message.into(),
        }
    }
}

/// An event on its way to the process, with the headers of `next`.
pub(super) struct Delivery {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub(super) request_id: String,
    /// `Lambda-Runtime-Deadline-Ms`, epoch milliseconds.
    pub(super) deadline_ms: u64,
    /// `Lambda-Runtime-Trace-Id`.
    pub(super) trace_id: String,
    /// The event, serialised.
    pub(super) body: Bytes,
}

/// The instance task's answer to a POST.
pub(super) struct Reply {
    status: StatusCode,
    body: Value,
}

impl Reply {
    /// `202 Accepted`, what Lambda answers to every accepted report.
    pub(super) fn accepted() -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            body: json!({ "status": "OK" }),
        }
    }

    /// `400`: no invocation with this id is waiting for an answer.
    pub(super) fn invalid_request_id(request_id: &str) -> Self {
        Self::error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestID",
            &format!("no invocation {request_id} is in progress on this instance"),
        )
    }

    /// `403`: e.g. `/init/error` after the runtime already asked for an event.
    pub(super) fn invalid_state(message: &str) -> Self {
        Self::error(StatusCode::FORBIDDEN, "InvalidStateTransition", message)
    }

    fn error(status: StatusCode, error_type: &str, message: &str) -> Self {
        Self {
            status,
            body: json!({ "errorType": error_type, "errorMessage": message }),
        }
    }

    fn gone() -> Self {
        Self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            "the instance is shutting down",
        )
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

#[derive(Clone)]
struct Api {
    calls: mpsc::Sender<ApiCall>,
    function_arn: Arc<str>,
}

/// Serves the Runtime API on `listener` until the returned task is aborted.
pub(super) fn serve(
    listener: TcpListener,
    calls: mpsc::Sender<ApiCall>,
    function_arn: Arc<str>,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/response",
            post(response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{request_id}/error",
            post(error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .with_state(Api {
            calls,
            function_arn,
        });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "runtime API server stopped");
        }
    })
}

async fn next(State(api): State<Api>) -> Response {
    let (reply, delivery) = oneshot::channel();
    if api.calls.send(ApiCall::Next { reply }).await.is_err() {
        return Reply::gone().into_response();
    }
    let Ok(delivery) = delivery.await else {
        return Reply::gone().into_response();
    };
    let mut response = Response::new(Body::from(delivery.body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let mut set = |name: &'static str, value: &str| {
        // Values are ids and numbers made here, and a function name from the template; one
        // that is not a valid header value is left out rather than failing the event.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    set("lambda-runtime-aws-request-id", &delivery.request_id);
    set(
        "lambda-runtime-deadline-ms",
        &delivery.deadline_ms.to_string(),
    );
    set("lambda-runtime-invoked-function-arn", &api.function_arn);
    set("lambda-runtime-trace-id", &delivery.trace_id);
    response
}

async fn response(
    State(api): State<Api>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let streaming = headers
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|mode| mode.as_bytes().eq_ignore_ascii_case(b"streaming"));
    if streaming {
        return stream_response(api, request_id, body).await;
    }
    let answer = read_response(&headers, body).await.map(Answered::Json);
    answer_call(&api, |reply| ApiCall::Answer {
        request_id,
        answer,
        reply,
    })
    .await
}

/// A streamed response: the prelude is read first and the stream handed over at once;
/// the body is then passed on chunk by chunk while the process writes it, and the
/// invocation ends when the body does. A caller that stops reading (its client went
/// away) ends the request early, as the process's next write then fails.
async fn stream_response(api: Api, request_id: String, body: Body) -> Response {
    let mut chunks = body.into_data_stream();
    let (prelude, rest) = match stream::read_prelude(&mut chunks).await {
        Ok(read) => read,
        Err(error) => {
            return answer_call(&api, |reply| ApiCall::Answer {
                request_id,
                answer: Err(error),
                reply,
            })
            .await;
        }
    };
    let (sender, receiver) = mpsc::channel::<Bytes>(16);
    let head = StreamHead {
        prelude,
        body: receiver,
    };
    let started = answer_call(&api, |reply| ApiCall::Answer {
        request_id: request_id.clone(),
        answer: Ok(Answered::Stream(head)),
        reply,
    })
    .await;
    if started.status() != StatusCode::ACCEPTED {
        return started;
    }
    stream::pass_on(rest, &mut chunks, &sender).await;
    answer_call(&api, |reply| ApiCall::StreamEnded { request_id, reply }).await
}

async fn error(
    State(api): State<Api>,
    Path(request_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let error = read_error(&headers, body).await;
    answer_call(&api, |reply| ApiCall::Answer {
        request_id,
        answer: Err(error),
        reply,
    })
    .await
}

async fn init_error(State(api): State<Api>, headers: HeaderMap, body: Body) -> Response {
    let error = read_error(&headers, body).await;
    answer_call(&api, |reply| ApiCall::InitError { error, reply }).await
}

async fn not_found() -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        "InvalidRequest",
        "this local Runtime API serves version 2018-06-01: invocation/next, \
         invocation/{id}/response, invocation/{id}/error and init/error",
    )
}

async fn answer_call(api: &Api, call: impl FnOnce(oneshot::Sender<Reply>) -> ApiCall) -> Response {
    let (reply, answer) = oneshot::channel();
    if api.calls.send(call(reply)).await.is_err() {
        return Reply::gone().into_response();
    }
    answer
        .await
        .unwrap_or_else(|_| Reply::gone())
        .into_response()
}

/// Reads a `/response` body: a JSON document, or an error saying why it is not one.
async fn read_response(headers: &HeaderMap, body: Body) -> Result<Value, FunctionError> {
    let too_large = || {
        FunctionError::new(
            "Function.ResponseSizeTooLarge",
            format!(
                "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_RESPONSE_BYTES) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_RESPONSE_BYTES)
        .await
        .map_err(|_| too_large())?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        FunctionError::new(
            "Runtime.InvalidResponse",
            format!("the function's response is not JSON: {error}"),
        )
    })
}

/// Reads an error report, trusting the body's `errorType` over the
/// `Lambda-Runtime-Function-Error-Type` header (the Rust client sends `unhandled` there).
async fn read_error(headers: &HeaderMap, body: Body) -> FunctionError {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ErrorBody {
        error_type: Option<String>,
        error_message: Option<String>,
    }

    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BYTES)
        .await
        .unwrap_or_default();
    let (error_type, error_message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(body) => (body.error_type, body.error_message),
        Err(_) => (None, Some(String::from_utf8_lossy(&bytes).into_owned())),
    };
    FunctionError {
        error_type: error_type
            .or(header_type)
            .unwrap_or_else(|| "Unhandled".to_owned()),
        error_message: error_message.unwrap_or_default(),
    }
}
