//! The gateway with a real WebSocket client and raw HTTP for the Management API, in front
//! of scripted functions (no processes, no DynamoDB): closing handshakes, what the
//! Management API answers while and after a connection closes, shutdown, the `$connect`
//! response, unknown paths, the outbound queue's limit and the dropping Management API fault.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deltacast_local::gateway::{Gateway, GatewayConfig, Routes};
use deltacast_local::invoke::{Invoke, InvokeError};
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Answer, HANG_GUARD, no_routes};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A function whose behaviour the test writes.
#[derive(Clone)]
struct Script(Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, InvokeError>> + Send + Sync>);

impl Script {
    fn new<Fut>(handler: impl Fn(Value) -> Fut + Send + Sync + 'static) -> Self
    where
        Fut: Future<Output = Result<Value, InvokeError>> + Send + 'static,
    {
        Self(Arc::new(move |event| handler(event).boxed()))
    }

    /// Answers every event with `response`.
    fn answering(response: Value) -> Self {
        Self::new(move |_| std::future::ready(Ok(response.clone())))
    }

    /// Counts the invocations that ran to the end, after a short pause (so that a caller
    /// that does not wait for them would see fewer).
    fn counting(done: Arc<AtomicUsize>) -> Self {
        Self::new(move |_| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                done.fetch_add(1, Ordering::SeqCst);
                Ok(json!({"statusCode": 200}))
            }
        })
    }
}

