//! What the gateway's tasks share: the open connections (the ones the Management API can
//! reach), each with its queue of outbound frames and its close request, plus the task
//! tracker and cancellation tokens that shutdown uses. The handshake creates entries, the
//! connection task and the Management API read and remove them.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::config::{GatewayConfig, GatewayStats, ManagementFaults, Routes};
use crate::events::ConnectionInfo;

/// A close the gateway asks of a connection's task: code and reason.
pub(super) type CloseRequest = (u16, &'static str);

/// Why a frame could not be queued for a connection.
pub(super) enum QueueError {
    /// The connection is closing or closed.
    Gone,
    /// Its queue is full.
    Full,
}

pub(super) struct Connection {
    pub(super) info: ConnectionInfo,
    pub(super) authorizer: Option<Map<String, Value>>,
    pub(super) last_active: AtomicU64,
    /// Frames for the client, at most [`GatewayConfig::max_queued_frames`]; the task closes
    /// the receiver as soon as it decides to close.
    pub(super) outbound: mpsc::Sender<Message>,
    /// Set once by DELETE; the task then sends this close frame. Kept apart from
    /// `outbound` so that a full queue cannot hold a close back.
    pub(super) close: watch::Sender<Option<CloseRequest>>,
}

impl Connection {
    /// Whether frames may still be queued: nobody has decided to close it.
    pub(super) fn is_open(&self) -> bool {
        self.close.borrow().is_none() && !self.outbound.is_closed()
    }

    /// Queues a frame for the client.
    pub(super) fn push(&self, message: Message) -> Result<(), QueueError> {
        if !self.is_open() {
            return Err(QueueError::Gone);
        }
        self.outbound.try_send(message).map_err(|err| match err {
            mpsc::error::TrySendError::Full(_) => QueueError::Full,
            mpsc::error::TrySendError::Closed(_) => QueueError::Gone,
        })
    }

    /// Asks the connection's task to close with `code`; the first request wins.
    pub(super) fn request_close(&self, code: u16, reason: &'static str) {
        self.close.send_if_modified(|current| {
            let first = current.is_none();
            if first {
                *current = Some((code, reason));
            }
            first
        });
    }
}

pub(super) struct Shared<F> {
    /// Where the gateway listens; the Management API answers only this machine.
    pub(super) address: std::net::SocketAddr,
    pub(super) routes: Routes<F>,
    pub(super) config: GatewayConfig,
    /// The Management API faults in force (they can change while running).
    pub(super) faults: std::sync::RwLock<ManagementFaults>,
    /// Open connections: the ones the Management API knows.
    pub(super) connections: Mutex<HashMap<String, Arc<Connection>>>,
    pub(super) stats: GatewayStats,
    /// Handshakes in progress, connection tasks and route invocations, which shutdown
    /// waits for.
    pub(super) tasks: TaskTracker,
    /// Cancelled when shutdown starts: handshakes are refused, connections close.
    pub(super) stopping: CancellationToken,
    /// Cancelled once connections are closed: the HTTP server stops.
    pub(super) stop_server: CancellationToken,
}

impl<F> Shared<F> {
    /// The connection `id` if the Management API may still use it.
    pub(super) fn open_connection(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections
            .lock()
            .expect("lock")
            .get(id)
            .filter(|connection| connection.is_open())
            .cloned()
    }

    /// Takes the connection out of the Management API's view.
    pub(super) fn detach(&self, id: &str) -> Option<Arc<Connection>> {
        self.connections.lock().expect("lock").remove(id)
    }
}
