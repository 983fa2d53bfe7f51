//! The Management API (`/@connections/{id}`): `POST` queues a frame for a connection,
//! `GET` describes it, `DELETE` closes it. Errors carry the `x-amzn-ErrorType` the AWS SDKs
//! match on (`GoneException`, `LimitExceededException`, ...), and injected faults model
//! AWS's failures for the fan-out's retry tests.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::config::MAX_MESSAGE_BYTES;
use super::state::{QueueError, Shared};
use crate::invoke::Invoke;

pub(super) async fn management_on_stage<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    Path((_stage, id)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Response {
    manage(shared, id, parts, body).await
}

pub(super) async fn management<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    manage(shared, id, parts, body).await
}

fn service_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [
            ("x-amzn-ErrorType", kind.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn gone() -> Response {
    service_error(StatusCode::GONE, "GoneException", "connection is gone")
}

fn iso8601(epoch_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

async fn manage<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    id: String,
    parts: Parts,
    body: Bytes,
) -> Response {
    match parts.method.as_str() {
        "POST" => {
            let faults = shared.faults.read().expect("faults lock").clone();
            if !faults.latency.is_zero() {
                tokio::time::sleep(faults.latency).await;
            }
            let roll: f64 = rand::random();
            if roll < faults.gone_rate {
                return gone();
            }
            if roll < faults.gone_rate + faults.throttle_rate {
                return service_error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "LimitExceededException",
                    "rate exceeded",
                );
            }
            if roll < faults.gone_rate + faults.throttle_rate + faults.error_rate {
                return service_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerErrorException",
                    "injected fault",
                );
            }
            let Some(connection) = shared.open_connection(&id) else {
                return gone();
            };
            if body.len() > MAX_MESSAGE_BYTES {
                return service_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLargeException",
                    "payload is over 128 KB",
                );
            }
            let message = match String::from_utf8(body.to_vec()) {
                Ok(text) => Message::Text(text.into()),
                Err(err) => Message::Binary(err.into_bytes().into()),
            };
            match connection.push(message) {
                Ok(()) => {}
                Err(QueueError::Gone) => return gone(),
                // The client reads more slowly than it is written to: throttle, as AWS
                // does, so that the sender backs off and retries.
                Err(QueueError::Full) => {
                    return service_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "LimitExceededException",
                        "too many frames waiting for this connection",
                    );
                }
            }
            shared.stats.posts.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        "GET" => {
            let Some(connection) = shared.open_connection(&id) else {
                return gone();
            };
            let mut identity = Map::new();
            identity.insert(
                "sourceIp".into(),
                Value::from(connection.info.source_ip.clone()),
            );
            if let Some(agent) = &connection.info.user_agent {
                identity.insert("userAgent".into(), Value::from(agent.clone()));
            }
            (
                StatusCode::OK,
                [("content-type", "application/json")],
                json!({
                    "connectedAt": iso8601(connection.info.connected_at),
                    "identity": identity,
                    "lastActiveAt": iso8601(connection.last_active.load(Ordering::Relaxed)),
                })
                .to_string(),
            )
                .into_response()
        }
        "DELETE" => {
            // Gone for the Management API at once; its task closes the socket and then
            // runs $disconnect, as in AWS.
            let Some(connection) = shared.detach(&id).filter(|c| c.is_open()) else {
                return gone();
            };
            connection.request_close(1000, "Connection deleted");
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}
