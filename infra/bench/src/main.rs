//! `make bench`: measures deltacast, each figure beside its baseline, and writes
//! `target/bench/summary.json`, the same as a table on stdout, and the plots
//! (`target/bench/latency.svg`, `target/bench/fanout.svg`).
//!
//! Every figure comes from one run on this machine: start-up, memory and package size of
//! the release binaries against a hello-world Lambda; the fan-out's delivery rate against
//! the Management API's and the WebSocket's ceilings; fan-out time for channels up to
//! 10,000 subscribers with 30 ms of Management API latency; end-to-end latency and
//! deliveries by path (pushed, caught up, from history; missed pushes, lost) from the load
//! generator; DynamoDB capacity from `ReturnConsumedCapacity`, and dollars from list
//! prices beside AWS's scan-every-connection sample.

mod clients;
mod cost;
mod designs;
mod dynamodb;
mod fanout;
mod hot_channel;
mod http_api;
mod live_state;
mod percentile;
mod plot;
mod socket;
mod startup;
mod summary;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use deltacast_load::{LoadConfig, TokenSource};
use deltacast_local::stack::{Stack, StackOptions, jwt_secret_from_env};
use serde_json::{Value, json};
use summary::{markdown_table, print_table, rows};

#[derive(Parser)]
#[command(about = "deltacast's benchmark: `make bench` runs it")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run every measurement (the default).
    Run(Box<RunArgs>),
    /// Candidate publish designs for one hot channel, side by side (issue 12).
    Designs(designs::DesignsArgs),
    /// Internal: the WebSocket audience of the fan-out measurement.
    Clients {
        #[arg(long)]
        url: String,
        #[arg(long)]
        secret: String,
        #[arg(long)]
        count: usize,
        /// `channel:subscribers,...`
        #[arg(long)]
        channels: String,
    },
}

#[derive(clap::Args, Clone)]
struct RunArgs {
    /// DynamoDB Local's endpoint.
    #[arg(long, env = "DELTACAST_TEST_DYNAMODB")]
    dynamodb: String,
    /// Where the summary and plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    release_dir: PathBuf,
    /// Starts per binary for the init figures.
    #[arg(long, default_value_t = 20)]
    startup_runs: usize,
    /// Channel sizes for the fan-out (the largest is the 10k figure).
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000,10000")]
    fanout_sizes: Vec<usize>,
    /// `FANOUT_CONCURRENCY`.
    #[arg(long, default_value_t = 256)]
    fanout_concurrency: usize,
    /// Publishes in the latency run.
    #[arg(long, default_value_t = 600)]
    latency_publishes: usize,
    /// Publishes in the churn run.
    #[arg(long, default_value_t = 1000)]
    churn_publishes: usize,
    /// Clients in the churn run (on 10 channels).
    #[arg(long, default_value_t = 200)]
    churn_connections: usize,
    /// Skip measurements by name: startup, cost, fanout, latency, churn, hot_channel,
    /// live_state, http_api, publish_designs.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// The hot-channel section's settings.
    #[command(flatten)]
    hot: hot_channel::HotArgs,
    /// The live-state section's settings.
    #[command(flatten)]
    live: live_state::LiveArgs,
    /// The HTTP API section's settings.
    #[command(flatten)]
    http: http_api::HttpArgs,
}

