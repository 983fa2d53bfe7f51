//! The `hot_channel` section of `make bench` (issue 12): does one busy channel flow like
//! many quiet ones? On a stack of its own (release binaries, `--hot-max-instances`
//! instances per function, the per-channel limit out of the way), against a DynamoDB
//! Local of its own (`crate::dynamodb::fresh` says why), warmed first, in one run:
//!
//! 1. the same offered load (`--hot-rate`, `--hot-publishes`, 100 connections, 100
//!    publishers, no churn) on 100 channels (one subscriber each) and on 1 (with
//!    `--hot-subscribers`, 1: the same deliveries): acked/s, delivery p50/p99, timeouts,
//!    `internal`, and the ratios 1:100;
//! 2. frames per delivered delta for 100 coalescing subscribers of one channel during a
//!    burst of 50 deltas/s;
//! 3. the highest rate one channel sustains (≥ 99 % acked, p99 delivery < 1 s, acks keeping
//!    pace), by a bounded doubling-then-bisecting search (`search.rs`), beside DynamoDB
//!    Local's write ceiling measured just before (`crate::dynamodb::ceiling`);
//! 4. on a second stack (on the first one's DynamoDB Local and table) whose channel limit
//!    is half that rate, warmed at half the limit, an overload at twice the limit (the
//!    rate one channel sustains: `overload_limit` says why not twice that rate): refusals
//!    by code (only `rate_limited` expected), lost, duplicates, order.
//!
//! Every run is bounded in publishes and time, and the search in steps and seconds. The
//! quiet-channel latency (`latency`) and WCU per publish (`cost`) are measured by their
//! own sections and referenced here (`rows.rs`), so regressions show beside these figures.

mod figures;
mod rows;
mod search;

use std::time::{Duration, Instant};

use deltacast_load::LoadConfig;
use deltacast_local::stack::Stack;
use serde_json::{Value, json};

use self::figures::{RunFigures, compare};
use self::search::{RateSearch, Step};
use crate::RunArgs;
use crate::dynamodb::{FreshDynamoDb, WriteCeiling, ceiling};

pub use rows::rows;

/// The section's settings (`deltacast-bench run --hot-...`).
#[derive(clap::Args, Clone, Debug)]
pub struct HotArgs {
    /// Offered rate of the 1-vs-100-channel comparison, publishes/s (one the 100-channel
    /// case sustains: 100/s on the 2-core machine the figures come from).
    #[arg(long = "hot-rate", default_value_t = 100.0)]
    pub rate: f64,
    /// Publishes in each run of the comparison.
    #[arg(long = "hot-publishes", default_value_t = 3000)]
    pub publishes: u64,
    /// Connections (each also publishes) in every hot-channel run.
    #[arg(long = "hot-connections", default_value_t = 100)]
    pub connections: usize,
    /// Connections subscribed to the channel in the one-channel runs (comparison, search,
    /// overload); the others only publish. 1 keeps the deliveries those runs make equal
    /// to the 100-channel run's (each publish delivered once), so they compare publish
    /// paths, not fan-outs. The coalescing burst subscribes every connection.
    #[arg(long = "hot-subscribers", default_value_t = 1)]
    pub subscribers: usize,
    /// Milliseconds between the hot-channel stack's stream polls: 250, the rate at which
    /// Lambda polls a DynamoDB stream shard (four times a second), since how many deltas
    /// one fan-out batch holds (what coalescing packs) follows from it.
    #[arg(long = "hot-poll-interval-ms", default_value_t = 250)]
    pub poll_interval_ms: u64,
    /// Instances per function at most on the hot-channel stack.
    #[arg(long = "hot-max-instances", default_value_t = 32)]
    pub max_instances: usize,
    /// `CHANNEL_RATE_LIMIT_PER_SECOND` (and `_BURST`) outside the overload run: out of the
    /// way, so the search finds what the publish path sustains, not the limit (0: off).
    #[arg(long = "hot-channel-limit", default_value_t = 10_000)]
    pub channel_limit: u64,
    /// First rate of the search, publishes/s.
    #[arg(long = "hot-search-start", default_value_t = 50.0)]
    pub search_start: f64,
    /// Highest rate the search tries.
    #[arg(long = "hot-search-max-rate", default_value_t = 3200.0)]
    pub search_max_rate: f64,
    /// Most runs of the search.
    #[arg(long = "hot-search-steps", default_value_t = 7)]
    pub search_steps: usize,
    /// Seconds of publishing per search step (and in the overload run).
    #[arg(long = "hot-step-seconds", default_value_t = 8.0)]
    pub step_seconds: f64,
    /// The search starts no new step after this many seconds.
    #[arg(long = "hot-search-budget-seconds", default_value_t = 480.0)]
    pub search_budget_seconds: f64,
    /// The channel limit of the overload run, publishes/s (default: half the sustained
    /// rate; see `overload_limit`).
    #[arg(long = "hot-overload-limit")]
    pub overload_limit: Option<u64>,
    /// Seconds of the 50 deltas/s burst to coalescing subscribers.
    #[arg(long = "hot-burst-seconds", default_value_t = 6.0)]
    pub burst_seconds: f64,
    /// Seconds of the DynamoDB Local write ceiling measurement.
    #[arg(long = "hot-ceiling-seconds", default_value_t = 4.0)]
    pub ceiling_seconds: f64,
}

