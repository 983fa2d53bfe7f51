//! The local API Gateway: a WebSocket endpoint that runs the authorizer and the `$connect`,
//! route and `$disconnect` functions exactly as API Gateway does, and the Management API
//! (`/@connections/{id}`) on the same port, wire-compatible with the AWS SDKs.
//!
//! One connection is one task: it reads frames, routes each by the route selection
//! expression and invokes the route's function concurrently (as API Gateway does), and
//! writes whatever is queued for it — replies posted through the Management API by any
//! function. Limits are API Gateway's: frames over 32 KB and messages over 128 KB close
//! the connection with 1009, and idle and total-lifetime timeouts close it with 1001.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use deltacast::clock;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::events::{self, ConnectionInfo, Handshake};
use crate::invoke::{Invoke, InvokeError};

/// API Gateway's largest client frame.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's largest message (client or Management API).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Management API fault injection, for tests of the fan-out's retries (all off by default).
#[derive(Clone, Debug, Default)]
pub struct ManagementFaults {
    /// Probability that a post answers 410 Gone although the connection exists.
    pub gone_rate: f64,
    /// Probability that a post answers 429 LimitExceededException.
    pub throttle_rate: f64,
    /// Probability that a post answers 500.
    pub error_rate: f64,
    /// Added to every post, to model the Management API's latency in AWS.
    pub latency: Duration,
}

/// How the gateway behaves.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Stage name used when the client connects to `/`.
    pub default_stage: String,
    /// Close a connection with no traffic for this long (API Gateway: 10 minutes).
    pub idle_timeout: Duration,
    /// Close a connection this long after it opened (API Gateway: 2 hours).
    pub max_connection_duration: Duration,
    /// Management API faults.
    pub faults: ManagementFaults,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            default_stage: "local".into(),
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7200),
            faults: ManagementFaults::default(),
        }
    }
}

/// What the gateway runs: route key → function, and the authorizer.
pub struct Routes<F> {
    /// `RouteSelectionExpression`, e.g. `$request.body.action`.
    pub selection_expression: String,
    /// Route key (`$connect`, `$disconnect`, `$default`, custom keys) → function.
    pub routes: BTreeMap<String, F>,
    /// The `$connect` authorizer.
    pub authorizer: Option<F>,
    /// Identity sources the handshake must carry before the authorizer is invoked.
    pub identity_sources: Vec<String>,
}

/// Counters, for logs and tests.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Handshakes refused.
    pub refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Management API posts delivered.
    pub posts: AtomicU64,
    /// Connections closed whose `$disconnect` has run (succeeded or not).
    pub disconnected: AtomicU64,
}

