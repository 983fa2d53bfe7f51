//! What the local stack's parts need from a function: invoke it with a JSON event and get
//! its JSON response, or learn how it failed, the way Lambda reports it; or, for a
//! function that streams its response (a function URL in `RESPONSE_STREAM` mode), its
//! metadata prelude and a body that arrives while the function runs; or, for Lambda's
//! Invoke API, under a request id the caller chose and with the tail of the invocation's
//! log ([`Invoke::invoke_with`]).

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

/// The most of an invocation's log a tail carries: Lambda's `X-Amz-Log-Result` holds the
/// last 4 KB.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;

/// What a caller asks of one invocation beyond its event, as Lambda's Invoke API carries
/// it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeOptions {
    /// The request id the function is to see, so that the caller can report it
    /// (`x-amzn-RequestId`) before or after the invocation; a new one when `None`.
    pub request_id: Option<String>,
    /// Whether to collect the invocation's log for its tail (`X-Amz-Log-Type: Tail`). Only
    /// invocations that ask pay for it.
    pub tail: bool,
}

/// What an invocation made with [`InvokeOptions`] gives back.
#[derive(Debug)]
pub struct Invocation {
    /// The function's response, or why there is none.
    pub result: Result<Value, InvokeError>,
    /// The last [`LOG_TAIL_BYTES`] of the invocation's log (`START`, the function's own
    /// lines, `END`, `REPORT`), when a tail was asked for, the invocation reached a
    /// process, and the implementor keeps logs; `None` otherwise.
    pub log_tail: Option<String>,
}

/// The account local ARNs and identities are written with.
pub const LOCAL_ACCOUNT: &str = "000000000000";

/// The region local ARNs are written with.
pub const LOCAL_REGION: &str = "us-east-1";

/// A local function's ARN, from its logical id in the template.
pub fn local_function_arn(id: &str) -> String {
    format!("arn:aws:lambda:{LOCAL_REGION}:{LOCAL_ACCOUNT}:function:{id}")
}

/// A response taken whole ([`Invoke::invoke_whole`]).
#[derive(Debug, PartialEq)]
pub enum Whole {
    /// A buffered (JSON) response.
    Json(Value),
    /// What a streaming function wrote: its prelude, the eight NUL bytes, its body.
    Streamed(Vec<u8>),
}

/// What [`Invoke::invoke_whole`] gives back.
#[derive(Debug)]
pub struct WholeInvocation {
    /// The whole response, or why there is none.
    pub result: Result<Whole, InvokeError>,
    /// The log's tail, as in [`Invocation::log_tail`].
    pub log_tail: Option<String>,
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

    /// Invokes with `event` as `options` ask, as Lambda's Invoke API runs a function of
    /// any kind: a streamed response is gathered whole, up to `limit` bytes (beyond them,
    /// the function error Lambda reports), and a failure after the stream started is
    /// still the invocation's. By default: [`Invoke::invoke_with`], whose responses are
    /// whole already.
    fn invoke_whole(
        &self,
        event: Value,
        options: InvokeOptions,
        limit: usize,
    ) -> impl Future<Output = WholeInvocation> + Send {
        let _ = limit;
        let invoked = self.invoke_with(event, options);
        async move {
            let Invocation { result, log_tail } = invoked.await;
            WholeInvocation {
                result: result.map(Whole::Json),
                log_tail,
            }
        }
    }

    /// Invokes with `event` as `options` ask: under their request id, and with the tail
    /// of the invocation's log. By default the request id is not passed on and there is no
    /// tail, so an implementor that keeps no logs need not write this.
    fn invoke_with(
        &self,
        event: Value,
        options: InvokeOptions,
    ) -> impl Future<Output = Invocation> + Send {
        drop(options);
        let invoked = self.invoke(event);
        async move {
            Invocation {
                result: invoked.await,
                log_tail: None,
            }
        }
    }
}