/// Lowest rate the search tries, publishes/s.
const SEARCH_MIN_RATE: f64 = 5.0;
/// The search stops when its bracket is within this share.
const SEARCH_RESOLUTION: f64 = 0.15;
/// Seconds of publishing per warm-up run, at half the first run's rate.
const WARM_UP_SECONDS: f64 = 4.0;
/// Warm-up runs at most: a stack is warm once one of them sustains its rate.
const WARM_UP_RUNS: usize = 4;

/// Publishes per search or overload run, at least and at most.
const STEP_PUBLISHES: (u64, u64) = (200, 8_000);
/// Rate of the coalescing burst, deltas/s, and its publishers.
const BURST_RATE: f64 = 50.0;
const BURST_PUBLISHERS: usize = 10;
/// Concurrent writers of the ceiling measurement.
const CEILING_WRITERS: usize = 32;

/// One load run of `publishes` at `rate` over `channels` channels, every connection
/// subscribed to one channel; deadlines scale with the expected publish time.
fn load(
    stack: &Stack,
    hot: &HotArgs,
    channels: usize,
    publishers: usize,
    rate: f64,
    publishes: u64,
) -> LoadConfig {
    let mut config = crate::load_config(stack);
    config.connections = hot.connections;
    config.channels = channels;
    config.channels_per_connection = 1;
    if channels == 1 {
        config.subscribers = Some(hot.subscribers.clamp(1, hot.connections));
    }
    config.publishers = publishers.min(hot.connections);
    config.rate_per_second = rate;
    config.publishes = Some(publishes);
    config.churn = 0.0;
    config.settle_timeout = Duration::from_secs(30);
    with_deadlines(config, rate)
}

/// `config` with deadlines for its publishes taken at `rate`/s at best.
fn with_deadlines(mut config: LoadConfig, rate: f64) -> LoadConfig {
    let publishes = config.publishes.unwrap_or(0);
    let expected = Duration::from_secs_f64(publishes as f64 / rate);
    config.publish_timeout = Some(expected * 2 + Duration::from_secs(30));
    config.drain_timeout = expected + Duration::from_secs(30);
    config.max_run_time = Some(expected * 4 + Duration::from_secs(180));
    config
}

/// Runs `config` and takes its figures.
async fn measure_run(what: &str, config: LoadConfig) -> Result<RunFigures, String> {
    let offered = config.rate_per_second;
    eprintln!(
        "  hot_channel: {what}: {} publishes at {offered}/s on {} channel(s)...",
        config.publishes.unwrap_or(0),
        config.channels
    );
    let report = deltacast_load::run(config)
        .await
        .map_err(|e| e.to_string())?;
    let figures = RunFigures::from_report(&report, offered);
    eprintln!(
        "  hot_channel: {what}: {:.1} acked/s, p50 {:.0} ms, p99 {:.0} ms, {} timeouts, refused {:?}",
        figures.acked_per_second,
        figures.delivery_p50_ms,
        figures.delivery_p99_ms,
        figures.timeouts,
        figures.refused_by_code
    );
    Ok(figures)
}