enum Outbound {
    Frame(Message),
    Close(u16, &'static str),
}

struct Connection {
    info: ConnectionInfo,
    authorizer: Option<Map<String, Value>>,
    last_active: AtomicU64,
    outbound: mpsc::UnboundedSender<Outbound>,
}

struct Shared<F> {
    routes: Routes<F>,
    config: GatewayConfig,
    /// The Management API faults in force (they can change while running).
    faults: std::sync::RwLock<ManagementFaults>,
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    stats: GatewayStats,
    shutdown: CancellationToken,
}

/// A running gateway.
pub struct Gateway<F> {
    shared: Arc<Shared<F>>,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

/// The gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct GatewayError {
    /// Where it tried to listen.
    pub address: SocketAddr,
    /// Why it could not.
    pub source: std::io::Error,
}

impl<F: Invoke + Clone + 'static> Gateway<F> {
    /// Listens on `address` (port 0 picks a free port) and serves until shut down.
    pub async fn start(
        address: SocketAddr,
        routes: Routes<F>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| GatewayError { address, source })?;
        Self::serve(listener, routes, config)
    }

    /// Serves on an already bound listener (so callers can learn the port first).
    pub fn serve(
        listener: tokio::net::TcpListener,
        routes: Routes<F>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        let address = listener.local_addr().map_err(|source| GatewayError {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let shared = Arc::new(Shared {
            routes,
            faults: std::sync::RwLock::new(config.faults.clone()),
            config,
            connections: Mutex::new(HashMap::new()),
            stats: GatewayStats::default(),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/@connections/{id}", any(management::<F>))
            .route("/{stage}/@connections/{id}", any(management_on_stage::<F>))
            .route("/", any(upgrade_default::<F>))
            .route("/{stage}", any(upgrade_on_stage::<F>))
            .fallback(post(|| async { StatusCode::NOT_FOUND }))
            .with_state(shared.clone());
        let token = shared.shutdown.clone();
        let server = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<SocketAddr>();
            if let Err(err) = axum::serve(listener, service)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
            {
                warn!(error = %err, "gateway server stopped");
            }
        });
        Ok(Self {
            shared,
            address,
            server,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.shared.stats
    }

    /// How many connections are open.
    pub fn open_connections(&self) -> usize {
        self.shared.connections.lock().expect("lock").len()
    }

    /// The ids of the open connections.
    pub fn connection_ids(&self) -> Vec<String> {
        self.shared
            .connections
            .lock()
            .expect("lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Changes the Management API faults from now on.
    pub fn set_faults(&self, faults: ManagementFaults) {
        *self.shared.faults.write().expect("faults lock") = faults;
    }

    /// Queues a text frame for a connection without going through the Management API
    /// (the benchmark's ceiling for raw WebSocket sends). Returns whether it exists.
    pub fn send(&self, connection_id: &str, text: &str) -> bool {
        let connection = self
            .shared
            .connections
            .lock()
            .expect("lock")
            .get(connection_id)
            .cloned();
        connection.is_some_and(|c| {
            c.outbound
                .send(Outbound::Frame(Message::text(text.to_owned())))
                .is_ok()
        })
    }

    /// Closes every connection (each gets its `$disconnect`) and stops listening.
    pub async fn shutdown(self) {
        let open: Vec<Arc<Connection>> = self
            .shared
            .connections
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        for connection in &open {
            let _ = connection
                .outbound
                .send(Outbound::Close(1001, "Going away"));
        }
        // Give the connections a moment to run their $disconnect.
        for _ in 0..50 {
            if self.shared.connections.lock().expect("lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.shared.shutdown.cancel();
        let _ = self.server.await;
    }
}

// ----- handshake -------------------------------------------------------------------

async fn upgrade_default<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> Response {
    let stage = shared.config.default_stage.clone();
    upgrade(shared, peer, parts, stage).await
}

async fn upgrade_on_stage<F: Invoke + Clone + 'static>(
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
        _ => "Internal server error",
    };
    (status, body).into_response()
}

fn has_identity_source(source: &str, handshake: &Handshake) -> bool {
    let present = |map: &BTreeMap<String, Vec<String>>, name: &str| {
        map.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && v.iter().any(|x| !x.is_empty()))
    };
    if let Some(name) = source.strip_prefix("route.request.querystring.") {
        present(&handshake.query, name)
    } else if let Some(name) = source.strip_prefix("route.request.header.") {
        present(&handshake.headers, name)
    } else {
        true
    }
}

async fn upgrade<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    peer: SocketAddr,
    mut parts: Parts,
    stage: String,
) -> Response {
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
                let status = response
                    .get("statusCode")
                    .and_then(Value::as_u64)
                    .unwrap_or(200) as u16;
                if !(200..300).contains(&status) {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                    info!(status = status.as_u16(), "handshake refused by $connect");
                    return status.into_response();
                }
                for (name, value) in response_headers(&response) {
                    if let (Ok(name), Ok(value)) = (
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderValue::from_str(&value),
                    ) {
                        extra_headers.insert(name, value);
                    }
                }
            }
        }
    }

    let (outbound, queue) = mpsc::unbounded_channel();
    let connection = Arc::new(Connection {
        info,
        authorizer,
        last_active: AtomicU64::new(received_at),
        outbound,
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
    tokio::spawn(async move {
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
                serve(shared, connection, socket, queue).await;
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

/// Reads an authorizer response: `Ok((principal, context))` for an Allow, the status
/// to answer otherwise.
fn read_policy(response: &Value) -> Result<(String, Map<String, Value>), (StatusCode, String)> {
    let statements: Vec<&Value> = match response.pointer("/policyDocument/Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorizer response has no policyDocument.Statement".into(),
            ));
        }
    };
    let effect = |s: &Value| {
        s.get("Effect")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if statements.iter().any(|s| effect(s) == "Deny")
        || !statements.iter().any(|s| effect(s) == "Allow")
    {
        return Err((StatusCode::FORBIDDEN, "authorizer policy denies".into()));
    }
    let context = match response.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorizer context is not an object".into(),
            ));
        }
    };
    if let Some((key, _)) = context
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean()))
    {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("authorizer context value {key:?} is not a string, number or boolean"),
        ));
    }
    let principal = response
        .get("principalId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((principal, context))
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

// ----- connection --------------------------------------------------------------------

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

async fn serve<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    connection: Arc<Connection>,
    mut socket: Socket,
    mut queue: mpsc::UnboundedReceiver<Outbound>,
) {
    let id = connection.info.connection_id.clone();
    let lifetime = tokio::time::sleep(shared.config.max_connection_duration);
    tokio::pin!(lifetime);
    let closing = |code: u16, reason: &'static str| (code, reason.to_owned(), Some((code, reason)));
    // (status for $disconnect, reason, close frame still to send)
    let (status, reason, close) = loop {
        let idle_for = Duration::from_millis(
            clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed)),
        );
        let idle_left = shared.config.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            frame = socket.next() => match frame {
                None => break (1006, "Connection closed abnormally".to_owned(), None),
                Some(Ok(Message::Text(text))) => route(&shared, &connection, text.as_bytes(), false),
                Some(Ok(Message::Binary(bytes))) => route(&shared, &connection, &bytes, true),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    connection.last_active.store(clock::now_ms(), Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite answers the close frame itself.
                    break match frame {
                        Some(f) => (u16::from(f.code), f.reason.to_string(), None),
                        None => (1005, "Client closed without a status".to_owned(), None),
                    };
                }
                Some(Err(tungstenite::Error::Capacity(err))) => {
                    debug!(connection_id = id, error = %err, "frame over the limit");
                    break closing(1009, "Message too big");
                }
                Some(Err(err)) => {
                    debug!(connection_id = id, error = %err, "socket read failed");
                    break (1006, "Connection closed abnormally".to_owned(), None);
                }
            },
            out = queue.recv() => match out {
                Some(Outbound::Frame(message)) => {
                    if socket.send(message).await.is_err() {
                        break (1006, "Connection closed abnormally".to_owned(), None);
                    }
                }
                Some(Outbound::Close(code, reason)) => break closing(code, reason),
                None => break closing(1001, "Going away"),
            },
            _ = tokio::time::sleep(idle_left) => {
                if clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed))
                    >= shared.config.idle_timeout.as_millis() as u64
                {
                    break closing(1001, "Going away");
                }
            }
            _ = &mut lifetime => break closing(1001, "Going away"),
        }
    };
    if let Some((code, text)) = close {
        let frame = CloseFrame {
            code: code.into(),
            reason: text.into(),
        };
        if socket.send(Message::Close(Some(frame))).await.is_ok() {
            // Read what the client still sends (the rest of an oversized frame, its
            // close reply) so that closing the socket does not reset the connection
            // before the client has read the close frame.
            let mut scratch = vec![0u8; 16 * 1024];
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while socket
                    .get_mut()
                    .read(&mut scratch)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            })
            .await;
        }
    }
    drop(socket);
    debug!(connection_id = id, status, "socket closed");
    finish(&shared, &connection, status, &reason).await;
}

