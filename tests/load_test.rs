//! The load generator against the local stack: a churn run, and a run with the faults the
//! local stack can inject (Management API throttling and errors, crashing function
//! instances, stream batches delivered twice). Both must end with nothing lost, nothing
//! applied twice and nothing out of order.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use deltacast_local::stack::StackOptions;
use futures::FutureExt;

use deltacast_load::{LoadConfig, LoadReport, TokenSource, run};
use deltacast_tests::stack::{TestStack, start_stack_with};
use deltacast_tests::tokens;

/// One stack test at a time: two local stacks at once overload a 2-core machine.
static ONE_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn config(stack: &TestStack) -> LoadConfig {
    let mut config = LoadConfig::new(
        stack.stack.url.clone(),
        TokenSource::Secret(tokens::secret()),
    );
    config.connect_concurrency = 8;
    // The debug functions on a busy laptop answer in hundreds of ms, sometimes seconds;
    // retrying a publish too early only makes the server poll its claim.
    config.request_timeout = Duration::from_secs(5);
    // Publishes to one channel race for its next seq: more than a couple in flight per
    // channel adds retries and latency, not throughput.
    config.publish_window = 2;
    config.connect_timeout = Duration::from_secs(40);
    config.settle_timeout = Duration::from_secs(20);
    config.drain_timeout = Duration::from_secs(20);
    // Generous deadlines: a busy machine makes these runs slower, not wrong.
    config.publish_timeout = Some(Duration::from_secs(90));
    config.max_run_time = Some(Duration::from_secs(180));
    config
}

/// Starts a stack whose faults may fail its own readiness probe (a crashed authorizer or
/// `$connect` answers the probe's handshake with 500): tries a few times.
async fn start_flaky_stack(adjust: impl Fn(&mut StackOptions)) -> TestStack {
    for _ in 0..4 {
        let started = AssertUnwindSafe(start_stack_with(&adjust))
            .catch_unwind()
            .await;
        if let Ok(stack) = started {
            return stack;
        }
    }
    start_stack_with(&adjust).await
}

fn assert_ok(report: &LoadReport) {
    println!("{report}");
    println!(
        "{}",
        serde_json::to_string(report).expect("the report serialises")
    );
    assert!(report.ok(), "the run failed: {:?}", report.failures());
    assert_eq!(report.lost, 0);
    assert_eq!(report.duplicates_after_dedupe, 0);
    assert_eq!(report.out_of_order_applied, 0);
    assert_eq!(report.publishes_acked, report.publishes_planned);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_clients_catch_up_without_loss() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack
    let stack = start_stack_with(|options| options.max_instances = 6).await;

    // WHEN 30 clients on 3 channels receive 200 publishes while 10 % of them reconnect
    let mut load = config(&stack);
    load.connections = 30;
    load.channels = 3;
    load.publishers = 3;
    load.rate_per_second = 15.0;
    load.publishes = Some(200);
    load.churn = 0.1;
    load.seed = Some(7);
    let report = run(load).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN every client applied every delta from its starting point once, in order
    assert_ok(&report);
    assert_eq!(report.reconnects, 3, "3 of 30 clients churned once");
    assert!(report.latency_ms.count > 0);
}

/// The local stack with a flaky Management API (3 % of posts answer 429, 3 % answer
/// 500), crashing function instances (2 % of invocations) and stream batches delivered
/// twice (20 %).
async fn start_faulty_stack() -> TestStack {
    start_flaky_stack(|options| {
        options.max_instances = 6;
        options.gateway.faults.throttle_rate = 0.03;
        options.gateway.faults.error_rate = 0.03;
        options.function_faults.crash_rate = 0.02;
        options.duplicate_batch_rate = 0.2;
    })
    .await
}

/// 20 clients on 2 channels, 150 publishes at 10/s, 10 % churn.
fn faulty_load(stack: &TestStack) -> LoadConfig {
    let mut load = config(stack);
    load.connections = 20;
    load.channels = 2;
    load.publishers = 2;
    load.rate_per_second = 10.0;
    load.publishes = Some(150);
    load.churn = 0.1;
    load.seed = Some(11);
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_lose_nothing_and_duplicates_are_dropped() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack with injected faults
    let stack = start_faulty_stack().await;

    // WHEN 20 clients on 2 channels receive 150 publishes while 10 % of them reconnect
    // (a resubscribe whose catch-up goes unanswered twice falls back to `history`: see
    // `catch_up_survives_management_api_errors` for why that happens)
    let report = run(faulty_load(&stack))
        .await
        .expect("the configuration is valid");
    stack.shutdown().await;

    // THEN nothing is lost and every duplicate is removed by seq dedupe
    assert_ok(&report);
    assert!(
        report.duplicates_received > 0,
        "duplicated stream batches re-send deltas, which dedupe drops"
    );
}

