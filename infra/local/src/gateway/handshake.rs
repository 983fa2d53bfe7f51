//! A WebSocket handshake, as API Gateway runs it: check the identity sources, invoke the
//! authorizer, invoke `$connect` and pass its status and headers on, then register the
//! connection and hand the upgraded socket to its task. A refusal is answered with API
//! Gateway's status and body, never with the function's internals.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use deltacast::clock;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, info, warn};

use super::authorizer::{has_identity_source, read_policy};
use super::config::{MAX_FRAME_BYTES, MAX_MESSAGE_BYTES};
use super::connection::{finish, run_connection};
use super::state::{Connection, Shared};
use crate::events::{self, ConnectionInfo, Handshake};
use crate::invoke::{Invoke, InvokeError};

pub(super) async fn upgrade_default<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> Response {
    let stage = shared.config.default_stage.clone();
    upgrade(shared, peer, parts, stage).await
}

pub(super) async fn upgrade_on_stage<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(stage): Path<String>,
    parts: Parts,
) -> Response {
    upgrade(shared, peer, parts, stage).await
}

fn handshake_of(headers: &HeaderMap, uri: &Uri, peer: SocketAddr) -> Handshake {
    let mut handshake = Handshake::default();
    for (name, value) in headers {
        handshake
            .headers
            .entry(canonical(name))
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    handshake
        .headers
        .entry("X-Forwarded-For".into())
        .or_insert_with(|| vec![peer.ip().to_string()]);
    handshake
        .headers
        .insert("X-Forwarded-Proto".into(), vec!["http".into()]);
    if let Some(query) = uri.query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            handshake
                .query
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
    }
    handshake
}

/// `sec-websocket-key` → `Sec-WebSocket-Key`, as API Gateway presents header names.
fn canonical(name: &HeaderName) -> String {
    name.as_str()
        .split('-')
        .map(|part| match part {
            "websocket" => "WebSocket".to_owned(),
            other => {
                let mut chars = other.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn refuse(shared: &Shared<impl Sized>, status: StatusCode, why: &str) -> Response {
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    info!(status = status.as_u16(), reason = why, "handshake refused");
    let body = match status {
        StatusCode::UNAUTHORIZED => "Unauthorized",
        StatusCode::FORBIDDEN => "Forbidden",
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
        _ => "Internal server error",
    };
    (status, body).into_response()
}

async fn upgrade<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    peer: SocketAddr,
    mut parts: Parts,
    stage: String,
) -> Response {
    // Counts as a task until the connection's own task is spawned, so that shutdown
    // waits for handshakes in progress too.
    let _handshake = shared.tasks.token();
    if shared.stopping.is_cancelled() {
        return refuse(
            &shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
        );
    }
    let received_at = clock::now_ms();
    let Some((accept, on_upgrade)) = websocket_request(&mut parts) else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            [(header::UPGRADE, "websocket")],
            "WebSocket connections only",
        )
            .into_response();
    };
    let handshake = handshake_of(&parts.headers, &parts.uri, peer);
    let domain_name = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let info = ConnectionInfo {
        connection_id: events::connection_id(),
        stage,
        domain_name,
        connected_at: received_at,
        source_ip: peer.ip().to_string(),
        user_agent: parts
            .headers
            .get("user-agent")
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned),
    };

    let authorizer = match &shared.routes.authorizer {
        None => None,
        Some(function) => {
            if let Some(missing) = shared
                .routes
                .identity_sources
                .iter()
                .find(|s| !has_identity_source(s, &handshake))
            {
                return refuse(
                    &shared,
                    StatusCode::UNAUTHORIZED,
                    &format!("missing identity source {missing}"),
                );
            }
            let started = std::time::Instant::now();
            let event = events::authorizer_request(&info, &handshake, received_at);
            match function.invoke(event).await {
                Err(InvokeError::Function { error_message, .. })
                    if error_message == "Unauthorized" =>
                {
                    return refuse(
                        &shared,
                        StatusCode::UNAUTHORIZED,
                        "authorizer: Unauthorized",
                    );
                }
                Err(err) => {
                    return refuse(
                        &shared,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("authorizer failed: {err}"),
                    );
                }
                Ok(response) => match read_policy(&response) {
                    Ok((principal, context)) => Some(events::authorizer_block(
                        &principal,
                        &context,
                        started.elapsed().as_millis() as u64,
                    )),
                    Err((status, why)) => return refuse(&shared, status, &why),
                },
            }
        }
    };

    let mut extra_headers = HeaderMap::new();
    if let Some(function) = shared.routes.routes.get("$connect") {
        let event = events::connect(&info, &handshake, authorizer.as_ref(), received_at);
        match function.invoke(event).await {
            Err(err) => {
                return refuse(
                    &shared,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("$connect failed: {err}"),
                );
            }
            Ok(response) => {
                let Some(status) = connect_status(&response) else {
                    return refuse(
                        &shared,
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &format!("$connect answered statusCode {}", response["statusCode"]),
                    );
                };
                if !status.is_success() {
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    info!(status = status.as_u16(), "handshake refused by $connect");
                    return status.into_response();
                }
                for (name, value) in response_headers(&response) {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        if passes_to_client(&name) {
                            extra_headers.insert(name, value);
                        } else {
                            debug!(header = %name, "$connect response header dropped");
                        }
                    }
                }
            }
        }
    }

    let (outbound, queue) = mpsc::channel(shared.config.max_queued_frames.max(1));
    // Made before the connection is visible, so that a DELETE in the meantime is seen.
    let (close, close_requests) = watch::channel(None);
    let connection = Arc::new(Connection {
        info,
        authorizer,
        last_active: AtomicU64::new(received_at),
        outbound,
        close,
    });
    shared
        .connections
        .lock()
        .expect("lock")
        .insert(connection.info.connection_id.clone(), connection.clone());
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let principal = connection
        .authorizer
        .as_ref()
        .and_then(|a| a.get("principalId"))
        .and_then(Value::as_str)
        .unwrap_or("");
    info!(
        connection_id = connection.info.connection_id,
        principal, "connected"
    );
    let tasks = shared.tasks.clone();
    tasks.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_frame_size(Some(MAX_FRAME_BYTES))
                    .max_message_size(Some(MAX_MESSAGE_BYTES));
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                run_connection(shared, connection, socket, queue, close_requests).await;
            }
            Err(err) => {
                warn!(error = %err, "upgrade failed after $connect");
                finish(&shared, &connection, 1006, "Upgrade failed").await;
            }
        }
    });
    let mut response = (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
        ],
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.extend(extra_headers);
    response
}

