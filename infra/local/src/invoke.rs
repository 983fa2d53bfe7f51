//! What the local stack's parts need from a function: invoke it with a JSON event and get
//! its JSON response, or learn how it failed, the way Lambda reports it; or, for a
//! function that streams its response (a function URL in `RESPONSE_STREAM` mode), its
//! metadata prelude and a body that arrives while the function runs.

use std::future::Future;
use std::time::Duration;

use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

/// Why an invocation returned no response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The handler returned an error (`/invocation/{id}/error`).
    #[error("function error {error_type}: {error_message}")]
    Function {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// The runtime failed to initialise (`/init/error`, or exited before asking for work).
    #[error("init error {error_type}: {error_message}")]
    Init {
        /// `errorType`, e.g. `Runtime.ExitError`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// No response within the function's timeout; the instance was stopped.
    #[error("Task timed out after {:.2} seconds", .0.as_secs_f64())]
    Timeout(Duration),
    /// The process exited during the invocation (`Runtime.ExitError`).
    #[error("Runtime exited with error: {0}")]
    Crashed(String),
    /// The function could not be run at all (binary missing, stack shutting down, ...).
    #[error("function unavailable: {0}")]
    Unavailable(String),
}

/// A streamed response as it starts: the metadata prelude (`statusCode`, `headers`,
/// `cookies`) and the body, chunk by chunk, until the function ends it (or times out).
#[derive(Debug)]
pub struct StreamHead {
    /// The JSON the function sent before the eight NUL bytes.
    pub prelude: Value,
    /// The body's chunks; closed when the response ends.
    pub body: mpsc::Receiver<Bytes>,
}

/// What an invocation answered: a whole JSON response, or a stream.
#[derive(Debug)]
pub enum Invoked {
    /// A buffered response.
    Response(Value),
    /// A streamed response.
    Stream(StreamHead),
}

/// Something that can be invoked like a Lambda function.
pub trait Invoke: Send + Sync {
    /// Invokes with `event`; resolves to the function's response.
    fn invoke(&self, event: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send;

    /// Invokes with `event`, taking a streamed response as it starts (as Lambda's
    /// `InvokeWithResponseStream` does); a function that answers whole gives a
    /// [`Invoked::Response`].
    fn invoke_streaming(
        &self,
        event: Value,
    ) -> impl Future<Output = Result<Invoked, InvokeError>> + Send {
        let invoked = self.invoke(event);
        async move { invoked.await.map(Invoked::Response) }
    }
}
