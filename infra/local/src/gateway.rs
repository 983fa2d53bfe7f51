//! The local API Gateway: a WebSocket endpoint that runs the authorizer and the `$connect`,
//! route and `$disconnect` functions exactly as API Gateway does, and the Management API
//! (`/@connections/{id}`) on the same port, wire-compatible with the AWS SDKs.
//!
//! One connection is one task: it reads frames, routes each by the route selection
//! expression and invokes the route's function concurrently (as API Gateway does), and
//! writes whatever is queued for it — replies posted through the Management API by any
//! function. Limits are API Gateway's: frames over 32 KB and messages over 128 KB close
//! the connection with 1009, and idle and total-lifetime timeouts close it with 1001.
//!
//! A connection leaves the Management API's view (posts answer 410) the moment the gateway
//! decides to close it, before the closing handshake and `$disconnect` run, so no post is
//! acknowledged for a frame that will never be sent.

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
use axum::routing::any;
use deltacast::clock;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::events::{self, ConnectionInfo, Handshake};
use crate::invoke::{Invoke, InvokeError};

/// API Gateway's largest client frame.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// API Gateway's largest message (client or Management API).
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
/// Frames queued for one connection at most (see [`GatewayConfig::max_queued_frames`]).
pub const MAX_QUEUED_FRAMES: usize = 1_000;
/// How long a closing handshake may take before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long [`Gateway::shutdown`] waits for connections to close and run `$disconnect`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Frames waiting to be written to one connection at most. A post beyond them is
    /// answered 429 `LimitExceededException`, the throttling a client that reads too slowly
    /// meets in AWS, which senders already retry with backoff (rather than 410, which
    /// would make them forget a connection that is still there).
    pub max_queued_frames: usize,
    /// Management API faults.
    pub faults: ManagementFaults,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            default_stage: "local".into(),
            idle_timeout: Duration::from_secs(600),
            max_connection_duration: Duration::from_secs(7200),
            max_queued_frames: MAX_QUEUED_FRAMES,
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

/// A close the gateway asks of a connection's task: code and reason.
type CloseRequest = (u16, &'static str);

/// Why a frame could not be queued for a connection.
enum QueueError {
    /// The connection is closing or closed.
    Gone,
    /// Its queue is full.
    Full,
}

struct Connection {
    info: ConnectionInfo,
    authorizer: Option<Map<String, Value>>,
    last_active: AtomicU64,
    /// Frames for the client, at most [`GatewayConfig::max_queued_frames`]; the task closes
    /// the receiver as soon as it decides to close.
    outbound: mpsc::Sender<Message>,
    /// Set once by DELETE; the task then sends this close frame. Kept apart from
    /// `outbound` so that a full queue cannot hold a close back.
    close: watch::Sender<Option<CloseRequest>>,
}

impl Connection {
    /// Whether frames may still be queued: nobody has decided to close it.
    fn is_open(&self) -> bool {
        self.close.borrow().is_none() && !self.outbound.is_closed()
    }

    /// Queues a frame for the client.
    fn push(&self, message: Message) -> Result<(), QueueError> {
        if !self.is_open() {
            return Err(QueueError::Gone);
        }
        self.outbound.try_send(message).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Gone,
        })
    }

    /// Asks the connection's task to close with `code`; the first request wins.
    fn request_close(&self, code: u16, reason: &'static str) {
        self.close.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some((code, reason));
            }
            first
        });
    }
}

struct Shared<F> {
    routes: Routes<F>,
    config: GatewayConfig,
    /// The Management API faults in force (they can change while running).
    faults: std::sync::RwLock<ManagementFaults>,
    /// Open connections: the ones the Management API knows.
    connections: Mutex<HashMap<String, Arc<Connection>>>,
    stats: GatewayStats,
    /// Handshakes in progress, connection tasks and route invocations, which shutdown
    /// waits for.
    tasks: TaskTracker,
    /// Cancelled when shutdown starts: handshakes are refused, connections close.
    stopping: CancellationToken,
    /// Cancelled once connections are closed: the HTTP server stops.
    stop_server: CancellationToken,
}

impl<F> Shared<F> {
    /// The connection `id` if the Management API may still use it.
    fn open_connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections
            .lock()
            .expect("lock")
            .get(id)
            .filter(|connection| connection.is_open())
            .cloned()
    }

    /// Takes the connection out of the Management API's view.
    fn detach(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections.lock().expect("lock").remove(id)
    }
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