const FUNCTIONS: [&str; 7] = [
    "authorizer",
    "connect",
    "disconnect",
    "message",
    "fanout",
    "sequencer",
    "http",
];
const POLL_INTERVAL_MS: u64 = 100;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `RUST_LOG=...` shows the bench's stacks' logs (their gateway, triggers and the
    // functions' lines) on stderr; without it they stay quiet.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cli.command {
        Some(Command::Clients {
            url,
            secret,
            count,
            channels,
        }) => {
            let channels = channels
                .split(',')
                .filter_map(|c| c.rsplit_once(':'))
                .filter_map(|(name, n)| Some((name.to_owned(), n.parse().ok()?)))
                .collect();
            runtime.block_on(clients::run(clients::ClientsArgs {
                url,
                secret,
                channels,
                count,
            }))
        }
        Some(Command::Run(args)) => runtime.block_on(run(*args)),
        Some(Command::Designs(args)) => runtime
            .block_on(designs::measure(&args))
            .map(|report| print!("{}", designs::table(&report))),
        None => Err("usage: deltacast-bench run --dynamodb URL (see --help)".to_owned()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("deltacast-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn skipped(args: &RunArgs, name: &str) -> bool {
    args.skip.iter().any(|s| s == name)
}

/// Starts the bench's local stack, adjusted by `adjust` (instances, extra environment).
async fn start_stack_with(
    args: &RunArgs,
    adjust: impl FnOnce(&mut StackOptions),
) -> Result<Stack, String> {
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let mut options = StackOptions::new(root);
    options.bind = "127.0.0.1:0".parse().expect("address");
    options.dynamodb_endpoint = args.dynamodb.clone();
    options.table_name = unique_name("bench");
    options
        .parameters
        .insert("JwtSecret".into(), jwt_secret_from_env());
    options.functions_dir = args.release_dir.clone();
    options.max_instances = 16;
    options.poll_interval = Duration::from_millis(POLL_INTERVAL_MS);
    options.env.insert(
        "FANOUT_CONCURRENCY".into(),
        args.fanout_concurrency.to_string(),
    );
    // The functions log at the bench's `RUST_LOG` when one is set (see `main`).
    let function_log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    options.env.insert("RUST_LOG".into(), function_log);
    // Load, not abuse: the limits stay on (their writes are part of what is measured)
    // but out of the way.
    for name in [
        "RATE_LIMIT_PER_SECOND",
        "RATE_LIMIT_BURST",
        "USER_RATE_LIMIT_PER_SECOND",
        "USER_RATE_LIMIT_BURST",
    ] {
        options.env.insert(name.into(), "1000".into());
    }
    options.env.insert("MAX_SUBSCRIPTIONS".into(), "10".into());
    adjust(&mut options);
    Stack::start(options).await.map_err(|e| e.to_string())
}

fn load_config(stack: &Stack) -> LoadConfig {
    LoadConfig::new(
        stack.url.clone(),
        TokenSource::Secret(stack.jwt_secret.clone()),
    )
}

/// A name no other run uses: `<prefix>-<16 hex digits>`.
fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

fn median_ms(durations: impl Iterator<Item = Duration>) -> f64 {
    let mut ms: Vec<f64> = durations.map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn run(args: RunArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut summary = serde_json::Map::new();
    summary.insert(
        "machine".into(),
        json!({
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "os": std::env::consts::OS,
            "arch": std::env::consts::ARCH,
        }),
    );

    if !skipped(&args, "startup") {
        eprintln!("measuring start-up, memory and package size...");
        let env = startup::function_env(Some(&args.dynamodb), "bench-startup");
        let report = startup::measure(&args.release_dir, &FUNCTIONS, args.startup_runs, &env)
            .await
            .map_err(|e| e.to_string())?;
        summary.insert(
            "startup".into(),
            serde_json::to_value(report).map_err(|e| e.to_string())?,
        );
    }

    if !skipped(&args, "publish_designs") {
        eprintln!("comparing publish designs on one hot channel...");
        let designs = designs::DesignsArgs {
            dynamodb: args.dynamodb.clone(),
            publishers: vec![1, 10, 100],
            seconds: 3.0,
            rtt_ms: 0.0,
        };
        let report = designs::measure(&designs).await?;
        eprint!("{}", designs::table(&report));
        summary.insert(
            "publish_designs".into(),
            serde_json::to_value(report).map_err(|e| e.to_string())?,
        );
    }

    let wants_stack = ["cost", "fanout", "latency", "churn"]
        .iter()
        .any(|m| !skipped(&args, m));
    if wants_stack {
        eprintln!("starting the local stack (release binaries)...");
        let stack = start_stack_with(&args, |_| {}).await?;
        let mut fanout_report = None;
        if !skipped(&args, "fanout") {
            eprintln!(
                "measuring the fan-out (channels of {:?})...",
                args.fanout_sizes
            );
            let report =
                fanout::measure(&exe, &stack, &args.fanout_sizes, args.fanout_concurrency).await?;
            plot::fanout_by_size(&args.out.join("fanout.svg"), &report.by_size, 30)?;
            summary.insert(
                "fanout".into(),
                serde_json::to_value(&report).map_err(|e| e.to_string())?,
            );
            fanout_report = Some(report);
        }
        if !skipped(&args, "cost") {
            eprintln!("measuring DynamoDB capacity...");
            let store =
                cost::own_store(&args.dynamodb, std::path::Path::new("template.yaml")).await?;
            let capacity = cost::measure(store, 512, 50, 100).await?;
            let message_ms = median_ms(
                stack.functions()["MessageFunction"]
                    .stats()
                    .invocation_log
                    .iter()
                    .map(|(_, d)| *d),
            );
            let fanout_ms_per_delivery = fanout_report
                .as_ref()
                .and_then(|r| {
                    r.by_size
                        .iter()
                        .find(|p| p.subscribers == 100 && p.latency_ms == 30)
                })
                .map(|p| p.invocation_ms / 100.0)
                .unwrap_or(0.5);
            let workload = cost::Workload {
                connections: 1000,
                channel_size: 100,
                deltas_per_batch: 1.0,
                message_mb: 256.0,
                message_ms: if message_ms.is_finite() {
                    message_ms.max(1.0)
                } else {
                    10.0
                },
                fanout_mb: 512.0,
                fanout_ms_per_delivery,
            };
            let ours = cost::deltacast_per_million(&capacity, &workload);
            let sample = cost::scan_everything_per_million(&workload);
            summary.insert(
                "cost".into(),
                json!({
                    "capacity": capacity,
                    "workload": workload,
                    "prices": cost::PRICES,
                    "usd_per_million_deliveries": ours,
                    "scan_every_connection_usd_per_million_deliveries": sample,
                }),
            );
        }
        if !skipped(&args, "latency") {
            eprintln!("measuring end-to-end latency (100 subscribers)...");
            let mut config = load_config(&stack);
            config.connections = 100;
            config.channels = 1;
            config.publishers = 1;
            config.rate_per_second = 10.0;
            config.publishes = Some(args.latency_publishes as u64);
            config.churn = 0.0;
            let report = deltacast_load::run(config)
                .await
                .map_err(|e| e.to_string())?;
            if !report.ok() {
                eprintln!("warning: the latency run was not clean:\n{report}");
            }
            plot::latency_cdf(
                &args.out.join("latency.svg"),
                &report.latency_ms.percentiles,
                POLL_INTERVAL_MS,
            )?;
            summary.insert(
                "latency".into(),
                json!({
                    "e2e_p50_ms": report.latency_ms.p50,
                    "e2e_p95_ms": report.latency_ms.p95,
                    "e2e_p99_ms": report.latency_ms.p99,
                    "poll_interval_ms": POLL_INTERVAL_MS,
                    "report": report,
                }),
            );
        }
        if !skipped(&args, "churn") {
            eprintln!("measuring deliveries by path under 10 % reconnect churn...");
            let mut config = load_config(&stack);
            config.connections = args.churn_connections;
            config.channels = 10;
            config.publishers = 5;
            config.rate_per_second = 25.0;
            config.publishes = Some(args.churn_publishes as u64);
            config.churn = 0.1;
            let report = deltacast_load::run(config)
                .await
                .map_err(|e| e.to_string())?;
            summary.insert(
                "churn".into(),
                json!({
                    "lost": report.lost,
                    "delivered_pushed": report.delivered.pushed,
                    "delivered_catch_up": report.delivered.catch_up,
                    "delivered_history": report.delivered.history,
                    "missed_pushes": report.delivered.missed_pushes,
                    "duplicates_after_dedupe": report.duplicates_after_dedupe,
                    "duplicates_received": report.duplicates_received,
                    "reconnects": report.reconnects,
                    "ok": report.ok(),
                    "failures": report.failures(),
                    "report": report,
                }),
            );
        }
        stack.shutdown().await;
    }

    if !skipped(&args, "hot_channel") {
        eprintln!("measuring a hot channel (1 channel against 100, sustained rate, overload)...");
        let section = hot_channel::measure(&args, &summary).await?;
        summary.insert("hot_channel".into(), section);
    }

    if !skipped(&args, "live_state") {
        eprintln!("measuring live state (a poll, presence)...");
        let section = live_state::measure(&args).await?;
        summary.insert("live_state".into(), section);
    }

    if !skipped(&args, "http_api") {
        eprintln!("measuring the HTTP API beside the WebSocket (publish, SSE delivery)...");
        let section = http_api::measure(&args).await?;
        summary.insert("http_api".into(), section);
    }

    let summary = Value::Object(summary);
    let path = args.out.join("summary.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&summary).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let rows = rows(&summary);
    print_table(&rows);
    std::fs::write(args.out.join("summary.md"), markdown_table(&rows))
        .map_err(|e| e.to_string())?;
    eprintln!("wrote {} and summary.md", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[test]
    fn every_flag_of_run_parses_beside_the_others() {
        // clap checks its ids once per command: two fields with one id (the flattened
        // hot-channel settings beside the run's own) only fail when parsed.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "deltacast-bench",
            "run",
            "--dynamodb",
            "http://127.0.0.1:1",
            "--hot-channel-limit",
            "2",
            "--hot-subscribers",
            "3",
            "--hot-poll-interval-ms",
            "100",
            "--live-max-instances",
            "4",
            "--live-voters",
            "10",
        ]);
        assert!(cli.is_ok(), "{:?}", cli.err());
    }
}
