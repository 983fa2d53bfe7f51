//! The running gateway: it listens, sends each HTTP path to the handshake, the Management
//! API, the HTTP API (`/v1/`), Lambda's Invoke API (`/2015-03-31/functions/`), the demo
//! app (`/demo/`) or the metrics page (`/metrics`), answers (and logs) unknown paths with
//! 404, and shuts down in order — handshakes refused, connections closed with 1001 and
//! their `$disconnect` run, then the listener.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::config::{GatewayConfig, GatewayStats, ManagementFaults, Routes};
use super::demo::demo;
use super::handshake::{upgrade_default, upgrade_on_stage};
use super::http_api::http_api;
use super::invoke_api::{PATH as INVOKE_PATH, invocations};
use super::management::{management, management_on_stage};
use super::state::Shared;
use crate::invoke::Invoke;
use crate::metrics::{self, MetricsPage};

/// How long [`Gateway::shutdown`] waits for connections to close and run `$disconnect`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

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

/// Binds `address` (port 0 picks a free port) for [`Gateway::start_on`]; returns the
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
        Self::start_on(listener, routes, config)
    }

    /// Serves on an already bound listener (see [`bind`]); the Invoke API knows no function.
    pub fn start_on(
        listener: tokio::net::TcpListener,
        routes: Routes<F>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        Self::start_with_functions(listener, routes, config, BTreeMap::new())
    }

    /// Serves on an already bound listener (see [`bind`]), with `functions` (logical id →
    /// function) reachable through Lambda's Invoke API (`POST
    /// /2015-03-31/functions/{name}/invocations`).
    pub fn start_with_functions(
        listener: tokio::net::TcpListener,
        routes: Routes<F>,
        config: GatewayConfig,
        functions: BTreeMap<String, F>,
    ) -> Result<Self, GatewayError> {
        let address = listener.local_addr().map_err(|source| GatewayError {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let shared = Arc::new(Shared {
            address,
            routes,
            faults: std::sync::RwLock::new(config.faults.clone()),
            config,
            connections: Mutex::new(HashMap::new()),
            stats: GatewayStats::default(),
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            stop_server: CancellationToken::new(),
        });
        let mut app = Router::new()
            .route("/@connections/{id}", any(management::<F>))
            .route("/{stage}/@connections/{id}", any(management_on_stage::<F>))
            .route("/v1", any(http_api::<F>))
            .route("/v1/{*rest}", any(http_api::<F>))
            .route(INVOKE_PATH, invocations(functions, address))
            .route("/", any(upgrade_default::<F>))
            .route("/{stage}", any(upgrade_on_stage::<F>));
        // Only with a demo app: otherwise `/demo` stays a stage, as it always was.
        if shared.config.demo.is_some() {
            app = app
                .route("/demo", any(demo::<F>))
                .route("/demo/", any(demo::<F>))
                .route("/demo/{*rest}", any(demo::<F>));
        }
        // A fixed path: it wins over the `/{stage}` above.
        if let Some(page) = shared.config.metrics.clone() {
            app = app.route("/metrics", get(move || metrics_page(page.clone())));
        }
        let app = app.fallback(not_found).with_state(shared.clone());
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

/// The `/metrics` page, in Prometheus's text format.
async fn metrics_page(page: MetricsPage) -> Response {
    let headers = [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)];
    (headers, page.render()).into_response()
}

/// Answers a path the gateway does not serve with 404, and logs it: method, path and
/// status, never the query string (a handshake's query may hold a token).
async fn not_found(method: Method, uri: Uri) -> Response {
    let status = StatusCode::NOT_FOUND;
    info!(
        method = %method,
        path = uri.path(),
        status = status.as_u16(),
        "no such path"
    );
    (status, "Not Found").into_response()
}