/// Checks that the request is a WebSocket handshake; returns the `Sec-WebSocket-Accept`
/// value and the pending upgrade.
fn websocket_request(parts: &mut Parts) -> Option<(String, hyper::upgrade::OnUpgrade)> {
    let has = |name: header::HeaderName, token: &str| {
        parts.headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if parts.method != axum::http::Method::GET
        || !has(header::CONNECTION, "upgrade")
        || !has(header::UPGRADE, "websocket")
        || !has(header::SEC_WEBSOCKET_VERSION, "13")
    {
        return None;
    }
    let key = parts.headers.get(header::SEC_WEBSOCKET_KEY)?;
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?;
    Some((accept, on_upgrade))
}

/// The status a `$connect` response asks for: 200 when it names none; `None` when its
/// `statusCode` is no final HTTP status, which API Gateway treats as a function error
/// (informational statuses cannot end a handshake either).
fn connect_status(response: &Value) -> Option<StatusCode> {
    match response.get("statusCode") {
        None | Some(Value::Null) => Some(StatusCode::OK),
        Some(code) => code
            .as_u64()
            .filter(|code| (200..=599).contains(code))
            .and_then(|code| StatusCode::from_u16(code as u16).ok()),
    }
}

/// Whether a `$connect` response header reaches the client: `Sec-WebSocket-Protocol` and
/// the like do; hop-by-hop headers and the handshake's own do not, as they would break the
/// upgrade (and extensions are never negotiated here).
fn passes_to_client(name: &HeaderName) -> bool {
    const WITHHELD: [&str; 14] = [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-key",
        "sec-websocket-version",
    ];
    !WITHHELD.contains(&name.as_str())
}

fn response_headers(response: &Value) -> Vec<(String, String)> {
    let mut headers = Vec::new();
    if let Some(Value::Object(map)) = response.get("headers") {
        for (name, value) in map {
            if let Some(value) = value.as_str() {
                headers.push((name.clone(), value.to_owned()));
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_strings_are_decoded() {
        let uri: Uri = "/local?token=a%20b+c%3D&x=1&x=2".parse().unwrap();
        let handshake = handshake_of(&HeaderMap::new(), &uri, "127.0.0.1:9".parse().unwrap());
        assert_eq!(handshake.query["token"], ["a b c="]);
        assert_eq!(handshake.query["x"], ["1", "2"]);
        assert_eq!(handshake.headers["X-Forwarded-For"], ["127.0.0.1"]);
    }

    #[test]
    fn connect_status_codes_must_be_final_http_statuses() {
        let status = |response: Value| connect_status(&response);
        assert_eq!(status(json!({})), Some(StatusCode::OK));
        assert_eq!(
            status(json!({"statusCode": 204})),
            Some(StatusCode::NO_CONTENT)
        );
        assert_eq!(
            status(json!({"statusCode": 403})),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(json!({"statusCode": 599})).map(|s| s.as_u16()),
            Some(599)
        );
        // 65736 as u16 would be 200: a function error, not an accepted handshake.
        assert_eq!(status(json!({"statusCode": 65_736})), None);
        assert_eq!(status(json!({"statusCode": 600})), None);
        assert_eq!(status(json!({"statusCode": 101})), None);
        assert_eq!(status(json!({"statusCode": -1})), None);
        assert_eq!(status(json!({"statusCode": "200"})), None);
    }

    #[test]
    fn connect_headers_cannot_touch_the_handshake() {
        let passes = |name: &'static str| passes_to_client(&HeaderName::from_static(name));
        assert!(passes("sec-websocket-protocol"));
        assert!(passes("x-request-id"));
        for name in [
            "upgrade",
            "connection",
            "sec-websocket-accept",
            "sec-websocket-extensions",
            "transfer-encoding",
            "content-length",
        ] {
            assert!(!passes(name), "{name}");
        }
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(
            canonical(&HeaderName::from_static("sec-websocket-protocol")),
            "Sec-WebSocket-Protocol"
        );
        assert_eq!(
            canonical(&HeaderName::from_static("x-forwarded-for")),
            "X-Forwarded-For"
        );
    }
}
