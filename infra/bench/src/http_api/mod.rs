//! The `http_api` section of `make bench` (issue 14): the HTTP API beside the WebSocket,
//! in one run on one stack (release binaries). Two publishers share one channel, one
//! over the socket (send → `ack`) and one over HTTP (request → answer), each
//! `--http-publishes` at `--http-rate` a second; `--http-subscribers` WebSocket
//! subscribers and as many server-sent event streams hold the channel. Reported:
//! publish p50/p99 by path, and delivery p50/p99 by path (arrival at the client minus
//! the delta's `ts`, the server's publish time), with every delivery counted. Then, on
//! paper from list prices, what one SSE subscriber-hour costs beside a WebSocket
//! connection-hour (docs/http.md).

mod rows;
mod sse;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::RunArgs;
use crate::cost::PRICES;
use crate::percentile::nearest_rank;
use crate::socket::{Socket, connect_all};

pub use rows::rows;

/// The section's settings (`deltacast-bench run --http-...`).
#[derive(clap::Args, Clone, Debug)]
pub struct HttpArgs {
    /// Publishes by each path (socket, HTTP).
    #[arg(id = "http-publishes", long = "http-publishes", default_value_t = 100)]
    pub publishes: usize,
    /// Publishes a second by each path.
    #[arg(id = "http-rate", long = "http-rate", default_value_t = 5.0)]
    pub rate: f64,
    /// WebSocket subscribers, and as many event streams.
    #[arg(
        id = "http-subscribers",
        long = "http-subscribers",
        default_value_t = 10
    )]
    pub subscribers: usize,
}

/// The channel both publishers share.
const CHANNEL: &str = "bench:http";
/// The http function's memory in the template (what an SSE hour is billed at).
const HTTP_MEMORY_GB: f64 = 0.125;
/// How often a stream reads its channel (`SSE_POLL_MS`, the default).
const SSE_POLL_MS: f64 = 250.0;
/// How long one stream lasts on AWS (`SSE_MAX_SECONDS`, the default): one invocation.
const SSE_STREAM_SECONDS: f64 = 840.0;
/// API Gateway's price per million WebSocket connection-minutes.
const CONNECTION_MINUTE_PER_MILLION: f64 = 0.25;

/// Measures the section.
pub async fn measure(args: &RunArgs) -> Result<Value, String> {
    let http = &args.http;
    // Each stream holds an instance of the http function for as long as it lasts.
    let stack = crate::start_stack_with(args, |options| {
        options.max_instances = http.subscribers + 8;
    })
    .await?;
    let base = stack
        .http_url
        .clone()
        .ok_or("the template has no function URL")?;
    let result = run(&stack.url, &base, &stack.jwt_secret, http).await;
    stack.shutdown().await;
    let mut section = result?;
    section["cost_per_subscriber_hour"] = cost_per_hour();
    Ok(section)
}

async fn run(url: &str, base: &str, secret: &str, http: &HttpArgs) -> Result<Value, String> {
    let token = deltacast_local::stack::dev_token(secret, "bench-http", Duration::from_secs(3600));
    let mut subscribers = connect_all(url, secret, "ws-sub-", http.subscribers).await?;
    for socket in &mut subscribers {
        socket
            .send(&json!({"action": "subscribe", "channel": CHANNEL, "id": "s"}))
            .await?;
        socket
            .next_of("subscribed", Duration::from_secs(30))
            .await
            .ok_or("no subscribed")?;
    }
    let mut streams = Vec::new();
    for _ in 0..http.subscribers {
        streams.push(sse::open(&format!("{base}/channels/{CHANNEL}/events"), &token).await?);
    }
    // Let every stream read its position before the first publish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let publisher = Socket::connect(url, secret, "ws-publisher").await?;
    let interval = Duration::from_secs_f64(1.0 / http.rate.max(0.1));
    let (socket_publish, http_publish) = tokio::join!(
        publish_socket(publisher, http.publishes, interval),
        publish_http(base, &token, http.publishes, interval),
    );
    let (socket_publish, http_publish) = (socket_publish?, http_publish?);
    let total = 2 * http.publishes;
    // Deliveries: until each subscriber has every delta, or 20 s of silence.
    let mut socket_delivery = Vec::new();
    let mut socket_received = 0;
    for socket in &mut subscribers {
        let mut got = 0;
        while got < total {
            let Some((at, frame)) = socket.next(Duration::from_secs(20)).await else {
                break;
            };
            if frame["type"] == "delta" {
                got += 1;
                socket_delivery
                    .push(wall_ms(at).saturating_sub(frame["ts"].as_u64().unwrap_or(0)) as f64);
            }
        }
        socket_received += got;
    }
    let mut sse_delivery = Vec::new();
    let mut sse_received = 0;
    for stream in &mut streams {
        let mut got = 0;
        while got < total {
            let next = tokio::time::timeout(Duration::from_secs(20), stream.deltas.recv()).await;
            let Ok(Some((at, delta))) = next else { break };
            got += 1;
            sse_delivery.push(at.saturating_sub(delta["ts"].as_u64().unwrap_or(0)) as f64);
        }
        sse_received += got;
    }
    for socket in subscribers {
        socket.close().await;
    }
    drop(streams);
    Ok(json!({
        "publishes_per_path": http.publishes,
        "rate_per_path": http.rate,
        "subscribers_per_path": http.subscribers,
        "publish_ms": {"websocket": summary(socket_publish), "http": summary(http_publish)},
        "delivery_ms": {"websocket": summary(socket_delivery), "sse": summary(sse_delivery)},
        "delivered": {
            "websocket": socket_received,
            "sse": sse_received,
            "expected_per_path": total * http.subscribers,
        },
        "sse_poll_ms": SSE_POLL_MS,
    }))
}

