//! The run itself: validate, start one task per client, walk them through the phases
//! (connecting, publishing, draining, settling, stopping), each with its deadline, then
//! hand what the clients saw to `verify.rs` for the report.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use crate::client::Client;
use crate::config::{LoadConfig, LoadError};
use crate::latency::{self, new_histogram};
use crate::plan::Plan;
use crate::report::LoadReport;
use crate::state::{ChannelTable, Phase, SHARDS, Shared, unix_micros};
use crate::verify::{self, Tally};

/// How long a settled run waits for pushes that `history` overtook before it stops: the
/// fan-out retries a failed post for well under a second (5 attempts from 25 ms, doubled).
const LATE_PUSH_GRACE: Duration = Duration::from_secs(3);

/// Runs the load and reports what happened. Fails only when the configuration is
/// unusable; everything that goes wrong during the run is in the report.
pub async fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    let plan = Plan::new(config)?;
    let started = Instant::now();
    let global_deadline = started + plan.max_run_time;
    let config = plan.config.clone();
    let mut rng = match config.seed {
        Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
        None => rand::rngs::StdRng::from_os_rng(),
    };

    // Channel tables sized for what round-robin publishing can put on one channel, with
    // room to notice extra seqs.
    let per_channel = plan.publish_total.div_ceil(config.channels as u64);
    let capacity = per_channel * 2 + 16;
    let channels = (0..config.channels)
        .map(|i| ChannelTable::new(plan.channel_name(i), capacity))
        .collect();
    let (phase_tx, phase_rx) = watch::channel(Phase::Connecting);
    let shared = Arc::new(Shared {
        handshakes: Semaphore::new(config.connect_concurrency),
        latency: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        channels,
        ready: AtomicUsize::new(0),
        gave_up: AtomicUsize::new(0),
        publishers_done: AtomicUsize::new(0),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        last_ack_micros: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        settled: AtomicUsize::new(0),
        awaiting_pushes: AtomicU64::new(0),
        plan,
    });
    let plan = &shared.plan;

    // Who churns, and when (offsets into the expected publish phase, 10 % to 80 %).
    let churners = (config.churn * config.connections as f64).round() as usize;
    let mut order: Vec<usize> = (0..config.connections).collect();
    order.shuffle(&mut rng);
    let mut churn_plan: Vec<Vec<Duration>> = vec![Vec::new(); config.connections];
    let span = plan.publish_expected.min(plan.publish_limit);
    for &client in order.iter().take(churners) {
        let mut times: Vec<Duration> = (0..config.churn_rounds)
            .map(|_| span.mul_f64(0.1 + 0.7 * rand::Rng::random::<f64>(&mut rng)))
            .collect();
        // Soonest last, so the client pops them.
        times.sort_by(|a, b| b.cmp(a));
        churn_plan[client] = times;
    }

    let mut tasks = Vec::with_capacity(config.connections);
    for (index, churn) in churn_plan.into_iter().enumerate() {
        let client = Client::new(index, shared.clone(), phase_rx.clone(), churn);
        tasks.push(tokio::spawn(client.run()));
    }
    drop(phase_rx);

    let mut report = LoadReport {
        run_id: plan.run_id.clone(),
        url: config.url.clone(),
        connections: config.connections,
        channels: config.channels,
        publishers: config.publishers,
        publishes_planned: plan.publish_total,
        ..LoadReport::default()
    };
    let mut timed_out: Option<&'static str> = None;
    let n = config.connections;

    // Waits until `done` holds or the deadline (or the global one) passes.
    async fn wait_until(deadline: Instant, global: Instant, done: impl Fn() -> bool) -> bool {
        loop {
            if done() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || now >= global {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // 1. Connecting.
    let phase_started = Instant::now();
    let connected = wait_until(
        phase_started + config.connect_timeout,
        global_deadline,
        || shared.ready.load(Ordering::Relaxed) + shared.gave_up.load(Ordering::Relaxed) >= n,
    )
    .await;
    if !connected {
        // Publishing starts anyway; the laggards count as failures if they never make it.
        timed_out.get_or_insert("connect");
    }
    report.phases.connect = phase_started.elapsed().as_secs_f64();

    // 2. Publishing.
    let publish_start = Instant::now();
    let publish_start_micros = unix_micros();
    let publish_end = publish_start + plan.publish_limit;
    let _ = phase_tx.send(Phase::Publishing {
        start: publish_start,
        end: publish_end,
    });
    let all_published = wait_until(
        publish_end + Duration::from_secs(1),
        global_deadline,
        || shared.publishers_done.load(Ordering::Relaxed) >= config.publishers,
    )
    .await;
    let publish_seconds = publish_start.elapsed().as_secs_f64();
    report.phases.publish = publish_seconds;
    if !all_published && config.duration.is_none() {
        timed_out.get_or_insert("publish");
    }

    // 3. Draining.
    let _ = phase_tx.send(Phase::Draining);
    let drain_start = Instant::now();
    let drained = wait_until(drain_start + config.drain_timeout, global_deadline, || {
        shared.acked.load(Ordering::Relaxed) + shared.refused.load(Ordering::Relaxed)
            >= shared.sent.load(Ordering::Relaxed)
    })
    .await;
    if !drained {
        timed_out.get_or_insert("drain");
    }
    report.phases.drain = drain_start.elapsed().as_secs_f64();

    // 4. Settling.
    let _ = phase_tx.send(Phase::Settling);
    let settle_start = Instant::now();
    let settled = wait_until(
        settle_start + config.settle_timeout,
        global_deadline,
        || shared.settled.load(Ordering::Relaxed) + shared.gave_up.load(Ordering::Relaxed) >= n,
    )
    .await;
    if !settled {
        timed_out.get_or_insert("settle");
    }
    report.phases.settle = settle_start.elapsed().as_secs_f64();
    // Pushes that `history` overtook may still be on their way: give them a moment, so
    // that only pushes that never come count as missed.
    if settled {
        wait_until(Instant::now() + LATE_PUSH_GRACE, global_deadline, || {
            shared.awaiting_pushes.load(Ordering::Relaxed) == 0
        })
        .await;
    }
    if Instant::now() >= global_deadline {
        timed_out = Some("the global deadline");
    }

    // 5. Stopping.
    let _ = phase_tx.send(Phase::Stopping);
    let mut tally = Tally::default();
    let collect_by = Instant::now() + Duration::from_secs(15);
    for task in tasks {
        let abort = task.abort_handle();
        match tokio::time::timeout_at(collect_by, task).await {
            Ok(Ok(outcome)) => tally.add(outcome, &shared, &mut report),
            _ => {
                abort.abort();
                tally.stuck += 1;
                timed_out.get_or_insert("stopping");
            }
        }
    }
    verify::check_channels(&shared, &mut report);
    report.latency_ms = latency::summarise(&shared.latency);
    let last_ack = shared.last_ack_micros.load(Ordering::Relaxed);
    let last_ack_seconds =
        (last_ack > 0).then(|| last_ack.saturating_sub(publish_start_micros) as f64 / 1e6);
    tally.fill(&mut report, publish_seconds, last_ack_seconds);
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.timed_out = timed_out.is_some();
    report.timed_out_in = timed_out.map(str::to_owned);
    Ok(report)
}
