//! Fan-out figures, each beside its ceiling: how fast the fan-out function pushes deltas
//! through the local Management API, how fast that endpoint takes posts from a minimal
//! unsigned HTTP client at the same concurrency, and how fast the gateway writes to
//! WebSockets at all; and, with 30 ms of injected Management API latency (modelling AWS),
//! how long a channel of up to 10,000 subscribers takes to receive a delta, measured from
//! the moment the fan-out invocation starts.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use deltacast_local::gateway::ManagementFaults;
use deltacast_local::stack::{Stack, dev_token};
use futures::{SinkExt, StreamExt, stream};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::clients::now_us;

/// One channel size's fan-out, with the injected latency.
#[derive(Clone, Debug, Serialize)]
pub struct SizePoint {
    /// Subscribers.
    pub subscribers: usize,
    /// Injected Management API latency, ms.
    pub latency_ms: u64,
    /// Duration of the fan-out invocation, ms.
    pub invocation_ms: f64,
    /// Delivery time after the invocation started, median, ms.
    pub p50_ms: f64,
    /// Delivery time after the invocation started, 99th percentile, ms.
    pub p99_ms: f64,
    /// Subscribers that never received it.
    pub missing: u64,
}

/// The fan-out figures.
#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    /// Posts in flight per fan-out invocation (`FANOUT_CONCURRENCY`).
    pub concurrency: usize,
    /// Deliveries per second by the fan-out function, no injected latency: subscribers of
    /// the largest channel over the time from its first to its last delivery (median of
    /// three deltas).
    pub fanout_msgs_per_s: f64,
    /// Posts per second the same endpoint takes from a minimal unsigned HTTP client at the
    /// same concurrency (median of three rounds).
    pub mgmt_max_msgs_per_s: f64,
    /// Frames per second the gateway writes to WebSockets when handed them directly
    /// (median of three rounds).
    pub ws_send_msgs_per_s: f64,
    /// 99th percentile delivery time for the largest channel with 30 ms latency, ms.
    pub fanout_10k_p99_ms: f64,
    /// Every size measured.
    pub by_size: Vec<SizePoint>,
}

struct Audience {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ids: Vec<String>,
}

