//! What the local stack's parts need from a function: invoke it with a JSON event and get
//! its JSON response, or learn how it failed, the way Lambda reports it.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

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

/// Something that can be invoked like a Lambda function.
pub trait Invoke: Send + Sync {
    /// Invokes with `event`; resolves to the function's response.
    fn invoke(&self, event: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send;
}