/// Publishes of a search or overload step at `rate`.
fn step_publishes(rate: f64, seconds: f64) -> u64 {
    ((rate * seconds).round() as u64).clamp(STEP_PUBLISHES.0, STEP_PUBLISHES.1)
}

/// Starts a hot-channel stack on the section's DynamoDB Local (on `table` when given: the
/// second stack takes over the first one's table, read from the stream's tip, since
/// another table's stream records would slow every write; see `crate::dynamodb::fresh`), with
/// the channel limit at `limit`/s (burst as much; 0: no limit), and warms it: `warm`
/// (channels, rate) runs for [`WARM_UP_SECONDS`] until one sustains its rate, at most
/// [`WARM_UP_RUNS`] times. A stack that starts a run cold at this machine's edge
/// collapses into timeouts and retries it does not recover from (2026-12-01: the
/// 100-channel run after a single 3 s warm-up acked 49/s of 100/s with 4,981 timeouts;
/// the same stack then took one channel at 100/s without one). Returns each warm-up
/// run's figures too.
async fn start(
    args: &RunArgs,
    endpoint: &str,
    table: Option<String>,
    limit: u64,
    warm: (usize, f64),
) -> Result<(Stack, Vec<RunFigures>), String> {
    let max_instances = args.hot.max_instances;
    let stack = crate::start_stack_with(args, |options| {
        options.max_instances = max_instances;
        options.dynamodb_endpoint = endpoint.to_owned();
        if let Some(table) = table {
            options.table_name = table;
        }
        options.poll_interval = Duration::from_millis(args.hot.poll_interval_ms);
        for name in ["CHANNEL_RATE_LIMIT_PER_SECOND", "CHANNEL_RATE_LIMIT_BURST"] {
            options.env.insert(name.into(), limit.to_string());
        }
        if limit == 0 {
            // A burst of 0 turns the limit off; a rate of 0 would be refused.
            options.env.remove("CHANNEL_RATE_LIMIT_PER_SECOND");
        }
    })
    .await?;
    let (channels, rate) = warm;
    let hot = &args.hot;
    let mut runs = Vec::new();
    for _ in 0..WARM_UP_RUNS {
        let config = load(
            &stack,
            hot,
            channels,
            hot.connections,
            rate,
            step_publishes(rate, WARM_UP_SECONDS),
        );
        match measure_run("warm-up", config).await {
            Ok(figures) => {
                let warm = figures.sustains();
                runs.push(figures);
                if warm {
                    break;
                }
            }
            Err(err) => eprintln!("  hot_channel: warm-up failed: {err}"),
        }
    }
    Ok((stack, runs))
}

/// The section's DynamoDB Local, fresh, its JVM warmed by [`CEILING_WRITERS`] writers for
/// [`WARM_UP_SECONDS`] on a scratch table without a stream (which leaves nothing that
/// slows it later): a new JVM is slow until it has compiled its hot paths under load.
async fn section_dynamodb() -> Result<FreshDynamoDb, String> {
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let dynamodb = FreshDynamoDb::start(&root).await?;
    let duration = Duration::from_secs_f64(WARM_UP_SECONDS);
    if let Err(err) = ceiling::measure(&dynamodb.endpoint, CEILING_WRITERS, duration, false).await {
        dynamodb.stop().await;
        return Err(err);
    }
    Ok(dynamodb)
}

/// DynamoDB Local's write ceilings on this machine.
struct Ceilings {
    /// On a table with a stream, like the stack's: what the section compares with.
    streamed: WriteCeiling,
    /// On a table without one.
    unstreamed: WriteCeiling,
}