/// A regression test: catch-up posts used to be sent once, and the first failed post
/// aborted the subscribe with no reply at all, so with a few percent of posts failing a
/// client that missed a few dozen deltas could not get back in through `since`. Replies
/// and catch-up posts are now retried, and an interrupted catch-up still answers
/// `subscribed` (with `recovered: false`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_survives_management_api_errors() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack with injected faults
    let stack = start_faulty_stack().await;

    // WHEN half of the clients reconnect after missing a few dozen deltas, and never give
    // up on `since`
    let mut load = faulty_load(&stack);
    load.churn = 0.5;
    load.away_min = Duration::from_secs(2);
    load.away_max = Duration::from_secs(3);
    load.catch_up_attempts = None;
    let report = run(load).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN every resubscribe catches up
    assert_ok(&report);
}

#[tokio::test]
async fn remote_hosts_need_permission() {
    let config = LoadConfig::new(
        "wss://example.execute-api.us-east-1.amazonaws.com/prod",
        TokenSource::Fixed("t".into()),
    );
    let err = run(config).await.expect_err("a remote host is refused");
    assert!(err.to_string().contains("--allow-remote"), "{err}");
}

/// A minimal deltacast stand-in (no auth, no storage, one epoch), to check the load
/// generator itself: that its verification catches a lost delta, that it reorders and
/// dedupes what a server may legitimately send, and what it costs per connection.
mod mock {
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
    }

    #[derive(Default)]
    struct Channel {
        deltas: Vec<Value>,
        ids: HashMap<String, u64>,
        subscribers: Vec<mpsc::UnboundedSender<String>>,
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

    fn handle(state: &State, tx: &mpsc::UnboundedSender<String>, frame: &Value) {
        let faults = state.faults;
        let name = frame["channel"].as_str().unwrap_or_default().to_owned();
        let mut channels = state.channels.lock().unwrap();
        let channel = channels.entry(name.clone()).or_default();
        let head = channel.deltas.len() as u64;
        let lost = |seq: u64| faults.lose_seq == Some(seq);
        match frame["action"].as_str() {
            Some("subscribe") => {
                channel.subscribers.retain(|s| !s.is_closed());
                channel.subscribers.push(tx.clone());
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
                    let _ = tx.send(json!({"type": "error", "code": code, "message": "injected", "id": id, "channel": name}).to_string());
                    return;
                }
                let seq = match channel.ids.get(&id) {
                    Some(seq) => *seq,
                    None => {
                        let seq = head + 1;
                        let delta = json!({"type": "delta", "channel": name, "seq": seq, "epoch": "e1", "id": id, "from": "mock", "ts": 0, "data": frame["data"]});
                        channel.deltas.push(delta.clone());
                        channel.ids.insert(id.clone(), seq);
                        if !lost(seq) {
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
                            for subscriber in &channel.subscribers {
                                for text in &out {
                                    let _ = subscriber.send(text.clone());
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
                let _ = tx.send(
                    json!({"type": "ack", "channel": name, "id": id, "seq": seq, "epoch": "e1"})
                        .to_string(),
                );
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
}

fn mock_config(url: String) -> LoadConfig {
    let mut config = LoadConfig::new(url, TokenSource::Fixed("unused".into()));
    config.connections = 20;
    config.channels = 2;
    config.publishers = 2;
    config.rate_per_second = 200.0;
    config.publishes = Some(100);
    config.churn = 0.2;
    config.away_min = Duration::from_millis(50);
    config.away_max = Duration::from_millis(200);
    config.gap_timeout = Duration::from_millis(100);
    // A hang guard: a healthy run settles in well under a second.
    config.settle_timeout = Duration::from_secs(20);
    config.max_run_time = Some(Duration::from_secs(30));
    config.seed = Some(3);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_reorders_and_dedupes() {
    // GIVEN a server that sends every delta twice and swaps neighbours
    let url = mock::serve(mock::Faults {
        duplicate_and_reorder: true,
        ..Default::default()
    })
    .await;

    // WHEN the generator runs against it
    let report = run(mock_config(url)).await.expect("valid");

    // THEN it applies everything once, in order, and counts what it dropped
    println!("{report}");
    assert!(report.ok(), "{:?}", report.failures());
    // Even seqs come twice; odd ones once, late.
    assert!(report.duplicates_received >= report.deliveries / 4);
    assert_eq!(report.reconnects, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_retry_refused_and_unanswered_publishes() {
    for code in ["rate_limited", "internal"] {
        // GIVEN a server that refuses every 7th publish and leaves every 5th unacked
        let url = mock::serve(mock::Faults {
            refuse_every: Some((7, code)),
            drop_ack_every: Some(5),
            ..Default::default()
        })
        .await;

        // WHEN the generator runs against it
        let mut config = mock_config(url);
        config.request_timeout = Duration::from_millis(300);
        let report = run(config).await.expect("valid");

        // THEN every publish is acked in the end, each stored once
        println!("{report}");
        assert!(report.ok(), "{code}: {:?}", report.failures());
        assert!(report.publish_errors[code] > 0);
        assert!(report.publish_errors["timeout"] > 0);
        assert!(report.publish_attempts > report.publishes_sent);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_notices_a_lost_delta() {
    // GIVEN a server that never delivers seq 7 of any channel, not even from history
    let url = mock::serve(mock::Faults {
        lose_seq: Some(7),
        ..Default::default()
    })
    .await;

    // WHEN the generator runs against it (this run can only end by timing out)
    let mut config = mock_config(url);
    config.settle_timeout = Duration::from_secs(5);
    let report = run(config).await.expect("valid");

    // THEN the report fails: every client is stuck before seq 7 of each channel
    println!("{report}");
    assert!(!report.ok());
    assert!(report.lost > 0);
    assert_eq!(report.clients_behind, 20);
    assert!(report.history_requests > 0, "gaps were asked for");
    assert!(
        report.history_requests < 20 * 30,
        "an unfillable gap is asked for less and less often"
    );
    assert_eq!(report.timed_out_in.as_deref(), Some("settle"));
}

/// Where the mock server process writes its address (see `mock_server_process`).
const MOCK_ADDRESS_FILE: &str = "DELTACAST_LOAD_MOCK_ADDRESS_FILE";

/// Not a test of its own: `ten_thousand_connections_in_one_process` runs this test binary
/// again with only this test, so that the mock server's sockets live in another process.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
#[ignore = "a helper process for ten_thousand_connections_in_one_process"]
async fn mock_server_process() {
    let Ok(file) = std::env::var(MOCK_ADDRESS_FILE) else {
        return;
    };
    let url = mock::serve(mock::Faults::default()).await;
    std::fs::write(&file, &url).expect("address written");
    // Bounded: the parent kills this process when it is done.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

/// The load generator's own cost at the scale the benchmark uses: 10,000 connections in
/// one process (against the mock, in a child process). Run with `--ignored --nocapture`;
/// it needs about 10,100 open files.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "opens 10,000 connections; run by hand"]
async fn ten_thousand_connections_in_one_process() {
    let file = std::env::temp_dir().join(format!("deltacast-mock-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let mut server = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["mock_server_process", "--exact", "--ignored", "--nocapture"])
        .env(MOCK_ADDRESS_FILE, &file)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("mock server process starts");
    let mut url = String::new();
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(&file)
            && !text.is_empty()
        {
            url = text;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!url.is_empty(), "the mock server process did not start");

    let rss_before = resident_kib();
    let mut config = LoadConfig::new(url, TokenSource::Fixed("unused".into()));
    config.connections = 10_000;
    config.channels = 100;
    config.publishers = 20;
    config.rate_per_second = 200.0;
    config.publishes = Some(2_000);
    config.churn = 0.05;
    config.connect_concurrency = 256;
    config.max_run_time = Some(Duration::from_secs(300));
    let report = run(config).await.expect("valid");
    let peak = peak_kib();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_file(&file);

    println!("{report}");
    println!(
        "resident memory: {} MiB before, peak {} MiB: about {} KiB per connection",
        rss_before / 1024,
        peak / 1024,
        peak.saturating_sub(rss_before) / 10_000
    );
    assert!(report.ok(), "{:?}", report.failures());
    assert_eq!(report.connected, 10_000);
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn resident_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}