/// Binds `address` (port 0 picks a free port) for [`Gateway::serve`]; returns the
/// listener and the address it listens on, for callers that need the port first.
pub async fn bind(
    address: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr), GatewayError> {
    let error = |source| GatewayError { address, source };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

impl<F: Invoke + Clone + 'static> Gateway<F> {
    /// Listens on `address` (port 0 picks a free port) and serves until shut down.
    pub async fn start(
        address: SocketAddr,
        routes: Routes<F>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        let (listener, _) = bind(address).await?;
        Self::serve(listener, routes, config)
    }

    /// Serves on an already bound listener (see [`bind`]).
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
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            stop_server: CancellationToken::new(),
        });
        let app = Router::new()
            .route("/@connections/{id}", any(management::<F>))
            .route("/{stage}/@connections/{id}", any(management_on_stage::<F>))
            .route("/", any(upgrade_default::<F>))
            .route("/{stage}", any(upgrade_on_stage::<F>))
            .fallback(|| async { (StatusCode::NOT_FOUND, "Not Found") })
            .with_state(shared.clone());
        let token = shared.stop_server.clone();
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
    /// (the benchmark's ceiling for raw WebSocket sends). Returns whether it was queued:
    /// false when the connection is gone or its queue is full.
    pub fn send(&self, connection_id: &str, text: &str) -> bool {
        self.shared
            .open_connection(connection_id)
            .is_some_and(|c| c.push(Message::text(text.to_owned())).is_ok())
    }

    /// Refuses new handshakes, closes every connection with 1001, waits (at most 5 s) for
    /// each to finish its closing handshake and its `$disconnect`, and stops listening.
    /// The Management API keeps answering until then, for functions that still post.
    pub async fn shutdown(self) {
        self.shared.stopping.cancel();
        self.shared.connections.lock().expect("lock").clear();
        self.shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.shared.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                unfinished = self.shared.tasks.len(),
                "connections still closing after {SHUTDOWN_TIMEOUT:?}"
            );
        }
        self.shared.stop_server.cancel();
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
        StatusCode::SERVICE_UNAVAILABLE => "Service Unavailable",
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
                serve(shared, connection, socket, queue, close_requests).await;
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

// ----- connection --------------------------------------------------------------------

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How a connection's loop ended.
enum Ending {
    /// The client sent a close frame (tungstenite has queued the reply).
    ByClient { status: u16, reason: String },
    /// The gateway closes: send this close frame, then wait for the client's.
    ByGateway {
        code: u16,
        reason: &'static str,
        /// The read side is unusable (the rest of an oversized frame is still unread).
        unreadable: bool,
    },
    /// The socket failed or the client went away without a close frame.
    Abnormal,
}

impl Ending {
    fn by_gateway(code: u16, reason: &'static str) -> Self {
        Self::ByGateway {
            code,
            reason,
            unreadable: false,
        }
    }

    /// The status and reason `$disconnect` reports.
    fn disconnect_status(&self) -> (u16, String) {
        match self {
            Self::ByClient { status, reason } => (*status, reason.clone()),
            Self::ByGateway { code, reason, .. } => (*code, (*reason).to_owned()),
            Self::Abnormal => (1006, "Connection closed abnormally".to_owned()),
        }
    }
}

/// How long a connection opened at `connected_at` may still live at `now` (Unix ms): the
/// maximum lifetime counts from the handshake, as in API Gateway, not from the upgrade.
fn lifetime_left(connected_at: u64, now: u64, max: Duration) -> Duration {
    max.saturating_sub(Duration::from_millis(now.saturating_sub(connected_at)))
}