/// Measures both ceilings on a DynamoDB Local of their own (the streamed one last: the
/// records it leaves would slow a stack there).
async fn ceilings(hot: &HotArgs) -> Result<Ceilings, String> {
    eprintln!("  hot_channel: DynamoDB Local's write ceiling...");
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let dynamodb = FreshDynamoDb::start(&root).await?;
    let duration = Duration::from_secs_f64(hot.ceiling_seconds);
    let unstreamed = ceiling::measure(&dynamodb.endpoint, CEILING_WRITERS, duration, false).await;
    let streamed = ceiling::measure(&dynamodb.endpoint, CEILING_WRITERS, duration, true).await;
    dynamodb.stop().await;
    Ok(Ceilings {
        streamed: streamed?,
        unstreamed: unstreamed?,
    })
}

/// What the runs without a channel limit measured.
struct Unlimited {
    hundred: RunFigures,
    one: RunFigures,
    burst: RunFigures,
    search: RateSearch,
    steps: Vec<Value>,
}

/// The runs on the stack whose channel limit is out of the way: 100 channels, 1 channel,
/// the coalescing burst, and the search.
async fn unlimited_runs(stack: &Stack, hot: &HotArgs) -> Result<Unlimited, String> {
    let n = hot.connections;
    let hundred = measure_run(
        "100 channels",
        load(stack, hot, n.min(100), n, hot.rate, hot.publishes),
    )
    .await?;
    let one = measure_run("1 channel", load(stack, hot, 1, n, hot.rate, hot.publishes)).await?;

    let burst_publishes = (BURST_RATE * hot.burst_seconds).round().max(1.0) as u64;
    let mut burst_config = load(stack, hot, 1, BURST_PUBLISHERS, BURST_RATE, burst_publishes);
    burst_config.coalesce = true;
    burst_config.subscribers = None;
    let burst = measure_run("coalescing burst", burst_config).await?;

    let started = Instant::now();
    let budget = Duration::from_secs_f64(hot.search_budget_seconds);
    let mut search = RateSearch::new(
        hot.search_start,
        SEARCH_MIN_RATE,
        hot.search_max_rate,
        hot.search_steps,
        SEARCH_RESOLUTION,
    );
    let mut steps = Vec::new();
    while let Some(rate) = search.next_rate() {
        if started.elapsed() >= budget {
            eprintln!("  hot_channel: the search ran out of time");
            break;
        }
        let publishes = step_publishes(rate, hot.step_seconds);
        let figures = measure_run("search", load(stack, hot, 1, n, rate, publishes)).await?;
        let passed = figures.sustains();
        search.record(rate, passed);
        steps.push(json!({"step": Step { rate, passed }, "figures": figures}));
    }

    Ok(Unlimited {
        hundred,
        one,
        burst,
        search,
        steps,
    })
}

/// The section's two stacks on `endpoint`, one after the other: the runs without a
/// channel limit, then the overload run on the first stack's table.
async fn stacks(
    args: &RunArgs,
    endpoint: &str,
) -> Result<(Vec<RunFigures>, Unlimited, Value), String> {
    let hot = &args.hot;
    let first_warm = (hot.connections.min(100), hot.rate / 2.0);
    let (stack, warm_up) = start(args, endpoint, None, hot.channel_limit, first_warm).await?;
    let table = stack.table_name.clone();
    let result = unlimited_runs(&stack, hot).await;
    stack.shutdown().await;
    let unlimited = result?;

    let limit = hot
        .overload_limit
        .or_else(|| overload_limit(unlimited.search.sustained()));
    let overload = if let Some(limit) = limit.filter(|l| *l > 0) {
        let offered = 2.0 * limit as f64;
        let warm = (1, (limit as f64 / 2.0).max(1.0));
        let (stack, warm) = start(args, endpoint, Some(table), limit, warm).await?;
        let publishes = step_publishes(offered, hot.step_seconds);
        // At best the channel takes its limit, so the run's deadlines follow the limit.
        let config = load(&stack, hot, 1, hot.connections, offered, publishes);
        let figures = measure_run("overload", with_deadlines(config, limit as f64)).await;
        stack.shutdown().await;
        let figures = figures?;
        json!({
            // The warm-up runs at half the limit, until one sustained it.
            "warm_up": warm,
            "channel_limit_per_second": limit,
            "offered_per_second": offered,
            "clean": figures.overload_clean(),
            "other_refusals": figures.other_refusals(),
            "figures": figures,
        })
    } else {
        json!({"skipped": "no rate was sustained (and no --hot-overload-limit), so there is no limit to overload"})
    };
    Ok((warm_up, unlimited, overload))
}

