//! The load generator against the local stack: runs without churn, with churn, with the
//! faults the local stack can inject (Management API throttling and errors, crashing
//! function instances, stream batches delivered twice), and with a Management API that
//! drops what it acknowledges. Each must end with nothing lost, nothing applied twice and
//! nothing out of order, and the report's delivery paths must say how each delta came:
//! pushed to clients that stayed, caught up by clients that reconnected, never by
//! `history` unless a push was lost (which must fail the run). Then the generator's own
//! checks against a mock server (`load_mock.rs`).

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

/// Seqs a run applies in all when every client subscribes (from seq 0) before the first
/// publish: each of a channel's subscribers applies every publish acked on it (a slow
/// machine may end the publish phase before all are sent).
fn expected_applied(load: &LoadConfig, report: &LoadReport) -> u64 {
    let subscriptions = load.connections * load.channels_per_connection;
    assert_eq!(
        subscriptions % load.channels,
        0,
        "as many clients on each channel"
    );
    (subscriptions / load.channels) as u64 * report.publishes_acked
}

/// The paths of a run without faults: every seq applied once; clients that never
/// reconnected got everything pushed; nobody needed `history`.
fn assert_pushed_or_caught_up(report: &LoadReport, load: &LoadConfig) {
    let d = &report.delivered;
    assert_eq!(
        d.pushed + d.catch_up + d.history,
        expected_applied(load, report),
        "every seq applied once, counted by its first path"
    );
    assert_eq!(d.history, 0, "no gap needed history");
    assert_eq!(d.recovered_by_steady_clients, 0);
    assert_eq!(report.catch_up_fallbacks, 0);
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

/// `connections` clients spread over `channels`, `publishers` of them publishing
/// `publishes` at `rate`/s, nobody reconnecting.
fn steady_load(
    stack: &TestStack,
    (connections, channels, publishers): (usize, usize, usize),
    rate: f64,
    publishes: u64,
) -> LoadConfig {
    let mut load = config(stack);
    load.connections = connections;
    load.channels = channels;
    load.publishers = publishers;
    load.rate_per_second = rate;
    load.publishes = Some(publishes);
    load.churn = 0.0;
    load.gap_timeout = PUSH_GAP_TIMEOUT;
    load
}

/// 10 of 20 clients on one channel, which they all subscribe to, publish `publishes` at
/// `rate`/s, four in flight each so that they contend for its seqs, on a stack whose
/// channel limit is `channel_limit`/s with bursts as large (0: off). Returns the report
/// and how many items of the table carry `attribute` after the run.
async fn contended_channel_run(
    channel_limit: u32,
    rate: f64,
    publishes: u64,
    attribute: &str,
) -> (LoadReport, usize) {
    let stack = start_stack_with(|options| {
        options.max_instances = 6;
        let limit = channel_limit.to_string();
        options
            .env
            .insert("CHANNEL_RATE_LIMIT_BURST".into(), limit.clone());
        if channel_limit > 0 {
            options
                .env
                .insert("CHANNEL_RATE_LIMIT_PER_SECOND".into(), limit);
        }
    })
    .await;
    let mut load = steady_load(&stack, (20, 1, 10), rate, publishes);
    load.publish_window = 4;
    let report = run(load).await.expect("the configuration is valid");
    let carrying = deltacast_tests::all_items(&stack.store)
        .await
        .iter()
        .filter(|item| item.contains_key(attribute))
        .count();
    stack.shutdown().await;
    (report, carrying)
}

/// Asserts that the run's refusals were all of `codes`, and none `internal`.
fn assert_refused_only(report: &LoadReport, codes: &[&str]) {
    assert!(
        report
            .refused_by_code
            .keys()
            .all(|code| codes.contains(&code.as_str())),
        "{:?}",
        report.refused_by_code
    );
    assert_eq!(report.errors.get("internal_server_error_frames"), None);
}

/// 30 clients on 3 channels, 200 publishes at 15/s, 10 % churn (the experiment).
fn churn_load(stack: &TestStack) -> LoadConfig {
    let mut load = config(stack);
    load.connections = 30;
    load.channels = 3;
    load.publishers = 3;
    load.rate_per_second = 15.0;
    load.publishes = Some(200);
    load.churn = 0.1;
    load.seed = Some(7);
    load
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churning_clients_catch_up_without_loss() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack
    let stack = start_stack_with(|options| options.max_instances = 6).await;

    // WHEN 30 clients on 3 channels receive 200 publishes while 10 % of them reconnect
    // after 1 to 1.5 s away
    let mut load = churn_load(&stack);
    load.away_min = Duration::from_secs(1);
    load.away_max = Duration::from_millis(1500);
    load.gap_timeout = PUSH_GAP_TIMEOUT;
    let report = run(load.clone()).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN every client applied every delta from its starting point once, in order; the
    // 27 that stayed got all of them pushed, the 3 that reconnected recovered what they
    // missed by catch-up, and nobody needed `history`
    assert_ok(&report);
    assert_eq!(report.reconnects, 3, "3 of 30 clients churned once");
    assert!(report.latency_ms.count > 0);
    assert_pushed_or_caught_up(&report, &load);
    let d = &report.delivered;
    assert!(
        d.catch_up > 0,
        "a second away at 5 deltas/s per channel misses some"
    );
    assert!(d.catch_up <= d.missed_while_away);
    // The bound: a reconnecting client misses what its channel gets while it is away
    // (at most `away_max`) and while it reconnects and resubscribes (a handshake through
    // the authorizer and `$connect`, then a subscribe: RECONNECT_ALLOWANCE on a debug
    // stack, publishers catching up on their schedule after a stall included), at the
    // planned per-channel rate.
    let per_channel_rate = load.rate_per_second / load.channels as f64;
    let window = (load.away_max + RECONNECT_ALLOWANCE).as_secs_f64();
    let bound = report.reconnects
        * load.channels_per_connection as u64
        * (per_channel_rate * window).ceil() as u64;
    assert!(
        d.missed_while_away <= bound,
        "{} missed while away, more than {bound}",
        d.missed_while_away
    );
}

/// How long a gap waits for its push before `history` fills it: longer than any push
/// takes on a busy debug stack (a crashed fan-out's batch retried included), so that a
/// push that is merely slow is not counted as recovered by `history`.
const PUSH_GAP_TIMEOUT: Duration = Duration::from_secs(3);

/// Time to reconnect and resubscribe on a debug stack on a busy 2-core machine.
const RECONNECT_ALLOWANCE: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stay_connected_get_every_delta_pushed() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack
    let stack = start_stack_with(|options| options.max_instances = 6).await;

    // WHEN 20 clients on 2 channels receive 100 publishes and none reconnects
    let load = steady_load(&stack, (20, 2, 2), 15.0, 100);
    let report = run(load.clone()).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN every delta reached every client by push: none by catch-up or history
    assert_ok(&report);
    let d = &report.delivered;
    assert_eq!(
        (d.pushed, d.catch_up, d.history, d.late_pushes),
        (expected_applied(&load, &report), 0, 0, 0)
    );
    assert_eq!(report.history_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_channel_takes_every_publish_once_in_order_through_the_sequencer() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack, the channel limit off: this is about the sequencer's order
    // and exactly-once, and a debug stack on a busy machine can leave a channel 2 s
    // behind, where the limit's door refuses part of its publishes (tested by
    // `a_channel_over_its_limit_refuses_only_with_rate_limited_and_loses_nothing`)
    // WHEN 10 of 20 clients publish on the one channel they all subscribe to, several
    // publishes each in flight, so that they contend for its seqs
    let (report, sequenced) = contended_channel_run(0, 30.0, 150, "q").await;

    // THEN every publish was acked once and stored once, gap-free, every client got every
    // delta in order, and nothing was refused or answered `internal` (a publish sent again
    // before its first attempt's ack may hear `in_flight`, which asks for a retry)
    assert_ok(&report);
    assert_refused_only(&report, &["in_flight"]);
    // AND some went through the sequencer (the channel was busy): claims handed or queued
    // to it, which its stream filter passes
    assert!(sequenced > 0, "no claim was the sequencer's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_over_its_limit_refuses_only_with_rate_limited_and_loses_nothing() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack with a channel limit of 8 publishes/s (bursts of 8)
    // WHEN 10 of 20 clients on the one channel offer three times that
    let (report, _) = contended_channel_run(8, 24.0, 120, "adm").await;

    // THEN the excess was refused with `rate_limited` (and a publish sent again before
    // its ack perhaps heard `in_flight`), nothing else; every publish was acked in the
    // end, once, and every client got every delta once, in order
    assert_ok(&report);
    assert!(
        report
            .refused_by_code
            .get("rate_limited")
            .is_some_and(|n| *n > 0),
        "{:?}",
        report.refused_by_code
    );
    assert_refused_only(&report, &["rate_limited", "in_flight"]);
    // Whether the sequencer also recorded the door's share (`adm`) here depends on the
    // machine: a slow one refuses the excess as "behind" at the door before the sequencer
    // judges the limit (CI failed twice on asserting it). The share is tested against
    // DynamoDB Local in shared/tests/store_publish.rs (a_channel_over_its_limit_lets_...).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_management_api_that_drops_deltas_fails_the_run() {
    let _one = ONE_STACK.lock().await;
    // GIVEN the local stack whose Management API acknowledges 30 % of the delta frames
    // posted to it and drops them (a loss the fan-out's retries cannot see)
    let stack = start_stack_with(|options| {
        options.max_instances = 6;
        options.gateway.faults.drop_rate = 0.3;
    })
    .await;

    // WHEN the run of `churning_clients_catch_up_without_loss` goes through it
    let load = churn_load(&stack);
    let report = run(load.clone()).await.expect("the configuration is valid");
    stack.shutdown().await;
    println!("{report}");

    // THEN `history` fills every gap, so nothing counts as lost or behind, but the run
    // fails on the pushes it missed: about 30 % of what clients applied
    assert_eq!(
        report.connect_failures, 0,
        "the stack was too slow to connect everybody: no verdict on drops"
    );
    assert_eq!((report.lost, report.clients_behind), (0, 0));
    assert!(!report.ok());
    let d = &report.delivered;
    let applied = expected_applied(&load, &report);
    assert_eq!(d.pushed + d.catch_up + d.history, applied);
    assert!(
        d.missed_pushes * 5 >= applied && d.missed_pushes * 5 <= applied * 2,
        "{} of {applied} pushes missed: not about 30 %",
        d.missed_pushes
    );
    assert!(
        report
            .failures()
            .iter()
            .any(|f| f.contains("never pushed to a live connection")),
        "{:?}",
        report.failures()
    );
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
    // A crashed fan-out's batch is retried by the stream poller: its pushes come late,
    // and a gap waits for them rather than counting them as recovered by `history`.
    load.gap_timeout = PUSH_GAP_TIMEOUT;
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
    let load = faulty_load(&stack);
    let report = run(load.clone()).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN nothing is lost, the failed posts were retried until pushed (not recovered by
    // `history`), and every duplicate is removed by seq dedupe
    assert_ok(&report);
    assert_retried_until_pushed(&report, &load);
    assert!(
        report.delivered.duplicate_pushes_to_steady_clients > 0,
        "duplicated stream batches push seqs twice to clients that never reconnected"
    );
}

/// Under failing posts: every seq applied once; no push missed; clients that stayed
/// connected got every delta pushed, so the 429s and 500s were retried until they went
/// through; what the others recovered is what they missed while away.
fn assert_retried_until_pushed(report: &LoadReport, load: &LoadConfig) {
    let d = &report.delivered;
    assert_eq!(
        d.pushed + d.catch_up + d.history,
        expected_applied(load, report)
    );
    assert_eq!(d.missed_pushes, 0);
    assert_eq!(
        d.recovered_by_steady_clients, 0,
        "clients that stayed connected needed catch-up or history"
    );
    assert!(
        d.catch_up + d.history <= d.missed_while_away,
        "{} recovered, but only {} missed while away",
        d.catch_up + d.history,
        d.missed_while_away
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
    let report = run(load.clone()).await.expect("the configuration is valid");
    stack.shutdown().await;

    // THEN every resubscribe catches up, and the rest was pushed
    assert_ok(&report);
    assert_retried_until_pushed(&report, &load);
    assert!(report.delivered.catch_up > 0);
    assert_eq!(report.not_recovered, 0);
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

/// A minimal deltacast stand-in (see the module docs).
#[path = "load_mock.rs"]
mod mock;

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
    assert!(
        report.delivered.duplicate_pushes_to_steady_clients > 0,
        "clients that never reconnected were pushed seqs twice"
    );
    assert_eq!(report.reconnects, 4);
}

/// Seqs every mock run applies: 20 clients on 2 channels, 100 publishes, each client
/// subscribed from seq 0 before the first publish (so `20 × 100 / 2`).
const MOCK_APPLIED: u64 = 1_000;

/// A mock run with `faults` whose clients never reconnect (`coalesce`: they subscribe with
/// `"coalesce": true`); prints the report.
async fn steady_mock_run(faults: mock::Faults, coalesce: bool) -> LoadReport {
    let url = mock::serve(faults).await;
    let mut config = mock_config(url);
    config.churn = 0.0;
    config.coalesce = coalesce;
    let report = run(config).await.expect("valid");
    println!("{report}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_churn_every_delta_is_pushed() {
    // GIVEN a server that pushes every delta
    // WHEN clients that never reconnect receive 100 publishes
    let report = steady_mock_run(mock::Faults::default(), false).await;

    // THEN every seq they applied came by push
    assert!(report.ok(), "{:?}", report.failures());
    let d = &report.delivered;
    assert_eq!(
        (d.pushed, d.catch_up, d.history, d.missed_pushes),
        (MOCK_APPLIED, 0, 0, 0)
    );
    assert_eq!(report.history_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_only_clients_publish_without_subscribing() {
    // GIVEN a server that pushes every delta, and a run whose 20 clients all publish but
    // only the first 2 subscribe (one to each channel)
    let url = mock::serve(mock::Faults::default()).await;
    let mut config = mock_config(url);
    config.churn = 0.0;
    config.publishers = 20;
    config.subscribers = Some(2);
    // WHEN they publish 100 messages
    let report = run(config).await.expect("valid");
    println!("{report}");

    // THEN every client counts as connected, every publish is acked, and each delta is
    // delivered once: to the one subscriber of its channel
    assert!(report.ok(), "{:?}", report.failures());
    assert_eq!(report.connected, 20);
    assert_eq!(report.publishes_acked, 100);
    assert_eq!(report.delivered.pushed, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generator_notices_missed_pushes_that_history_recovers() {
    // GIVEN a server that never pushes seqs divisible by 3, but has them in `history`
    let faults = mock::Faults {
        unpushed_every: Some(3),
        ..Default::default()
    };

    // WHEN clients that never reconnect receive 100 publishes (50 per channel)
    let report = steady_mock_run(faults, false).await;

    // THEN nothing is lost or behind (history filled every gap), yet the run fails: each
    // client missed the pushes of seqs 3, 6, ..., 48 (16 of its channel's 50)
    assert_eq!((report.lost, report.clients_behind), (0, 0));
    assert!(!report.ok());
    let d = &report.delivered;
    assert_eq!(d.missed_pushes, 20 * 16);
    assert_eq!((d.pushed, d.history), (MOCK_APPLIED - 20 * 16, 20 * 16));
    assert_eq!(
        report.failures(),
        vec!["320 deltas never pushed to a live connection (recovered only by history)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_clients_recover_by_catch_up_and_nobody_else_recovers() {
    // GIVEN a server that pushes every delta and catches up every resubscribe
    let url = mock::serve(mock::Faults::default()).await;

    // WHEN 4 of 20 clients disconnect for 50 to 200 ms while 100 publishes flow
    let report = run(mock_config(url)).await.expect("valid");

    // THEN what the reconnecting clients missed came by catch-up, everything else by push
    println!("{report}");
    assert!(report.ok(), "{:?}", report.failures());
    assert_eq!(report.reconnects, 4);
    let d = &report.delivered;
    assert_eq!(d.pushed + d.catch_up + d.history, MOCK_APPLIED);
    assert_eq!((d.history, d.recovered_by_steady_clients), (0, 0));
    assert!(
        d.catch_up > 0,
        "clients away for 50 ms or more at 100 deltas/s per channel miss some"
    );
    assert!(
        d.catch_up <= d.missed_while_away,
        "catch-up recovers only what the client missed while away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_retry_refused_and_unanswered_publishes() {
    for (code, retry_after_ms) in [
        ("rate_limited", None),
        ("rate_limited", Some(150)),
        ("in_flight", Some(100)),
        ("in_flight", None),
        ("internal", None),
    ] {
        // GIVEN a server that refuses every 7th publish (with `retryAfterMs` or without)
        // and leaves every 5th unacked
        let url = mock::serve(mock::Faults {
            refuse_every: Some((7, code)),
            retry_after_ms,
            drop_ack_every: Some(5),
            ..Default::default()
        })
        .await;

        // WHEN the generator runs against it
        let mut config = mock_config(url);
        config.request_timeout = Duration::from_millis(300);
        let report = run(config).await.expect("valid");

        // THEN every publish is acked in the end, each stored once; refusals are counted
        // by code, unanswered attempts apart
        println!("{report}");
        assert!(report.ok(), "{code}: {:?}", report.failures());
        assert!(report.refused_by_code[code] > 0);
        assert_eq!(
            report.refused_by_code.len(),
            1,
            "{:?}",
            report.refused_by_code
        );
        assert!(report.publish_timeouts > 0);
        assert!(report.publish_attempts > report.publishes_sent);
        assert!(report.throughput.acked_per_second > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_acked_twice_count_once() {
    // GIVEN a server that sends every ack twice
    let faults = mock::Faults {
        duplicate_acks: true,
        ..Default::default()
    };

    // WHEN the generator runs against it
    let report = steady_mock_run(faults, false).await;

    // THEN each publish is acked once, and the second acks are counted apart
    assert!(report.ok(), "{:?}", report.failures());
    assert_eq!(report.publishes_acked, 100);
    assert_eq!(report.duplicate_acks, 100);
    assert_eq!(report.unexplained_seqs, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_deltas_frames_are_applied_and_counted() {
    // GIVEN a server that sends a coalescing subscriber what came in each 20 ms in one
    // `deltas` frame
    // WHEN clients subscribe with coalesce and receive 100 publishes at 200/s
    let report = steady_mock_run(mock::Faults::default(), true).await;

    // THEN every seq is pushed and applied once, in order, in fewer frames than deltas
    assert!(report.ok(), "{:?}", report.failures());
    let d = &report.delivered;
    assert_eq!((d.pushed, d.history), (MOCK_APPLIED, 0));
    assert_eq!(report.deltas_pushed, MOCK_APPLIED);
    assert!(
        report.frames_received * 2 <= report.deltas_pushed,
        "{} frames for {} deltas",
        report.frames_received,
        report.deltas_pushed
    );
    assert!(report.latency_ms.count >= MOCK_APPLIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalesce_one_frame_per_delta() {
    // GIVEN the same server
    // WHEN clients subscribe without coalesce
    let report = steady_mock_run(mock::Faults::default(), false).await;

    // THEN every delta came in a frame of its own
    assert!(report.ok(), "{:?}", report.failures());
    assert_eq!(
        (report.frames_received, report.deltas_pushed),
        (MOCK_APPLIED, MOCK_APPLIED)
    );
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