async fn serve<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    connection: Arc<Connection>,
    mut socket: Socket,
    mut queue: mpsc::Receiver<Message>,
    mut close_requests: watch::Receiver<Option<CloseRequest>>,
) {
    let id = connection.info.connection_id.clone();
    let lifetime = tokio::time::sleep(lifetime_left(
        connection.info.connected_at,
        clock::now_ms(),
        shared.config.max_connection_duration,
    ));
    tokio::pin!(lifetime);
    let close_request = |requests: &mut watch::Receiver<Option<CloseRequest>>| {
        let (code, reason) = requests.borrow_and_update().unwrap_or((1001, "Going away"));
        Ending::by_gateway(code, reason)
    };
    let ending = loop {
        let idle_for = Duration::from_millis(
            clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed)),
        );
        let idle_left = shared.config.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            frame = socket.next() => match frame {
                None => break Ending::Abnormal,
                Some(Ok(Message::Text(text))) => route(&shared, &connection, text.as_bytes(), false),
                Some(Ok(Message::Binary(bytes))) => route(&shared, &connection, &bytes, true),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    connection.last_active.store(clock::now_ms(), Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) => Ending::ByClient { status: u16::from(f.code), reason: f.reason.to_string() },
                        None => Ending::ByClient { status: 1005, reason: "Client closed without a status".to_owned() },
                    };
                }
                Some(Err(tungstenite::Error::Capacity(err))) => {
                    debug!(connection_id = id, error = %err, "frame over the limit");
                    break Ending::ByGateway { code: 1009, reason: "Message too big", unreadable: true };
                }
                Some(Err(err)) => {
                    debug!(connection_id = id, error = %err, "socket read failed");
                    break Ending::Abnormal;
                }
            },
            message = queue.recv() => {
                // The sender lives in `connection`, so the queue never ends here.
                let Some(message) = message else { break Ending::by_gateway(1001, "Going away") };
                // A client that does not read must not hold a DELETE or shutdown back.
                tokio::select! {
                    sent = socket.send(message) => if sent.is_err() { break Ending::Abnormal },
                    _ = close_requests.changed() => break close_request(&mut close_requests),
                    _ = shared.stopping.cancelled() => break Ending::by_gateway(1001, "Going away"),
                }
            }
            _ = close_requests.changed() => break close_request(&mut close_requests),
            _ = shared.stopping.cancelled() => break Ending::by_gateway(1001, "Going away"),
            _ = tokio::time::sleep(idle_left) => {
                if clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed))
                    >= shared.config.idle_timeout.as_millis() as u64
                {
                    break Ending::by_gateway(1001, "Going away");
                }
            }
            _ = &mut lifetime => break Ending::by_gateway(1001, "Going away"),
        }
    };
    // From here on the Management API answers 410: nothing it accepts could be sent.
    shared.detach(&id);
    queue.close();
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        close_handshake(&mut socket, &mut queue, &ending),
    )
    .await;
    drop(socket);
    let (status, reason) = ending.disconnect_status();
    debug!(connection_id = id, status, "socket closed");
    finish(&shared, &connection, status, &reason).await;
}

/// Completes the closing handshake so that the client sees a clean close, then closes the
/// TCP connection from this side (as RFC 6455 asks of servers).
async fn close_handshake(
    socket: &mut Socket,
    queue: &mut mpsc::Receiver<Message>,
    ending: &Ending,
) {
    match ending {
        Ending::Abnormal => return,
        Ending::ByClient { .. } => {
            // tungstenite only queues its reply to the client's close frame; reading on
            // writes it, and then ends the stream.
            while let Some(Ok(_)) = socket.next().await {}
        }
        Ending::ByGateway {
            code,
            reason,
            unreadable,
        } => {
            // Frames the Management API accepted before the close go out ahead of it.
            while let Ok(message) = queue.try_recv() {
                if socket.feed(message).await.is_err() {
                    return;
                }
            }
            let frame = CloseFrame {
                code: (*code).into(),
                reason: (*reason).into(),
            };
            if socket.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            if *unreadable {
                // The client's close reply sits behind bytes that cannot be parsed: end
                // the write side so that the client finishes the close, and read whatever
                // arrives until it hangs up (closing with unread data would reset the
                // connection before the client has read the close frame).
                let _ = socket.get_mut().shutdown().await;
                let mut scratch = vec![0u8; 16 * 1024];
                while socket
                    .get_mut()
                    .read(&mut scratch)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
                return;
            }
            // Until the client's close reply: then tungstenite ends the stream.
            while let Some(Ok(_)) = socket.next().await {}
        }
    }
    let _ = socket.get_mut().shutdown().await;
}

/// Runs `$disconnect` for a connection whose socket is closed; called once per connection.
async fn finish<F: Invoke + Clone + 'static>(
    shared: &Shared<F>,
    connection: &Connection,
    status: u16,
    reason: &str,
) {
    shared.detach(&connection.info.connection_id);
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
        let reply = json!({"message": "Forbidden", "connectionId": connection.info.connection_id, "requestId": events::request_id()});
        let _ = connection.push(Message::text(reply.to_string()));
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
    shared.tasks.spawn(async move {
        if let Err(err) = function.invoke(event).await {
            warn!(connection_id = connection.info.connection_id, route = key, error = %err, "route failed");
            let reply = json!({"message": "Internal server error", "connectionId": connection.info.connection_id, "requestId": events::request_id()});
            let _ = connection.push(Message::text(reply.to_string()));
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
    fn the_lifetime_counts_from_the_handshake() {
        let max = Duration::from_secs(10);
        assert_eq!(lifetime_left(1_000, 1_000, max), max);
        assert_eq!(lifetime_left(1_000, 4_000, max), Duration::from_secs(7));
        assert_eq!(
            lifetime_left(1_000, 20_000, max),
            Duration::ZERO,
            "already over"
        );
        assert_eq!(lifetime_left(5_000, 1_000, max), max, "clock went back");
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
