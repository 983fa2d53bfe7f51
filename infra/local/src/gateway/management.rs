//! The Management API (`/@connections/{id}`): `POST` queues a frame for a connection,
//! `GET` describes it, `DELETE` closes it. Errors carry the `x-amzn-ErrorType` the AWS SDKs
//! match on (`GoneException`, `LimitExceededException`, ...), and injected faults model
//! AWS's failures for the fan-out's retry tests.
//!
//! AWS answers only SigV4-signed callers with IAM permission; this one checks no
//! signature, so it answers only this machine (a peer on loopback, or at the very address
//! the gateway listens on). On a stack bound to `0.0.0.0` for phones on the LAN, anyone
//! there could otherwise post a fake delta "from admin" into any connection, or close it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio_tungstenite::tungstenite::Message;
use tracing::info;

use super::config::MAX_MESSAGE_BYTES;
use super::state::{QueueError, Shared};
use crate::invoke::Invoke;

pub(super) async fn management_on_stage<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((_stage, id)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Response {
    management(State(shared), ConnectInfo(peer), Path(id), parts, body).await
}

pub(super) async fn management<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    parts: Parts,
    body: Bytes,
) -> Response {
    match refuse_other_machines(peer, shared.address, &parts) {
        Some(refusal) => refusal,
        None => manage(shared, id, parts, body).await,
    }
}

/// Whether `peer` is this machine, for a gateway listening on `listening`: a loopback
/// address (IPv4-mapped ones included), or the gateway's own address when it listens on
/// one interface (functions then post to that address, and only this machine has it).
pub(super) fn is_this_machine(peer: IpAddr, listening: IpAddr) -> bool {
    let peer = peer.to_canonical();
    peer.is_loopback() || (!listening.is_unspecified() && peer == listening.to_canonical())
}

/// The 403 for a Management API request from another machine, or `None` for this one.
fn refuse_other_machines(
    peer: SocketAddr,
    listening: SocketAddr,
    parts: &Parts,
) -> Option<Response> {
    if is_this_machine(peer.ip(), listening.ip()) {
        return None;
    }
    info!(
        peer = %peer.ip(),
        method = %parts.method,
        status = 403,
        "Management API refused to another machine"
    );
    Some(service_error(
        StatusCode::FORBIDDEN,
        "ForbiddenException",
        "the local Management API checks no signature, so it answers only the machine the \
         stack runs on (loopback); post from there",
    ))
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

/// Whether a posted body is a deltacast `delta` frame (what `drop_rate` drops).
fn is_delta(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<&'a str>,
    }
    serde_json::from_slice::<Kind>(body).is_ok_and(|k| k.kind == Some("delta"))
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
            if faults.drop_rate > 0.0 && is_delta(&body) && rand::random::<f64>() < faults.drop_rate
            {
                shared.stats.dropped_posts.fetch_add(1, Ordering::Relaxed);
                return StatusCode::OK.into_response();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an IP address")
    }

    #[test]
    fn loopback_peers_are_this_machine_whatever_the_gateway_listens_on() {
        for peer in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"] {
            for listening in ["127.0.0.1", "0.0.0.0", "::", "192.168.1.20"] {
                assert!(
                    is_this_machine(ip(peer), ip(listening)),
                    "{peer} on {listening}"
                );
            }
        }
    }

    #[test]
    fn a_peer_on_the_network_is_not_this_machine() {
        for peer in ["192.168.1.30", "10.0.0.7", "::ffff:192.168.1.30", "fe80::1"] {
            for listening in ["0.0.0.0", "::", "192.168.1.20"] {
                assert!(
                    !is_this_machine(ip(peer), ip(listening)),
                    "{peer} on {listening}"
                );
            }
        }
    }

    #[test]
    fn the_gateways_own_address_is_this_machine_and_unspecified_is_nobody() {
        assert!(is_this_machine(ip("192.168.1.20"), ip("192.168.1.20")));
        assert!(is_this_machine(
            ip("::ffff:192.168.1.20"),
            ip("192.168.1.20")
        ));
        assert!(!is_this_machine(ip("0.0.0.0"), ip("0.0.0.0")));
    }

    #[tokio::test]
    async fn another_machine_gets_403_with_a_message_saying_why() {
        let (parts, ()) = axum::http::Request::post("/@connections/abc")
            .body(())
            .expect("a request")
            .into_parts();
        let listening: SocketAddr = "0.0.0.0:3001".parse().expect("address");
        let peer: SocketAddr = "192.168.1.30:50000".parse().expect("address");
        let refusal = refuse_other_machines(peer, listening, &parts).expect("refused");
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        assert_eq!(refusal.headers()["x-amzn-ErrorType"], "ForbiddenException");
        let body = axum::body::to_bytes(refusal.into_body(), 4096)
            .await
            .expect("a body");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        let message = body["message"].as_str().expect("a message");
        assert!(
            message.contains("only the machine the stack runs on"),
            "{message}"
        );

        let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");
        assert!(refuse_other_machines(local, listening, &parts).is_none());
    }
}