/// Removes the connection and invokes `$disconnect`, once.
async fn finish<F: Invoke + Clone + 'static>(
    shared: &Shared<F>,
    connection: &Connection,
    status: u16,
    reason: &str,
) {
    let removed = shared
        .connections
        .lock()
        .expect("lock")
        .remove(&connection.info.connection_id)
        .is_some();
    if !removed {
        return;
    }
    info!(
        connection_id = connection.info.connection_id,
        status, reason, "disconnected"
    );
    if let Some(function) = shared.routes.routes.get("$disconnect") {
        let event = events::disconnect(
            &connection.info,
            status,
            reason,
            connection.authorizer.as_ref(),
            clock::now_ms(),
        );
        if let Err(err) = function.invoke(event).await {
            warn!(connection_id = connection.info.connection_id, error = %err, "$disconnect failed");
        }
    }
    shared.stats.disconnected.fetch_add(1, Ordering::Relaxed);
}

/// Routes one frame to its function, without waiting for it.
fn route<F: Invoke + Clone + 'static>(
    shared: &Arc<Shared<F>>,
    connection: &Arc<Connection>,
    body: &[u8],
    binary: bool,
) {
    let received_at = clock::now_ms();
    connection.last_active.store(received_at, Ordering::Relaxed);
    shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
    let key = if binary {
        "$default".to_owned()
    } else {
        select_route(&shared.routes.selection_expression, body)
            .filter(|key| shared.routes.routes.contains_key(key) && !key.starts_with('$'))
            .unwrap_or_else(|| "$default".to_owned())
    };
    let Some(function) = shared.routes.routes.get(&key).cloned() else {
        let reply = json!({"message": "Forbidden", "connectionId": connection.info.connection_id, "requestId": events::connection_id()});
        let _ = connection
            .outbound
            .send(Outbound::Frame(Message::Text(reply.to_string().into())));
        return;
    };
    let event = events::message(
        &connection.info,
        &key,
        body,
        binary,
        connection.authorizer.as_ref(),
        received_at,
    );
    let connection = connection.clone();
    tokio::spawn(async move {
        if let Err(err) = function.invoke(event).await {
            warn!(connection_id = connection.info.connection_id, route = key, error = %err, "route failed");
            let reply = json!({"message": "Internal server error", "connectionId": connection.info.connection_id, "requestId": events::connection_id()});
            let _ = connection
                .outbound
                .send(Outbound::Frame(Message::Text(reply.to_string().into())));
        }
    });
}

