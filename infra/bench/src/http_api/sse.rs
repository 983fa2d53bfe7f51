//! A server-sent events reader for the bench: one GET held open, its body split into
//! events as chunks arrive, each `delta` event stamped with when its chunk came.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::mpsc;

/// An open stream: its `delta` events' data with when each arrived (Unix ms), and the
/// task reading it, aborted (closing the response) when the stream is dropped.
pub struct Stream {
    /// The deltas.
    pub deltas: mpsc::UnboundedReceiver<(u64, Value)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens `url` with `token`. The stream ends when the response does, or when dropped.
pub async fn open(url: &str, token: &str) -> Result<Stream, String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::new())
        .map_err(|e| e.to_string())?;
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("the event stream answered {}", response.status()));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let mut body = response.into_body();
    let reader = tokio::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(chunk) = frame.into_data() else {
                continue;
            };
            let at = deltacast::clock::now_ms();
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let event: String = buffer.drain(..end + 2).collect();
                if let Some(delta) = delta_of(&event)
                    && tx.send((at, delta)).is_err()
                {
                    return;
                }
            }
        }
    });
    Ok(Stream { deltas: rx, reader })
}

/// The data of a `delta` event.
fn delta_of(event: &str) -> Option<Value> {
    let mut kind = "message";
    let mut data = String::new();
    for line in event.lines() {
        if let Some(value) = line.strip_prefix("event: ") {
            kind = value;
        } else if let Some(value) = line.strip_prefix("data: ") {
            data.push_str(value);
        }
    }
    (kind == "delta")
        .then(|| serde_json::from_str(&data).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delta_events_are_read() {
        let delta = "id: e:1\nevent: delta\ndata: {\"seq\":1}\n\n";
        assert_eq!(delta_of(delta), Some(serde_json::json!({"seq": 1})));
        assert_eq!(delta_of("event: subscribed\ndata: {}\n\n"), None);
        assert_eq!(delta_of(": heartbeat\n\n"), None);
    }
}
