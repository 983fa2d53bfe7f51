//! A minimal deltacast stand-in for the load generator's own tests (no auth, no storage,
//! one epoch): it checks that the generator's verification catches a lost delta and a
//! missed push, that it reorders and dedupes what a server may legitimately send (acks
//! twice, several deltas in one coalesced `deltas` frame), that it retries `in_flight` and
//! `rate_limited` after `retryAfterMs`, and what it costs per connection. Included by `load_test.rs` as `mod mock`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How the mock misbehaves.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// This seq (of every channel) is never sent, live or from history.
    pub lose_seq: Option<u64>,
    /// Send every delta twice, and each odd seq after the next one.
    pub duplicate_and_reorder: bool,
    /// Answer every n-th publish frame with this error code, storing nothing.
    pub refuse_every: Option<(u64, &'static str)>,
    /// Store every n-th publish frame but send no ack.
    pub drop_ack_every: Option<u64>,
    /// Never push seqs divisible by n live (catch-up and history still have them): a
    /// fan-out whose posts are acknowledged and lost.
    pub unpushed_every: Option<u64>,
    /// The `retryAfterMs` of the refusals of `refuse_every`.
    pub retry_after_ms: Option<u64>,
    /// Send every ack twice (acks are asynchronous and may repeat).
    pub duplicate_acks: bool,
}

/// How often the deltas held for coalescing subscribers go out, in one `deltas` frame per
/// subscriber and channel.
const COALESCE_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

/// One subscription: where its frames go, and for a coalescing one (`"coalesce": true`)
/// the deltas held for its next `deltas` frame.
struct Subscriber {
    tx: mpsc::UnboundedSender<String>,
    coalesced: Option<Vec<Value>>,
}

#[derive(Default)]
struct Channel {
    deltas: Vec<Value>,
    ids: HashMap<String, u64>,
    subscribers: Vec<Subscriber>,
    held: Option<String>,
}

struct State {
    faults: Faults,
    channels: Mutex<HashMap<String, Channel>>,
    publishes: std::sync::atomic::AtomicU64,
}

/// Serves on a free loopback port; returns its `ws://` URL.
pub async fn serve(faults: Faults) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address: SocketAddr = listener.local_addr().expect("address");
    let state = Arc::new(State {
        faults,
        channels: Mutex::new(HashMap::new()),
        publishes: std::sync::atomic::AtomicU64::new(0),
    });
    let flusher = state.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(COALESCE_EVERY).await;
            flush_coalesced(&flusher);
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                if let Ok(socket) = tokio_tungstenite::accept_async(stream).await {
                    connection(state, socket).await;
                }
            });
        }
    });
    format!("ws://{address}/local")
}

async fn connection(
    state: Arc<State>,
    socket: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).expect("JSON frames");
            handle(&state, &tx, &frame);
        }
    }
    writer.abort();
}

/// Sends each coalescing subscriber what was held for it, in one `deltas` frame.
fn flush_coalesced(state: &State) {
    let mut channels = state.channels.lock().unwrap();
    for (name, channel) in channels.iter_mut() {
        for subscriber in &mut channel.subscribers {
            if let Some(held) = subscriber.coalesced.as_mut().filter(|h| !h.is_empty()) {
                let deltas = std::mem::take(held);
                let frame = json!({"type": "deltas", "channel": name, "deltas": deltas});
                let _ = subscriber.tx.send(frame.to_string());
            }
        }
    }
}

fn handle(state: &State, tx: &mpsc::UnboundedSender<String>, frame: &Value) {
    let faults = state.faults;
    let name = frame["channel"].as_str().unwrap_or_default().to_owned();
    let mut channels = state.channels.lock().unwrap();
    let channel = channels.entry(name.clone()).or_default();
    let head = channel.deltas.len() as u64;
    let lost = |seq: u64| faults.lose_seq == Some(seq);
    match frame["action"].as_str() {
        Some("subscribe") => {
            channel.subscribers.retain(|s| !s.tx.is_closed());
            let coalesce = frame["coalesce"] == json!(true);
            channel.subscribers.push(Subscriber {
                tx: tx.clone(),
                coalesced: coalesce.then(Vec::new),
            });
            let mut reply = json!({"type": "subscribed", "channel": name, "seq": head, "epoch": "e1", "id": frame["id"]});
            if let Some(since) = frame["since"].as_u64() {
                for delta in channel.deltas.iter().skip(since as usize) {
                    if !lost(delta["seq"].as_u64().unwrap()) {
                        let _ = tx.send(delta.to_string());
                    }
                }
                reply["recovered"] = json!(true);
            }
            let _ = tx.send(reply.to_string());
        }
        Some("publish") => {
            let id = frame["id"].as_str().unwrap().to_owned();
            let n = 1 + state
                .publishes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some((every, code)) = faults.refuse_every
                && n.is_multiple_of(every)
            {
                let mut error = json!({"type": "error", "code": code, "message": "injected", "id": id, "channel": name});
                if let Some(ms) = faults.retry_after_ms {
                    error["retryAfterMs"] = json!(ms);
                }
                let _ = tx.send(error.to_string());
                return;
            }
            let seq = match channel.ids.get(&id) {
                Some(seq) => *seq,
                None => {
                    let seq = head + 1;
                    let delta = json!({"type": "delta", "channel": name, "seq": seq, "epoch": "e1", "id": id, "from": "mock", "ts": 0, "data": frame["data"]});
                    channel.deltas.push(delta.clone());
                    channel.ids.insert(id.clone(), seq);
                    let unpushed = faults
                        .unpushed_every
                        .is_some_and(|every| seq.is_multiple_of(every));
                    if !lost(seq) && !unpushed {
                        let text = delta.to_string();
                        let mut out = vec![text.clone()];
                        if faults.duplicate_and_reorder {
                            out.push(text.clone());
                            if seq % 2 == 1 {
                                channel.held = Some(text);
                                out.clear();
                            } else if let Some(held) = channel.held.take() {
                                out.push(held);
                            }
                        }
                        for subscriber in &mut channel.subscribers {
                            match &mut subscriber.coalesced {
                                Some(held) => {
                                    let mut element = delta.clone();
                                    element.as_object_mut().unwrap().remove("type");
                                    held.push(element);
                                }
                                None => {
                                    for text in &out {
                                        let _ = subscriber.tx.send(text.clone());
                                    }
                                }
                            }
                        }
                    }
                    seq
                }
            };
            if faults
                .drop_ack_every
                .is_some_and(|every| n.is_multiple_of(every))
            {
                return;
            }
            let ack = json!({"type": "ack", "channel": name, "id": id, "seq": seq, "epoch": "e1"})
                .to_string();
            if faults.duplicate_acks {
                let _ = tx.send(ack.clone());
            }
            let _ = tx.send(ack);
        }
        Some("history") => {
            let since = frame["since"].as_u64().unwrap_or(0);
            let limit = frame["limit"].as_u64().unwrap_or(100);
            let deltas: Vec<&Value> = channel
                .deltas
                .iter()
                .skip(since as usize)
                .take(limit as usize)
                .filter(|d| !lost(d["seq"].as_u64().unwrap()))
                .collect();
            let more = since + limit < head;
            let _ = tx.send(json!({"type": "history", "channel": name, "epoch": "e1", "seq": head, "deltas": deltas, "more": more, "id": frame["id"]}).to_string());
        }
        _ => {}
    }
}
