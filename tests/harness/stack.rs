//! The whole local stack on a free port, on a fresh table, with the real function
//! binaries, and a WebSocket client that speaks the protocol the way an app does.

use std::path::PathBuf;
use std::time::Duration;

use deltacast::store::Store;
use deltacast_local::stack::{Stack, StackOptions};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::tokens::{secret, sign};
use crate::{dynamodb, lifetimes, unique_name, workspace_root};

/// How long a test waits for any one frame.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(20);

/// `target/debug` (or whichever profile built the running test).
pub fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test>
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// A running stack and direct access to its table.
pub struct TestStack {
    /// The stack.
    pub stack: Stack,
    /// The stack's table, for assertions.
    pub store: Store,
}

/// Starts the stack with the defaults tests use.
pub async fn start_stack() -> TestStack {
    start_stack_with(|_| {}).await
}

/// Starts the stack after `adjust` has changed the options.
pub async fn start_stack_with(adjust: impl FnOnce(&mut StackOptions)) -> TestStack {
    try_start_stack_with(adjust)
        .await
        .expect("local stack starts")
}

/// Like [`start_stack_with`], for tests of a stack that must not start.
pub async fn try_start_stack_with(
    adjust: impl FnOnce(&mut StackOptions),
) -> Result<TestStack, deltacast_local::stack::StackError> {
    // The stack's logs, when RUST_LOG asks for them (`--nocapture` to see them).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut options = StackOptions::new(workspace_root());
    options.bind = "127.0.0.1:0".parse().expect("address");
    options.dynamodb_endpoint = crate::dynamodb_endpoint();
    options.table_name = unique_name("e2e");
    options.functions_dir = binaries_dir();
    options.parameters.insert("JwtSecret".into(), secret());
    options.on_failure_path = std::env::temp_dir().join(format!("{}.jsonl", options.table_name));
    options.poll_interval = Duration::from_millis(50);
    options.max_instances = 4;
    adjust(&mut options);
    let table = options.table_name.clone();
    let stack = Stack::start(options).await?;
    let store = Store::new(dynamodb().await, table, lifetimes());
    Ok(TestStack { stack, store })
}

/// A handshake the gateway refused.
#[derive(Debug)]
pub struct Refused {
    /// The HTTP status.
    pub status: u16,
}

impl TestStack {
    /// A token for `sub` with `channels` capabilities.
    pub fn token(&self, sub: &str, channels: Value) -> String {
        sign(json!({"sub": sub, "channels": channels}))
    }

    /// A token for `sub` with `channels` capabilities that expires at `exp` (Unix seconds).
    pub fn token_expiring_at(&self, sub: &str, channels: Value, exp: u64) -> String {
        sign(json!({"sub": sub, "channels": channels, "exp": exp}))
    }

    /// Connects with `token` in the query string.
    pub async fn connect(&self, token: &str) -> Result<Client, Refused> {
        self.connect_url(&format!("{}?token={token}", self.stack.url))
            .await
    }

    /// Connects to a URL of this stack.
    pub async fn connect_url(&self, url: &str) -> Result<Client, Refused> {
        match tokio_tungstenite::connect_async(url).await {
            Ok((socket, _)) => Ok(Client { socket }),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Refused {
                status: response.status().as_u16(),
            }),
            Err(err) => panic!("handshake failed without an HTTP status: {err}"),
        }
    }

    /// Connects as `sub`, allowed everything on `*`.
    pub async fn connect_as(&self, sub: &str) -> Client {
        let token = self.token(sub, json!({"*": ["subscribe", "publish", "history"]}));
        self.connect(&token).await.expect("handshake accepted")
    }

    /// Stops everything.
    pub async fn shutdown(self) {
        self.stack.shutdown().await;
    }
}

/// A WebSocket client of the local stack.
pub struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Wraps a socket opened by the test itself (custom headers, subprotocols).
    pub fn from_socket(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        Self { socket }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.socket
            .send(Message::text(text.to_owned()))
            .await
            .expect("frame sent");
    }

    /// The next text frame, parsed; `None` when the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .expect("a frame within the timeout")?;
            match frame {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(&text).expect("frames are JSON"));
                }
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }

    /// The next frame whose `type` is `kind`, skipping others (e.g. deltas racing a reply).
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self
                .next()
                .await
                .unwrap_or_else(|| panic!("socket closed waiting for {kind}"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Sends `frame` and returns the reply of type `kind`.
    pub async fn request(&mut self, frame: Value, kind: &str) -> Value {
        self.send(frame).await;
        self.next_of(kind).await
    }

    /// Every frame that arrives before the answer to a `ping` sent now: what the server
    /// had already sent this connection, replies and deltas alike.
    pub async fn drain(&mut self) -> Vec<Value> {
        self.send(json!({"action": "ping", "id": "drain"})).await;
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await.expect("socket closed while draining");
            // A ping costs a rate-limit token like any request, so it may be refused.
            if frame["id"] == "drain" && (frame["type"] == "pong" || frame["type"] == "error") {
                return frames;
            }
            frames.push(frame);
        }
    }

    /// This connection's id (asks with `ping`).
    pub async fn connection_id(&mut self) -> String {
        let pong = self.request(json!({"action": "ping"}), "pong").await;
        pong["connectionId"]
            .as_str()
            .expect("pong names the connection")
            .to_owned()
    }

    /// Waits for the server to close the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<CloseCode> {
        loop {
            let frame = tokio::time::timeout(FRAME_TIMEOUT, self.socket.next())
                .await
                .expect("closed within the timeout");
            match frame {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| f.code),
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Polls `check` every 50 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