impl Invoke for Script {
    fn invoke(&self, event: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send {
        (self.0)(event)
    }
}

/// A gateway with `routes` (route key → function) and no authorizer.
async fn gateway(
    routes: impl IntoIterator<Item = (&'static str, Script)>,
    config: GatewayConfig,
) -> Gateway<Script> {
    gateway_on("127.0.0.1:0", routes, config).await
}

/// Like [`gateway`], listening on `address`.
async fn gateway_on(
    address: &str,
    routes: impl IntoIterator<Item = (&'static str, Script)>,
    config: GatewayConfig,
) -> Gateway<Script> {
    let routes = Routes {
        routes: routes
            .into_iter()
            .map(|(key, script)| (key.to_owned(), script))
            .collect(),
        ..no_routes()
    };
    Gateway::start(address.parse().expect("address"), routes, config)
        .await
        .expect("gateway starts")
}

/// Connects and returns the client with its connection id.
async fn connect(gateway: &Gateway<Script>) -> (Client, String) {
    let before = gateway.connection_ids();
    let (client, _) = guard(tokio_tungstenite::connect_async(format!(
        "ws://{}/local",
        gateway.address()
    )))
    .await
    .expect("handshake accepted");
    let id = gateway
        .connection_ids()
        .into_iter()
        .find(|id| !before.contains(id))
        .expect("the new connection is open");
    (client, id)
}

async fn guard<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG_GUARD, future)
        .await
        .expect("finished within the hang guard")
}

/// The next frame, or `None` once the stream has ended cleanly.
async fn next(client: &mut Client) -> Option<Result<Message, tungstenite::Error>> {
    guard(client.next()).await
}

/// Reads until the server's close frame, then checks that the stream ends cleanly (a
/// completed closing handshake, no reset). Returns the frames before it and its code.
async fn read_until_closed(client: &mut Client) -> (Vec<Message>, CloseCode) {
    let mut frames = Vec::new();
    let code = loop {
        match next(client).await {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close code").code,
            Some(Ok(message)) => frames.push(message),
            other => panic!("expected the server's close frame, got {other:?}"),
        }
    };
    assert!(
        next(client).await.is_none(),
        "the stream ends without an error after the closing handshake"
    );
    (frames, code)
}

/// `method path` with `body` over a fresh HTTP/1.1 connection; returns the status and
/// the whole answer.
async fn http(address: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Answer) {
    let answer = support::request(address, method, path, None, &[], body).await;
    (answer.status, answer)
}

/// Posts `body` to the connection `id` through the Management API.
async fn post(gateway: &Gateway<Script>, id: &str, body: &[u8]) -> (u16, Answer) {
    http(
        gateway.address(),
        "POST",
        &format!("/@connections/{id}"),
        body,
    )
    .await
}

/// The Management API's error type (`x-amzn-ErrorType`), if the answer has one.
fn error_type(response: &Answer) -> Option<&str> {
    response.header("x-amzn-errortype")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_a_close_frame() {
    // GIVEN an open connection
    let gateway = gateway([], GatewayConfig::default()).await;
    let (mut client, id) = connect(&gateway).await;

    // WHEN the client closes
    guard(client.close(None)).await.expect("close sent");

    // THEN the server answers with its close frame and ends the connection cleanly
    match next(&mut client).await {
        Some(Ok(Message::Close(_))) => {}
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    assert!(next(&mut client).await.is_none(), "clean close, no reset");
    // AND the Management API no longer knows the connection
    let (status, response) = post(&gateway, &id, b"late").await;
    assert_eq!(status, 410);
    assert_eq!(error_type(&response), Some("GoneException"));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_connection_is_gone_at_once_and_gets_what_was_posted_before() {
    // GIVEN an open connection with a frame posted to it
    let gateway = gateway([], GatewayConfig::default()).await;
    let (mut client, id) = connect(&gateway).await;
    assert_eq!(post(&gateway, &id, b"before").await.0, 200);

    // WHEN it is deleted
    let (status, _) = http(
        gateway.address(),
        "DELETE",
        &format!("/@connections/{id}"),
        b"",
    )
    .await;
    assert_eq!(status, 204);

    // THEN posts and GETs answer 410 straight away, and a second DELETE too
    let (status, response) = post(&gateway, &id, b"after").await;
    assert_eq!(status, 410);
    assert_eq!(error_type(&response), Some("GoneException"));
    let path = format!("/@connections/{id}");
    assert_eq!(http(gateway.address(), "GET", &path, b"").await.0, 410);
    assert_eq!(http(gateway.address(), "DELETE", &path, b"").await.0, 410);
    // AND the client gets the frame posted before, then a clean close with 1000
    let (frames, code) = read_until_closed(&mut client).await;
    assert_eq!(frames, vec![Message::text("before")]);
    assert_eq!(code, CloseCode::Normal);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_answers_any_peer_on_loopback() {
    // GIVEN a gateway on 127.0.0.2, so that the peer (127.0.0.1) is another loopback
    // address than the one it listens on (peers off this machine get 403: see the unit
    // tests of gateway::management, as tests never listen beyond loopback)
    let gateway = gateway_on("127.0.0.2:0", [], GatewayConfig::default()).await;
    let (mut client, id) = connect(&gateway).await;

    // WHEN this machine posts, with and without a stage, and describes the connection
    let (status, response) = post(&gateway, &id, b"one").await;
    assert_eq!(status, 200, "{}", response.body);
    let on_stage = format!("/local/@connections/{id}");
    assert_eq!(
        http(gateway.address(), "POST", &on_stage, b"two").await.0,
        200
    );
    let (status, response) = http(gateway.address(), "GET", &on_stage, b"").await;
    assert_eq!(status, 200, "{}", response.body);
    assert!(response.body.contains("connectedAt"), "{}", response.body);

    // THEN the client gets both frames
    for expected in ["one", "two"] {
        match next(&mut client).await {
            Some(Ok(frame)) => assert_eq!(frame, Message::text(expected)),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_cleanly_with_1009() {
    let gateway = gateway([], GatewayConfig::default()).await;
    let (mut client, id) = connect(&gateway).await;

    guard(client.send(Message::text("x".repeat(40 * 1024))))
        .await
        .expect("frame sent");

    let (_, code) = read_until_closed(&mut client).await;
    assert_eq!(code, CloseCode::Size);
    assert_eq!(post(&gateway, &id, b"late").await.0, 410);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_every_disconnect() {
    // GIVEN two open connections whose $disconnect takes a while
    let disconnected = Arc::new(AtomicUsize::new(0));
    let gateway = gateway(
        [("$disconnect", Script::counting(disconnected.clone()))],
        GatewayConfig::default(),
    )
    .await;
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (mut client, _) = connect(&gateway).await;
        readers.push(tokio::spawn(async move {
            read_until_closed(&mut client).await.1
        }));
    }

    // WHEN the gateway shuts down
    guard(gateway.shutdown()).await;

    // THEN both $disconnects have finished, and both clients saw a clean 1001
    assert_eq!(disconnected.load(Ordering::SeqCst), 2);
    for reader in readers {
        assert_eq!(guard(reader).await.expect("reader"), CloseCode::Away);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_not_found() {
    let gateway = gateway([], GatewayConfig::default()).await;
    for method in ["GET", "POST", "PUT", "DELETE"] {
        for path in ["/a/b/c", "/local/@connections/x/y"] {
            let (status, _) = http(gateway.address(), method, path, b"").await;
            assert_eq!(status, 404, "{method} {path}");
        }
    }
    gateway.shutdown().await;
}

/// Log output captured for one test: a `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("logs")).into_owned()
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread: the subscriber set for this test sees the gateway's tasks too.
#[tokio::test(flavor = "current_thread")]
async fn unknown_paths_are_logged_with_method_path_and_status_but_not_the_query() {
    // GIVEN a gateway whose log lines this test captures
    let logs = CapturedLogs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    let gateway = gateway([], GatewayConfig::default()).await;
    // WHEN a client asks for a path the gateway does not serve, with a token in the query
    let (status, _) = http(
        gateway.address(),
        "GET",
        "/a/b?token=do-not-log-me&x=1",
        b"",
    )
    .await;
    gateway.shutdown().await;
    // THEN it is answered 404 and logged, without the query
    assert_eq!(status, 404);
    let text = logs.text();
    let line = text
        .lines()
        .find(|line| line.contains("/a/b"))
        .unwrap_or_else(|| panic!("a log line for /a/b in:\n{text}"));
    assert!(line.contains("GET"), "{line}");
    assert!(line.contains("404"), "{line}");
    assert!(!text.contains("do-not-log-me"), "{text}");
    assert!(!text.contains("token="), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_headers_reach_the_client_but_cannot_break_the_handshake() {
    // GIVEN a $connect that picks a subprotocol and also tries to set handshake headers
    let connect = Script::answering(json!({
        "statusCode": 200,
        "headers": {
            "Sec-WebSocket-Protocol": "deltacast.v1",
            "X-Request-Id": "r1",
            "Sec-WebSocket-Accept": "bogus",
            "Upgrade": "h2c",
            "Connection": "close",
            "Sec-WebSocket-Extensions": "permessage-deflate",
        }
    }));
    let gateway = gateway([("$connect", connect)], GatewayConfig::default()).await;
    let mut request = format!("ws://{}/local", gateway.address())
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "deltacast.v1".parse().expect("header"),
    );

    // WHEN a client connects
    let (mut client, response) = guard(tokio_tungstenite::connect_async(request))
        .await
        .expect("the handshake completes");

    // THEN it gets the subprotocol and the custom header, and a working socket
    assert_eq!(response.headers()["sec-websocket-protocol"], "deltacast.v1");
    assert_eq!(response.headers()["x-request-id"], "r1");
    assert_eq!(response.headers()["upgrade"], "websocket");
    assert!(response.headers().get("sec-websocket-extensions").is_none());
    let id = gateway.connection_ids().pop().expect("connected");
    assert_eq!(post(&gateway, &id, b"hi").await.0, 200);
    assert_eq!(
        next(&mut client).await.expect("frame").expect("ok"),
        Message::text("hi")
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_status_that_is_no_http_status_is_a_function_error() {
    for (status_code, expected) in [(json!(65_736), 500), (json!(1_000), 500), (json!(403), 403)] {
        let connect = Script::answering(json!({"statusCode": status_code}));
        let gateway = gateway([("$connect", connect)], GatewayConfig::default()).await;
        let refused = guard(tokio_tungstenite::connect_async(format!(
            "ws://{}/local",
            gateway.address()
        )))
        .await;
        match refused {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(
                    response.status().as_u16(),
                    expected,
                    "statusCode {status_code}"
                );
            }
            other => panic!("statusCode {status_code}: expected a refusal, got {other:?}"),
        }
        assert_eq!(gateway.open_connections(), 0);
        gateway.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbound_queue_throttles_posts() {
    // GIVEN a connection whose client does not read, with room for 4 queued frames
    let config = GatewayConfig {
        max_queued_frames: 4,
        ..GatewayConfig::default()
    };
    let gateway = gateway([], config).await;
    let (client, id) = connect(&gateway).await;
    let frame = "x".repeat(100 * 1024);

    // WHEN frames keep coming until the socket's buffers and the queue are full
    let mut throttled = None;
    for _ in 0..10_000 {
        while gateway.send(&id, &frame) {}
        let (status, response) = post(&gateway, &id, frame.as_bytes()).await;
        if status != 200 {
            throttled = Some((status, response));
            break;
        }
    }

    // THEN the post is throttled, not refused as gone
    let (status, response) = throttled.expect("the queue filled up");
    assert_eq!(status, 429);
    assert_eq!(error_type(&response), Some("LimitExceededException"));
    drop(client);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropping_management_api_acknowledges_deltas_it_never_delivers() {
    // GIVEN a gateway whose Management API drops every delta frame it is posted
    let mut config = GatewayConfig::default();
    config.faults.drop_rate = 1.0;
    let gateway = gateway([], config).await;
    let (mut client, id) = connect(&gateway).await;

    // WHEN a delta and then a reply are posted to the connection
    let delta = br#"{"type":"delta","channel":"c","seq":1}"#;
    let reply = br#"{"type":"pong"}"#;
    let (delta_status, _) = post(&gateway, &id, delta).await;
    let (reply_status, _) = post(&gateway, &id, reply).await;

    // THEN both are acknowledged, but only the reply arrives
    assert_eq!((delta_status, reply_status), (200, 200));
    match next(&mut client).await {
        Some(Ok(Message::Text(text))) => assert_eq!(text.as_str(), r#"{"type":"pong"}"#),
        other => panic!("expected the reply, got {other:?}"),
    }
    assert_eq!(gateway.stats().dropped_posts.load(Ordering::Relaxed), 1);
    assert_eq!(gateway.stats().posts.load(Ordering::Relaxed), 1);
    gateway.shutdown().await;
}