/// Evaluates `$request.body.<path>` against a JSON frame.
pub fn select_route(expression: &str, body: &[u8]) -> Option<String> {
    let path = expression.strip_prefix("$request.body.")?;
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut current = &value;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ----- Management API ----------------------------------------------------------------

async fn management_on_stage<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    Path((_stage, id)): Path<(String, String)>,
    parts: Parts,
    body: Bytes,
) -> Response {
    manage(shared, id, parts, body).await
}

async fn management<F: Invoke + Clone + 'static>(
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
    let connection = shared.connections.lock().expect("lock").get(&id).cloned();
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
            let Some(connection) = connection else {
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
            if connection.outbound.send(Outbound::Frame(message)).is_err() {
                return gone();
            }
            shared.stats.posts.fetch_add(1, Ordering::Relaxed);
            StatusCode::OK.into_response()
        }
        "GET" => {
            let Some(connection) = connection else {
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
            let Some(connection) = connection else {
                return gone();
            };
            // As in AWS: close the socket; the connection's task then runs $disconnect.
            let _ = connection
                .outbound
                .send(Outbound::Close(1000, "Connection deleted"));
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_selection_reads_the_body() {
        assert_eq!(
            select_route("$request.body.action", br#"{"action":"ping"}"#).as_deref(),
            Some("ping")
        );
        assert_eq!(
            select_route("$request.body.a.b", br#"{"a":{"b":"x"}}"#).as_deref(),
            Some("x")
        );
        assert_eq!(select_route("$request.body.action", b"not json"), None);
        assert_eq!(
            select_route("$request.body.action", br#"{"other":1}"#),
            None
        );
    }

    #[test]
    fn policies_allow_deny_and_check_context_values() {
        let allow = json!({"principalId": "alice", "policyDocument": {"Version": "2012-10-17", "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ["arn"]}]}, "context": {"sub": "alice", "n": 1, "b": true}});
        let (principal, context) = read_policy(&allow).unwrap();
        assert_eq!(principal, "alice");
        assert_eq!(context.len(), 3);
        let deny = json!({"principalId": "x", "policyDocument": {"Statement": [{"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "arn"}]}});
        assert_eq!(read_policy(&deny).unwrap_err().0, StatusCode::FORBIDDEN);
        let nested = json!({"principalId": "x", "policyDocument": {"Statement": [{"Effect": "Allow"}]}, "context": {"caps": {"a": 1}}});
        assert_eq!(
            read_policy(&nested).unwrap_err().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            read_policy(&json!({})).unwrap_err().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn query_strings_are_decoded() {
        let uri: Uri = "/local?token=a%20b+c%3D&x=1&x=2".parse().unwrap();
        let handshake = handshake_of(&HeaderMap::new(), &uri, "127.0.0.1:9".parse().unwrap());
        assert_eq!(handshake.query["token"], ["a b c="]);
        assert_eq!(handshake.query["x"], ["1", "2"]);
        assert_eq!(handshake.headers["X-Forwarded-For"], ["127.0.0.1"]);
    }

    #[test]
    fn identity_sources_must_be_present() {
        let handshake = Handshake {
            headers: BTreeMap::from([("Authorization".into(), vec!["Bearer x".into()])]),
            query: BTreeMap::from([("token".into(), vec!["".into()])]),
        };
        assert!(has_identity_source(
            "route.request.header.authorization",
            &handshake
        ));
        assert!(
            !has_identity_source("route.request.querystring.token", &handshake),
            "empty"
        );
        assert!(!has_identity_source(
            "route.request.header.X-Missing",
            &handshake
        ));
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