impl Audience {
    async fn start(exe: &Path, stack: &Stack, sizes: &[usize]) -> Result<Self, String> {
        let count = sizes.iter().copied().max().unwrap_or(0);
        let channels: Vec<String> = sizes.iter().map(|n| format!("size-{n}:{n}")).collect();
        let mut child = Command::new(exe)
            .arg("clients")
            .arg("--url")
            .arg(&stack.url)
            .arg("--secret")
            .arg(&stack.jwt_secret)
            .arg("--count")
            .arg(count.to_string())
            .arg("--channels")
            .arg(channels.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the clients: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut lines = BufReader::new(child.stdout.take().ok_or("no stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(900), lines.next_line())
            .await
            .map_err(|_| "clients did not get ready within 15 minutes".to_owned())?
            .map_err(|e| e.to_string())?
            .ok_or("the clients exited")?;
        let ready: Value = serde_json::from_str(
            line.strip_prefix("ready ")
                .ok_or(format!("unexpected {line}"))?,
        )
        .map_err(|e| e.to_string())?;
        let ids = ready["ids"]
            .as_array()
            .ok_or("no ids")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        Ok(Self {
            child,
            stdin,
            lines,
            ids,
        })
    }

    async fn ask(&mut self, command: &str) -> Result<(Vec<u64>, u64), String> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let line = self
            .lines
            .next_line()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the clients exited")?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        let times = answer["times_us"]
            .as_array()
            .ok_or(format!("bad answer {line}"))?
            .iter()
            .filter_map(Value::as_u64)
            .collect();
        Ok((times, answer["missing"].as_u64().unwrap_or(0)))
    }

    async fn stop(mut self) {
        let _ = self.stdin.write_all(b"quit\n").await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let _ = self.child.kill().await;
    }
}

/// Rounds of each headline measurement; the median is reported.
const ROUNDS: usize = 3;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Publishes one delta on `channel` and measures its fan-out: the delivery times after
/// the invocation started, and the rate at which deliveries flowed (subscribers over the
/// time from the first to the last receipt).
#[allow(clippy::too_many_arguments)]
async fn one_delta(
    publisher: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    audience: &mut Audience,
    fanout: &deltacast_local::runtime::Function,
    channel: &str,
    seq: u64,
    id: &str,
    size: usize,
    latency_ms: u64,
) -> Result<(SizePoint, f64), String> {
    let sent = SystemTime::now();
    let frame = json!({"action": "publish", "channel": channel, "id": id, "data": {"t": now_us()}});
    publisher
        .send(Message::text(frame.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match publisher.next().await {
            Some(Ok(Message::Text(text))) if text.contains("\"ack\"") => break,
            Some(Ok(Message::Text(text))) if text.contains("\"error\"") => {
                return Err(format!("publish: {text}"));
            }
            Some(Ok(_)) => continue,
            other => return Err(format!("publisher: {other:?}")),
        }
    }
    let (times, missing) = audience.ask(&format!("delta {channel} {seq}")).await?;
    // The invocation is logged once it has answered, just after its last post.
    let mut invocation = None;
    for _ in 0..500 {
        invocation = fanout
            .stats()
            .invocation_log
            .iter()
            .filter(|(start, _)| *start >= sent)
            .min_by_key(|(start, _)| *start)
            .copied();
        if invocation.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let invocation = invocation.ok_or("no fan-out invocation after the publish")?;
    let start = epoch_us(invocation.0);
    let mut delays: Vec<f64> = times
        .iter()
        .map(|t| t.saturating_sub(start) as f64 / 1000.0)
        .collect();
    delays.sort_by(f64::total_cmp);
    let window_us = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
    let rate = times.len() as f64 / (window_us.max(1) as f64 / 1e6);
    Ok((
        SizePoint {
            subscribers: size,
            latency_ms,
            invocation_ms: invocation.1.as_secs_f64() * 1000.0,
            p50_ms: percentile(&delays, 50.0),
            p99_ms: percentile(&delays, 99.0),
            missing,
        },
        rate,
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    crate::percentile::nearest_rank(sorted, p / 100.0).unwrap_or(f64::NAN)
}

fn epoch_us(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Runs the fan-out measurements on a running stack, with `sizes` subscribers per channel.
pub async fn measure(
    exe: &Path,
    stack: &Stack,
    sizes: &[usize],
    concurrency: usize,
) -> Result<FanoutReport, String> {
    let mut audience = Audience::start(exe, stack, sizes).await?;
    let token = dev_token(
        &stack.jwt_secret,
        "bench-publisher",
        Duration::from_secs(3600),
    );
    let (mut publisher, _) =
        tokio_tungstenite::connect_async(format!("{}?token={token}", stack.url))
            .await
            .map_err(|e| format!("publisher: {e}"))?;
    let fanout = stack
        .functions()
        .get("FanoutFunction")
        .ok_or("no FanoutFunction in the template")?
        .clone();

    let mut by_size = Vec::new();
    let mut seqs = std::collections::HashMap::new();
    let largest = *sizes.iter().max().ok_or("no sizes")?;
    let mut delivery_rates = Vec::new();
    for latency_ms in [0u64, 30] {
        stack.gateway().set_faults(ManagementFaults {
            latency: Duration::from_millis(latency_ms),
            ..ManagementFaults::default()
        });
        for &size in sizes {
            // The headline figures are the median of three deltas; the curve takes one.
            let repeats = if size == largest { ROUNDS } else { 1 };
            let mut points = Vec::new();
            for round in 0..repeats {
                let channel = format!("size-{size}");
                let seq = seqs.entry(channel.clone()).or_insert(0u64);
                *seq += 1;
                let seq = *seq;
                let id = format!("b{latency_ms}-{size}-{round}");
                let (point, rate) = one_delta(
                    &mut publisher,
                    &mut audience,
                    &fanout,
                    &channel,
                    seq,
                    &id,
                    size,
                    latency_ms,
                )
                .await?;
                if latency_ms == 0 && size == largest {
                    delivery_rates.push(rate);
                }
                points.push(point);
            }
            points.sort_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
            let point = points.swap_remove(points.len() / 2);
            tracing::info!(?point, "fan-out measured");
            by_size.push(point);
        }
    }
    stack.gateway().set_faults(ManagementFaults::default());
    let point = |latency: u64| {
        by_size
            .iter()
            .find(|p| p.subscribers == largest && p.latency_ms == latency)
            .cloned()
            .ok_or("missing measurement")
    };
    let fanout_msgs_per_s = median(delivery_rates);
    let fanout_10k_p99_ms = point(30)?.p99_ms;

    // The ceiling of the endpoint: unsigned posts from a minimal client, same concurrency.
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let endpoint = stack.management_endpoint.clone();
    let mut mgmt_rates = Vec::new();
    let mut frames = 0;
    for _ in 0..ROUNDS {
        frames += 1;
        let body = Bytes::from(json!({"type": "bench", "n": frames}).to_string());
        let started = Instant::now();
        let failures = stream::iter(audience.ids.clone())
            .map(|id| {
                let (client, body, endpoint) = (client.clone(), body.clone(), endpoint.clone());
                async move {
                    let request = hyper::Request::post(format!("{endpoint}/@connections/{id}"))
                        .body(Full::new(body))
                        .expect("request");
                    matches!(client.request(request).await, Ok(r) if r.status().is_success())
                }
            })
            .buffer_unordered(concurrency)
            .filter(|ok| std::future::ready(!ok))
            .count()
            .await;
        let posted = started.elapsed();
        let (_, missing) = audience.ask(&format!("bench {frames}")).await?;
        if failures > 0 || missing > 0 {
            return Err(format!("{failures} posts failed, {missing} not delivered"));
        }
        mgmt_rates.push(audience.ids.len() as f64 / posted.as_secs_f64());
    }

    // The ceiling of the gateway: frames handed straight to the sockets.
    let mut ws_rates = Vec::new();
    for _ in 0..ROUNDS {
        frames += 1;
        let frame = json!({"type": "bench", "n": frames}).to_string();
        let start_us = now_us();
        for id in &audience.ids {
            stack.gateway().send(id, &frame);
        }
        let (times, missing) = audience.ask(&format!("bench {frames}")).await?;
        if missing > 0 {
            return Err(format!("{missing} raw frames not delivered"));
        }
        let last = times.iter().copied().max().unwrap_or(start_us);
        ws_rates.push(audience.ids.len() as f64 / ((last - start_us) as f64 / 1e6));
    }
    let mgmt_max_msgs_per_s = median(mgmt_rates);
    let ws_send_msgs_per_s = median(ws_rates);

    let _ = publisher.close(None).await;
    audience.stop().await;
    Ok(FanoutReport {
        concurrency,
        fanout_msgs_per_s,
        mgmt_max_msgs_per_s,
        ws_send_msgs_per_s,
        fanout_10k_p99_ms,
        by_size,
    })
}