/// The overload run's channel limit for a channel that sustains `sustained`/s: half of
/// it, so that the run offers the rate the stack was measured to sustain, at twice the
/// limit. Twice the sustained rate itself overloads this machine rather than the channel:
/// the search stops where the stack's one DynamoDB Local process and two cores are
/// saturated, and a run at twice that (traced, 2026-12-02) kept every message function
/// instance busy, frames waiting up to 20 s for one, whatever the channel refused; on AWS
/// the function's instances and the channel's partition scale apart.
fn overload_limit(sustained: f64) -> Option<u64> {
    (sustained >= 2.0).then(|| (sustained / 2.0).round() as u64)
}

/// Measures the section; `summary` holds the sections measured before (for references).
pub async fn measure(
    args: &RunArgs,
    summary: &serde_json::Map<String, Value>,
) -> Result<Value, String> {
    let hot = &args.hot;
    let ceiling = ceilings(hot).await?;

    let dynamodb = section_dynamodb().await?;
    let result = stacks(args, &dynamodb.endpoint).await;
    dynamodb.stop().await;
    let (warm_up, unlimited, overload) = result?;
    let Unlimited {
        hundred,
        one,
        burst,
        search,
        steps,
    } = unlimited;
    let comparison = compare(&one, &hundred);
    let sustained = search.sustained();

    let reference = |section: &str, key: &str| {
        summary
            .get(section)
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    Ok(json!({
        "offered_per_second": hot.rate,
        "publishes": hot.publishes,
        "connections": hot.connections,
        "subscribers_of_one_channel": hot.subscribers,
        "max_instances": hot.max_instances,
        "poll_interval_ms": hot.poll_interval_ms,
        "warm_up": warm_up,
        "hundred_channels": hundred,
        "one_channel": one,
        "acked_ratio_1_vs_100": comparison.acked_ratio,
        "p99_ratio_1_vs_100": comparison.p99_ratio,
        "meets_goals": comparison.meets_goals,
        "sustained": {
            "rate_per_second": sustained,
            "first_failure_per_second": search.first_failure(),
            "criteria": format!(
                "≥ {:.0} % acked, p99 delivery < {:.0} ms, acked/s ≥ {:.0} % of offered",
                figures::SUSTAINED_ACKED_FRACTION * 100.0,
                figures::SUSTAINED_P99_MS,
                figures::SUSTAINED_ACKED_RATE * 100.0
            ),
            "steps": steps,
            "dynamodb_local_write_ceiling": ceiling.streamed,
            "dynamodb_local_write_ceiling_without_stream": ceiling.unstreamed,
        },
        "overload": overload,
        "coalesce": {
            "subscribers": hot.connections,
            "rate_per_second": BURST_RATE,
            "frames_per_delta": burst.frames_per_delta(),
            "figures": burst,
        },
        "references": {
            "quiet_e2e_p50_ms": reference("latency", "e2e_p50_ms"),
            "quiet_e2e_p99_ms": reference("latency", "e2e_p99_ms"),
            "wcu_per_publish": summary
                .get("cost")
                .and_then(|c| c.get("capacity"))
                .and_then(|c| c.get("wcu_per_publish"))
                .cloned()
                .unwrap_or(Value::Null),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_bounded_in_publishes() {
        assert_eq!(step_publishes(50.0, 8.0), 400);
        assert_eq!(step_publishes(5.0, 8.0), STEP_PUBLISHES.0);
        assert_eq!(step_publishes(3200.0, 8.0), STEP_PUBLISHES.1);
    }
}
