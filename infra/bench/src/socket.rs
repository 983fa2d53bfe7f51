//! A WebSocket client of a section's stack (live state, the HTTP API), as an app holds one: frames out, and every
//! frame in stamped with when it arrived (a reader task per socket), so figures are timed
//! at the client.

use std::time::{Duration, Instant};

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// One connection.
pub struct Socket {
    sink: Sink,
    frames: mpsc::UnboundedReceiver<(Instant, Value)>,
    /// Its connection id.
    pub id: String,
}

impl Socket {
    /// Connects as `sub` (every capability on every channel) and learns its id.
    pub async fn connect(url: &str, secret: &str, sub: &str) -> Result<Self, String> {
        let token = deltacast_local::stack::dev_token(secret, sub, Duration::from_secs(3600));
        let (socket, _) = tokio_tungstenite::connect_async(format!("{url}?token={token}"))
            .await
            .map_err(|e| format!("connecting {sub}: {e}"))?;
        let (sink, mut stream) = socket.split();
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                if let Message::Text(text) = message
                    && let Ok(frame) = serde_json::from_str::<Value>(&text)
                    && tx.send((Instant::now(), frame)).is_err()
                {
                    return;
                }
            }
        });
        let mut socket = Self {
            sink,
            frames,
            id: String::new(),
        };
        socket.send(&json!({"action": "ping", "id": "id"})).await?;
        let pong = socket
            .next_of("pong", Duration::from_secs(30))
            .await
            .ok_or_else(|| format!("{sub}: no pong"))?;
        socket.id = pong["connectionId"].as_str().unwrap_or_default().to_owned();
        Ok(socket)
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: &Value) -> Result<(), String> {
        self.sink
            .send(Message::text(frame.to_string()))
            .await
            .map_err(|e| e.to_string())
    }

    /// The next frame, if one comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Option<(Instant, Value)> {
        tokio::time::timeout(within, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// The next frame of type `kind` within `within`, skipping others.
    pub async fn next_of(&mut self, kind: &str, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (_, frame) = self.next(left).await?;
            if frame["type"] == kind {
                return Some(frame);
            }
        }
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        let _ = self.sink.close().await;
    }
}

/// Connects `count` sockets as `<prefix><i>`, `concurrency` at a time.
pub async fn connect_all(
    url: &str,
    secret: &str,
    prefix: &str,
    count: usize,
) -> Result<Vec<Socket>, String> {
    let sockets: Vec<Result<Socket, String>> = futures::stream::iter(0..count)
        .map(|i| async move { Socket::connect(url, secret, &format!("{prefix}{i}")).await })
        .buffered(32)
        .collect()
        .await;
    sockets.into_iter().collect()
}
