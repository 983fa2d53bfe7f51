//! `deltacast-load`: drives a deltacast endpoint with N clients over K channels, with
//! publishes at a given rate and reconnecting clients, then verifies that every client got
//! every delta exactly once and in order. A thin CLI over the `deltacast_load` library; see its
//! crate docs for the client algorithm and what is checked.
//!
//! ```sh
//! deltacast-load --url ws://127.0.0.1:3001/local --connections 100 --channels 10 \
//!   --publishers 5 --rate 50 --publishes 1000 --churn 0.1 --json report.json
//! ```
//!
//! Exits 0 when the report is ok, 1 when it is not, 2 when the run could not start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deltacast_load::{self as load, LoadConfig, TokenSource};
use deltacast_local::stack::{DEV_JWT_SECRET, JWT_SECRET_VARIABLE};

/// Load and verify a deltacast endpoint (loopback only unless --allow-remote).
#[derive(Debug, Parser)]
#[command(name = "deltacast-load", version)]
struct Args {
    /// WebSocket URL of the endpoint (the token is added as `?token=`).
    #[arg(long, default_value = "ws://127.0.0.1:3001/local")]
    url: String,
    /// HS256 secret to sign one token per client with (every capability on `*`): the same
    /// `JWT_SECRET` as `make dev` and `make token`; default: the development secret.
    #[arg(long, env = JWT_SECRET_VARIABLE, default_value = DEV_JWT_SECRET, hide_env_values = true, hide_default_value = true)]
    secret: String,
    /// Use this token for every client instead of signing tokens (wins over --secret).
    #[arg(long, env = "DELTACAST_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Connections (simulated clients).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Channels.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// Channels each connection subscribes to.
    #[arg(long, default_value_t = 1)]
    channels_per_connection: usize,
    /// How many of the connections subscribe (the others only publish; default: all).
    #[arg(long)]
    subscribers: Option<usize>,
    /// How many of the connections publish.
    #[arg(long, default_value_t = 5)]
    publishers: usize,
    /// Aggregate publish rate, per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Publishes in all (default 1000 unless --duration is given).
    #[arg(long)]
    publishes: Option<u64>,
    /// How long to publish, in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Approximate size of each publish's data, in bytes.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Fraction of the clients that disconnect and reconnect during publishing.
    #[arg(long, default_value_t = 0.1)]
    churn: f64,
    /// How many times each churning client disconnects.
    #[arg(long, default_value_t = 1)]
    churn_rounds: u32,
    /// Shortest time a churning client stays away, in milliseconds.
    #[arg(long, default_value_t = 200)]
    away_min_ms: u64,
    /// Longest time a churning client stays away, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    away_max_ms: u64,
    /// Unanswered subscribes with `since` before a client subscribes without it and uses
    /// `history` instead (0: never fall back).
    #[arg(long, default_value_t = 2)]
    catch_up_attempts: u32,
    /// Seconds the publish phase may last (default: twice the expected time plus 30 s).
    #[arg(long)]
    publish_timeout: Option<f64>,
    /// Seconds to wait at the end for every client to reach the head.
    #[arg(long, default_value_t = 30.0)]
    settle_timeout: f64,
    /// Seconds to wait for every client to connect and subscribe.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Unacknowledged publishes per publisher at most.
    #[arg(long, default_value_t = 16)]
    publish_window: usize,
    /// Subscribe with `"coalesce": true` (the server may push several deltas in one
    /// `deltas` frame; the report counts frames and deltas).
    #[arg(long)]
    coalesce: bool,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds a request waits for its reply before it is sent again.
    #[arg(long, default_value_t = 3.0)]
    request_timeout: f64,
    /// Deadline of the whole run, in seconds (default: the sum of the phases' deadlines).
    #[arg(long)]
    max_run_time: Option<f64>,
    /// Seed for the choice of churning clients and their times.
    #[arg(long)]
    seed: Option<u64>,
    /// Allow a non-loopback host (a deployed endpoint).
    #[arg(long)]
    allow_remote: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{name} must be a positive number"))
}

fn config(args: Args) -> Result<(LoadConfig, Option<PathBuf>), String> {
    let token = match args.token {
        Some(token) => TokenSource::Fixed(token),
        None => TokenSource::Secret(args.secret),
    };
    let mut config = LoadConfig::new(args.url, token);
    config.connections = args.connections;
    config.channels = args.channels;
    config.channels_per_connection = args.channels_per_connection;
    config.subscribers = args.subscribers;
    config.publishers = args.publishers;
    config.rate_per_second = args.rate;
    config.duration = args.duration.map(|d| seconds("duration", d)).transpose()?;
    config.publishes = match (args.publishes, config.duration) {
        (None, Some(_)) => None,
        (n, _) => Some(n.unwrap_or(1000)),
    };
    config.payload_bytes = args.payload_bytes;
    config.churn = args.churn;
    config.churn_rounds = args.churn_rounds;
    config.away_min = Duration::from_millis(args.away_min_ms);
    config.away_max = Duration::from_millis(args.away_max_ms);
    config.catch_up_attempts = (args.catch_up_attempts > 0).then_some(args.catch_up_attempts);
    config.publish_timeout = args
        .publish_timeout
        .map(|d| seconds("publish-timeout", d))
        .transpose()?;
    config.settle_timeout = seconds("settle-timeout", args.settle_timeout)?;
    config.connect_timeout = seconds("connect-timeout", args.connect_timeout)?;
    config.connect_concurrency = args.connect_concurrency;
    config.publish_window = args.publish_window;
    config.coalesce = args.coalesce;
    config.request_timeout = seconds("request-timeout", args.request_timeout)?;
    config.max_run_time = args
        .max_run_time
        .map(|d| seconds("max-run-time", d))
        .transpose()?;
    config.seed = args.seed;
    config.allow_remote = args.allow_remote;
    Ok((config, args.json))
}

/// Raises the soft limit on open files to the hard limit: each connection is a socket.
#[cfg(unix)]
fn raise_open_files_limit(wanted: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if (limit.rlim_cur as u64) < wanted && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        if (limit.rlim_cur as u64) < wanted {
            eprintln!(
                "deltacast-load: warning: the open files limit ({}) is below what {wanted} connections need",
                limit.rlim_cur
            );
        }
    }
}

#[cfg(not(unix))]
fn raise_open_files_limit(_wanted: u64) {}

fn main() -> ExitCode {
    let (config, json) = match config(Args::parse()) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("deltacast-load: {message}");
            return ExitCode::from(2);
        }
    };
    raise_open_files_limit(config.connections as u64 + 256);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("deltacast-load: cannot start the runtime: {err}");
            return ExitCode::from(2);
        }
    };
    let report = match runtime.block_on(load::run(config)) {
        Ok(report) => report,
        Err(err) => {
            eprintln!("deltacast-load: {err}");
            return ExitCode::from(2);
        }
    };
    print!("{report}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(&report).expect("the report serialises");
        if let Err(err) = std::fs::write(&path, text + "\n") {
            eprintln!("deltacast-load: cannot write {}: {err}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