/// Publishes over the socket, one at a time; the time from send to `ack` of each.
async fn publish_socket(
    mut socket: Socket,
    count: usize,
    interval: Duration,
) -> Result<Vec<f64>, String> {
    let mut took = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let id = format!("ws-{i}");
        socket
            .send(&json!({"action": "publish", "channel": CHANNEL, "id": id, "data": {"i": i}}))
            .await?;
        loop {
            let (_, frame) = socket.next(Duration::from_secs(30)).await.ok_or("no ack")?;
            if frame["id"] == id.as_str() && frame["type"] == "ack" {
                break;
            }
            if frame["id"] == id.as_str() && frame["type"] == "error" {
                return Err(format!("socket publish refused: {frame}"));
            }
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
    socket.close().await;
    Ok(took)
}

/// Publishes over HTTP, one at a time; the time from request to answer of each.
async fn publish_http(
    base: &str,
    token: &str,
    count: usize,
    interval: Duration,
) -> Result<Vec<f64>, String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut took = Vec::with_capacity(count);
    for i in 0..count {
        let started = Instant::now();
        let body = json!({"id": format!("http-{i}"), "data": {"i": i}}).to_string();
        let request = Request::post(format!("{base}/channels/{CHANNEL}/messages"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if status != 200 {
            return Err(format!("HTTP publish answered {status}"));
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(interval.saturating_sub(started.elapsed())).await;
    }
    Ok(took)
}

/// p50, p99 and the count of `samples`.
fn summary(mut samples: Vec<f64>) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({
        "p50": nearest_rank(&samples, 0.50),
        "p99": nearest_rank(&samples, 0.99),
        "count": samples.len(),
    })
}

/// `at` on the wall clock, Unix ms.
fn wall_ms(at: Instant) -> u64 {
    deltacast::clock::now_ms().saturating_sub(at.elapsed().as_millis() as u64)
}

/// One idle subscriber-hour on AWS, from list prices: an SSE stream is an invocation of
/// the http function for its whole length plus a read a poll; a WebSocket connection is
/// connection minutes. Deliveries are extra for the WebSocket (a message each, and the
/// fan-out's work) and free for a stream (a poll's read returns up to 100 deltas).
fn cost_per_hour() -> Value {
    let lambda = HTTP_MEMORY_GB * 3600.0 * PRICES.lambda_gb_second;
    let requests = 3600.0 / SSE_STREAM_SECONDS * PRICES.lambda_request_per_million / 1e6;
    // One strongly consistent Query a poll; under 4 KB returned: 1 read unit.
    let reads = 3600.0 * 1000.0 / SSE_POLL_MS * PRICES.dynamodb_read_per_million / 1e6;
    let sse = lambda + requests + reads;
    let websocket = 60.0 * CONNECTION_MINUTE_PER_MILLION / 1e6;
    let per_message = PRICES.websocket_message_per_million / 1e6;
    json!({
        "sse_usd": sse,
        "sse_lambda_usd": lambda,
        "sse_reads_usd": reads,
        "sse_requests_usd": requests,
        "websocket_idle_usd": websocket,
        "sse_over_websocket_idle": sse / websocket,
        "websocket_message_usd": per_message,
        "break_even_messages_per_hour": (sse - websocket) / per_message,
        "assumes": format!(
            "http function at {} MB on arm64, SSE_POLL_MS {SSE_POLL_MS}, streams of {SSE_STREAM_SECONDS} s; the WebSocket's deliveries also cost the fan-out's Lambda time and reads, left out",
            HTTP_MEMORY_GB * 1024.0
        ),
    })
}
