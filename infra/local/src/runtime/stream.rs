//! A streamed response's body as the Runtime API receives it (`Lambda-Runtime-Function-
//! Response-Mode: streaming`): a JSON metadata prelude (`statusCode`, `headers`,
//! `cookies`), eight NUL bytes, then the body as the function writes it. This file
//! splits the prelude off and passes the rest on as it comes.

use axum::body::{BodyDataStream, Bytes};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use super::api::FunctionError;

/// What separates the prelude from the body.
const DELIMITER: [u8; 8] = [0; 8];
/// The largest prelude read (headers and cookies are small).
const MAX_PRELUDE_BYTES: usize = 64 * 1024;

/// Reads up to the delimiter: the prelude, and the body bytes that came with it.
pub(super) async fn read_prelude(
    chunks: &mut BodyDataStream,
) -> Result<(Value, Bytes), FunctionError> {
    let mut read = Vec::new();
    loop {
        if let Some(at) = read
            .windows(DELIMITER.len())
            .position(|window| window == DELIMITER)
        {
            let prelude = serde_json::from_slice(&read[..at]).map_err(|error| {
                FunctionError::new(
                    "Runtime.InvalidResponse",
                    format!("the streamed response's prelude is not JSON: {error}"),
                )
            })?;
            let rest = Bytes::copy_from_slice(&read[at + DELIMITER.len()..]);
            return Ok((prelude, rest));
        }
        if read.len() > MAX_PRELUDE_BYTES {
            return Err(FunctionError::new(
                "Runtime.InvalidResponse",
                format!(
                    "no end of the prelude within {MAX_PRELUDE_BYTES} bytes of a streamed response"
                ),
            ));
        }
        match chunks.next().await {
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            // A stream without a prelude: the whole of it is the body (status 200).
            None => return Ok((Value::Null, Bytes::from(read))),
            Some(Err(error)) => {
                return Err(FunctionError::new(
                    "Runtime.InvalidResponse",
                    format!("the streamed response broke off: {error}"),
                ));
            }
        }
    }
}

/// Passes `first` and then every chunk on to `sender` until the body ends, breaks off,
/// or nobody reads any more.
pub(super) async fn pass_on(
    first: Bytes,
    chunks: &mut BodyDataStream,
    sender: &mpsc::Sender<Bytes>,
) {
    if !first.is_empty() && sender.send(first).await.is_err() {
        return;
    }
    while let Some(Ok(chunk)) = chunks.next().await {
        if chunk.is_empty() {
            continue;
        }
        if sender.send(chunk).await.is_err() {
            return;
        }
    }
}

/// A streamed response taken whole, as Lambda's Invoke API answers a streaming function:
/// its prelude (when it sent one), the eight NUL bytes, its body; `Err` with the function
/// error Lambda reports once it is over `limit` bytes (the rest is read and dropped, so
/// the function is not held up).
pub(super) async fn gather(
    head: crate::invoke::StreamHead,
    limit: usize,
) -> Result<Vec<u8>, crate::invoke::InvokeError> {
    let crate::invoke::StreamHead { prelude, mut body } = head;
    let mut whole = Vec::new();
    if !prelude.is_null() {
        whole.extend_from_slice(prelude.to_string().as_bytes());
        whole.extend_from_slice(&DELIMITER);
    }
    let mut over = false;
    while let Some(chunk) = body.recv().await {
        over = over || whole.len() + chunk.len() > limit;
        if !over {
            whole.extend_from_slice(&chunk);
        }
    }
    if over {
        return Err(crate::invoke::InvokeError::Function {
            error_type: "Function.ResponseSizeTooLarge".to_owned(),
            error_message: format!(
                "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
            ),
        });
    }
    Ok(whole)
}
