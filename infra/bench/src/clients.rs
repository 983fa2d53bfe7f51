//! The benchmark's audience: a child process (`deltacast-bench clients`) that holds many
//! WebSocket connections and reports when each one received what. It runs in its own
//! process so that the gateway's and the clients' sockets each stay under the per-process
//! file limit, and so that receiving does not compete with the gateway inside one
//! runtime.
//!
//! Protocol with the parent, one line each way:
//! - the child prints `ready {"ids": [...]}` once every client is connected and subscribed;
//! - `delta <channel> <seq>` → `{"times_us": [...], "missing": n}`: when each subscriber of
//!   `channel` received that delta;
//! - `bench <n>` → `{"times_us": [...], "missing": n}`: when each client received its
//!   n-th frame of type `bench` (frames the parent sends around the functions);
//! - `quit`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Mutex, mpsc};
use tokio_tungstenite::tungstenite::Message;

/// What the child is asked to do.
#[derive(Clone, Debug)]
pub struct ClientsArgs {
    /// The WebSocket URL (without token).
    pub url: String,
    /// The secret to sign each client's token with.
    pub secret: String,
    /// Channels and how many clients (the first ones) subscribe to each.
    pub channels: Vec<(String, usize)>,
    /// How many clients.
    pub count: usize,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

enum Event {
    Delta { channel: String, seq: u64, at: u64 },
    Bench { client: usize, at: u64 },
}

/// Runs the child: connects, subscribes, reports `ready`, then answers commands.
pub async fn run(args: ClientsArgs) -> Result<(), String> {
    let (events, mut incoming) = mpsc::unbounded_channel::<Event>();
    let ids = Arc::new(Mutex::new(vec![String::new(); args.count]));
    let results: Vec<Result<(), String>> = stream::iter(0..args.count)
        .map(|client| {
            let (args, events, ids) = (args.clone(), events.clone(), ids.clone());
            async move { connect(client, &args, events, ids).await }
        })
        .buffer_unordered(48)
        .collect()
        .await;
    if let Some(Err(err)) = results.into_iter().find(Result::is_err) {
        return Err(err);
    }
    let ids = ids.lock().await.clone();
    println!("ready {}", json!({ "ids": ids }));

    let mut deltas: HashMap<(String, u64), Vec<u64>> = HashMap::new();
    let mut bench: Vec<Vec<u64>> = vec![Vec::new(); args.count];
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let answer = match words.as_slice() {
            ["delta", channel, seq] => {
                let seq: u64 = seq.parse().map_err(|e| format!("bad seq: {e}"))?;
                let expected = args
                    .channels
                    .iter()
                    .find(|(c, _)| c == channel)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                let key = (channel.to_string(), seq);
                while deltas.get(&key).map_or(0, Vec::len) < expected {
                    match tokio::time::timeout_at(deadline, incoming.recv()).await {
                        Ok(Some(event)) => record(event, &mut deltas, &mut bench),
                        _ => break,
                    }
                }
                let times = deltas.remove(&key).unwrap_or_default();
                json!({"times_us": times, "missing": expected.saturating_sub(times.len())})
            }
            ["bench", n] => {
                let n: usize = n.parse().map_err(|e| format!("bad count: {e}"))?;
                while bench.iter().any(|b| b.len() < n) {
                    match tokio::time::timeout_at(deadline, incoming.recv()).await {
                        Ok(Some(event)) => record(event, &mut deltas, &mut bench),
                        _ => break,
                    }
                }
                let times: Vec<u64> = bench.iter().filter_map(|b| b.get(n - 1).copied()).collect();
                json!({"times_us": times, "missing": args.count - times.len()})
            }
            ["quit"] => break,
            _ => json!({"error": format!("unknown command {line:?}")}),
        };
        println!("{answer}");
    }
    Ok(())
}

fn record(event: Event, deltas: &mut HashMap<(String, u64), Vec<u64>>, bench: &mut [Vec<u64>]) {
    match event {
        Event::Delta {
            channel, seq, at, ..
        } => deltas.entry((channel, seq)).or_default().push(at),
        Event::Bench { client, at } => bench[client].push(at),
    }
}

async fn connect(
    client: usize,
    args: &ClientsArgs,
    events: mpsc::UnboundedSender<Event>,
    ids: Arc<Mutex<Vec<String>>>,
) -> Result<(), String> {
    let token = deltacast_local::stack::dev_token(
        &args.secret,
        &format!("bench-{client}"),
        Duration::from_secs(6 * 3600),
    );
    let url = format!("{}?token={token}", args.url);
    let mut attempt = 0;
    let (mut socket, _) = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok(ok) => break ok,
            Err(err) if attempt < 5 => {
                attempt += 1;
                tracing::debug!(client, error = %err, "retrying handshake");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(err) => return Err(format!("client {client}: handshake failed: {err}")),
        }
    };
    let mine: Vec<&String> = args
        .channels
        .iter()
        .filter(|(_, n)| client < *n)
        .map(|(c, _)| c)
        .collect();
    for channel in &mine {
        let frame = json!({"action": "subscribe", "channel": channel}).to_string();
        socket
            .send(Message::text(frame))
            .await
            .map_err(|e| e.to_string())?;
    }
    socket
        .send(Message::text(json!({"action": "ping"}).to_string()))
        .await
        .map_err(|e| e.to_string())?;
    let (mut subscribed, mut id) = (0, None);
    while subscribed < mine.len() || id.is_none() {
        let frame = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .map_err(|_| format!("client {client}: no reply to subscribe"))?;
        let Some(Ok(Message::Text(text))) = frame else {
            return Err(format!("client {client}: closed while subscribing"));
        };
        let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match value["type"].as_str() {
            Some("subscribed") => subscribed += 1,
            Some("pong") => id = value["connectionId"].as_str().map(str::to_owned),
            Some("error") => return Err(format!("client {client}: {value}")),
            _ => {}
        }
    }
    ids.lock().await[client] = id.unwrap_or_default();
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else {
                continue;
            };
            let at = now_us();
            let Ok(value) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            let event = match value["type"].as_str() {
                Some("delta") => Event::Delta {
                    channel: value["channel"].as_str().unwrap_or_default().to_owned(),
                    seq: value["seq"].as_u64().unwrap_or(0),
                    at,
                },
                Some("bench") => Event::Bench { client, at },
                _ => continue,
            };
            if events.send(event).is_err() {
                break;
            }
        }
    });
    Ok(())
}
