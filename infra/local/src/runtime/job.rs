//! One invocation on its way from the pool to an instance, and what comes back: the
//! types both sides agree on, so neither imports the other.

use axum::body::Bytes;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

use super::tail::InvocationLog;
use crate::invoke::{InvokeError, StreamHead};

/// Where a streamed response goes as it starts, shared by the attempts of one invocation
/// (a job an instance did not accept is made again for another).
pub(super) type StreamSlot = Arc<Mutex<Option<oneshot::Sender<StreamHead>>>>;

/// One invocation, handed from the pool to an instance.
pub(super) struct Job {
    /// The request id the process will see.
    pub(super) request_id: String,
    /// The event, serialised once by the pool.
    pub(super) event: Bytes,
    /// Where the outcome goes.
    pub(super) reply: oneshot::Sender<Outcome>,
    /// Where a streamed response goes as it starts, when the caller takes streams.
    pub(super) stream: Option<StreamSlot>,
    /// Where the process's lines go while it runs, when the caller asked for a log tail
    /// (shared, like `stream`, by the attempts of one invocation).
    pub(super) log: Option<Arc<InvocationLog>>,
}

/// What became of a [`Job`].
pub(super) enum Outcome {
    /// The instance was gone before it took the job; the pool tries another.
    NotAccepted,
    /// The invocation ran (or failed); the pool keeps or discards the instance.
    Done(Report),
}

/// The result of an invocation on an instance.
pub(super) struct Report {
    /// The function's response, or why there is none.
    pub(super) result: Result<Value, InvokeError>,
    /// Whether the instance can take the next invocation (it is alive and idle).
    pub(super) reusable: bool,
    /// From the event's delivery to the answer (from acceptance if it was never delivered).
    pub(super) duration: Duration,
    /// The instance that ran it.
    pub(super) instance: u64,
}

/// A random UUID (version 4), the form of Lambda's request ids; also used by the stream
/// trigger's on-failure records.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
