//! `deltacast-local`: runs the whole stack on this machine (`make dev`), prints a
//! development token (`make token`), or replays the stream batches the stack gave up on
//! (`make redrive`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use deltacast_local::gateway::ManagementFaults;
use deltacast_local::metrics::{MetricsPage, Traffic};
use deltacast_local::redrive::{RedriveError, RedriveOptions, redrive};
use deltacast_local::runtime::FunctionFaults;
use deltacast_local::stack::{
    DEV_JWT_SECRET, DEV_TOKEN_HOURS, JWT_SECRET_VARIABLE, Stack, StackOptions, TOKEN_USER_FROM_CLI,
    check_token_user, dev_token,
};
use tracing_subscriber::EnvFilter;

/// How often `serve` logs its `traffic:` line (only for windows in which anything happened).
const TRAFFIC_WINDOW: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(
    version,
    about = "deltacast's local stack: API Gateway WebSockets, Lambda and the stream trigger on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the stack until Ctrl-C.
    Serve(Box<Serve>),
    /// Print a development token with every capability on every channel.
    Token {
        /// The token's `sub`: 1 to 123 characters of A-Z a-z 0-9 _ - : . @ (so that
        /// `user:<sub>` is a channel name).
        #[arg(long, default_value = "alice", value_parser = token_user)]
        user: String,
        /// The signing secret: the same `JWT_SECRET` that `serve` verifies with.
        #[arg(long, env = JWT_SECRET_VARIABLE, default_value = DEV_JWT_SECRET, hide_env_values = true)]
        secret: String,
        /// Validity in hours.
        #[arg(long, default_value_t = DEV_TOKEN_HOURS)]
        hours: u64,
    },
    /// Replay the stream batches the running stack gave up on (its on-failure file)
    /// through its Invoke API; replayed lines leave the file.
    Redrive(Redrive),
}

#[derive(clap::Args)]
struct Redrive {
    /// The on-failure file (`serve --on-failure-file`).
    #[arg(long, default_value = ".local/stream-failures.jsonl")]
    file: PathBuf,
    /// The running stack's gateway, whose Invoke API runs the functions.
    #[arg(long, default_value = "http://127.0.0.1:3001")]
    endpoint: String,
    /// DynamoDB Local's endpoint, whose stream holds the records.
    #[arg(
        long,
        env = "DYNAMODB_ENDPOINT",
        default_value = "http://127.0.0.1:8000"
    )]
    dynamodb: String,
    /// The SAM template (for the stream triggers' filters).
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
}

#[derive(clap::Args)]
struct Serve {
    /// Address to listen on; 0.0.0.0 lets phones on the same network connect (it needs a
    /// JwtSecret of your own: the development secret stays on loopback).
    #[arg(long, env = "DELTACAST_BIND", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Port for WebSockets and the Management API.
    #[arg(long, env = "DELTACAST_PORT", default_value_t = 3001)]
    port: u16,
    /// The SAM template.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// DynamoDB Local's endpoint.
    #[arg(
        long,
        env = "DYNAMODB_ENDPOINT",
        default_value = "http://127.0.0.1:8000"
    )]
    dynamodb: String,
    /// Table name.
    #[arg(long, env = "TABLE_NAME", default_value = "deltacast")]
    table: String,
    /// Folder with the function binaries.
    #[arg(long, default_value = "target/debug")]
    functions_dir: PathBuf,
    /// The HS256 secret tokens are signed with (the `JwtSecret` parameter; a
    /// `--parameter JwtSecret=...` wins). Default: the development secret.
    #[arg(long, env = JWT_SECRET_VARIABLE, hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Template parameter, NAME=VALUE (repeatable), e.g. RetentionSeconds=3600.
    #[arg(long = "parameter", value_parser = key_value)]
    parameters: Vec<(String, String)>,
    /// Extra function environment variable, NAME=VALUE (repeatable), e.g. FANOUT_CONCURRENCY=64.
    #[arg(long = "env", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Milliseconds between stream polls of an idle shard.
    #[arg(long, env = "POLL_INTERVAL_MS", default_value_t = 100)]
    poll_interval_ms: u64,
    /// Seconds without traffic before a connection is closed.
    #[arg(long, default_value_t = 600)]
    idle_timeout_secs: u64,
    /// Seconds before any connection is closed.
    #[arg(long, default_value_t = 7200)]
    max_connection_secs: u64,
    /// Instances per function at most.
    #[arg(long, default_value_t = 10)]
    max_instances: usize,
    /// Where stream batches given up on are recorded.
    #[arg(long, default_value = ".local/stream-failures.jsonl")]
    on_failure_file: PathBuf,
    /// Fault injection: share of Management API posts answered 410.
    #[arg(long, default_value_t = 0.0)]
    fault_gone_rate: f64,
    /// Fault injection: share of Management API posts answered 429.
    #[arg(long, default_value_t = 0.0)]
    fault_throttle_rate: f64,
    /// Fault injection: share of Management API posts answered 500.
    #[arg(long, default_value_t = 0.0)]
    fault_error_rate: f64,
    /// Fault injection: share of Management API posts of `delta` frames answered 200 and
    /// never delivered.
    #[arg(long, default_value_t = 0.0)]
    fault_drop_rate: f64,
    /// Fault injection: milliseconds added to every Management API post.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,
    /// Fault injection: share of invocations whose instance is killed mid-invocation.
    #[arg(long, default_value_t = 0.0)]
    fault_crash_rate: f64,
    /// Fault injection: share of stream batches delivered twice.
    #[arg(long, default_value_t = 0.0)]
    fault_duplicate_batch_rate: f64,
    /// A build of the demo app (`make demo`: clients/typescript/demo/dist) to serve under
    /// /demo/, with development tokens at /demo/token?user=NAME for this machine only.
    #[arg(long)]
    demo_dir: Option<PathBuf>,
    /// Let the demo's token route sign with a JWT_SECRET of your own (with the development
    /// secret it always does). Anything that forwards to this machine's loopback (ssh -R,
    /// a tunnel) then hands tokens signed with your secret to whoever reaches it.
    #[arg(long)]
    demo_tokens: bool,
}

/// The `--user` of `token`: what [`check_token_user`] accepts.
fn token_user(text: &str) -> Result<String, String> {
    check_token_user(text, TOKEN_USER_FROM_CLI).map(|()| text.to_owned())
}

fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Token {
            user,
            secret,
            hours,
        } => {
            println!(
                "{}",
                dev_token(&secret, &user, Duration::from_secs(hours * 3600))
            );
            std::process::ExitCode::SUCCESS
        }
        Command::Redrive(args) => run_redrive(args).await,
        Command::Serve(serve) => {
            tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
                }))
                .with_target(false)
                .init();
            match run(serve).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("deltacast-local: {err}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs `redrive`: one line per entry of the file, then a summary; fails unless every
/// entry was replayed.
async fn run_redrive(args: Redrive) -> std::process::ExitCode {
    let options = RedriveOptions {
        file: args.file,
        endpoint: args.endpoint,
        dynamodb_endpoint: args.dynamodb,
        template: args.template,
    };
    let report = match redrive(&options).await {
        Ok(report) => report,
        Err(RedriveError::Rewrite { report, source }) => {
            for entry in &report.entries {
                println!("{entry}");
            }
            eprintln!("deltacast-local redrive: {source}");
            return std::process::ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("deltacast-local redrive: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for entry in &report.entries {
        println!("{entry}");
    }
    println!("{}", report.summary());
    if report.kept() == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The banner's command that opens a WebSocket to the stack: `wscat` through `npx`, which
/// needs only Node.js (websocat, say, is not packaged by Debian).
fn try_it_command(url: &str, token: &str) -> String {
    format!("npx --yes wscat@6 -c '{url}?token={token}'")
}

/// The banner's HTTP commands: a stream of a channel's events, and a publish to it.
fn http_commands(base: &str, token: &str) -> [String; 2] {
    [
        format!("curl -N '{base}/channels/chat:lobby/events?token={token}'"),
        format!(
            "curl --json '{{\"id\":\"m1\",\"data\":{{\"text\":\"hi\"}}}}' -H 'authorization: Bearer {token}' {base}/channels/chat:lobby/messages"
        ),
    ]
}

/// What the banner adds to the Management API's address: off loopback, that it answers
/// only this machine (it checks no signature; see `gateway::management`).
fn management_note(bind: IpAddr) -> &'static str {
    if bind.to_canonical().is_loopback() {
        ""
    } else {
        " (answers this machine only)"
    }
}

/// The banner's line for the demo app: its page for one user and how to be another. It
/// names a loopback address whenever the stack listens on all of them, since only this
/// machine gets the demo's tokens.
fn demo_line(bind: IpAddr, port: u16) -> String {
    let ip = match bind {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from([127, 0, 0, 1]),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let page = format!("http://{}/demo/", SocketAddr::new(ip, port));
    format!("Demo app:        {page}?user=ann   (a second tab: ?user=bob)")
}

/// What the banner says about the build it runs: a debug build is fine for trying things,
/// but its throughput and latency say nothing about the functions', so it says how to get
/// release binaries.
fn build_note(debug: bool) -> Option<&'static str> {
    debug.then_some(
        "Debug build: fine for trying it out; for load or latency figures run `make dev RELEASE=1`.",
    )
}

async fn run(serve: Box<Serve>) -> Result<(), Box<dyn std::error::Error>> {
    let serve = *serve;
    let root = std::env::current_dir()?;
    let mut options = StackOptions::new(root);
    options.template = serve.template;
    options.bind = SocketAddr::new(serve.bind, serve.port);
    options.dynamodb_endpoint = serve.dynamodb;
    options.table_name = serve.table;
    options.functions_dir = serve.functions_dir;
    options.parameters = serve.parameters.into_iter().collect();
    if let Some(secret) = serve.jwt_secret.filter(|secret| !secret.is_empty()) {
        options
            .parameters
            .entry("JwtSecret".into())
            .or_insert(secret);
    }
    let mut env: BTreeMap<String, String> = serve.env.into_iter().collect();
    if let Ok(level) = std::env::var("RUST_LOG") {
        env.entry("RUST_LOG".into()).or_insert(level);
    }
    options.env = env;
    options.poll_interval = Duration::from_millis(serve.poll_interval_ms);
    options.gateway.idle_timeout = Duration::from_secs(serve.idle_timeout_secs);
    options.gateway.max_connection_duration = Duration::from_secs(serve.max_connection_secs);
    options.gateway.faults = ManagementFaults {
        gone_rate: serve.fault_gone_rate,
        throttle_rate: serve.fault_throttle_rate,
        error_rate: serve.fault_error_rate,
        drop_rate: serve.fault_drop_rate,
        latency: Duration::from_millis(serve.fault_latency_ms),
    };
    options.max_instances = serve.max_instances;
    options.on_failure_path = serve.on_failure_file;
    options.function_faults = FunctionFaults {
        crash_rate: serve.fault_crash_rate,
        only: Vec::new(),
    };
    options.duplicate_batch_rate = serve.fault_duplicate_batch_rate;
    options.demo_dir = serve.demo_dir;
    options.demo_tokens = serve.demo_tokens;

    let stack = Stack::start(options).await?;
    let host = match serve.bind {
        IpAddr::V4(ip) if ip.is_unspecified() => "<this machine's address>".to_owned(),
        ip => ip.to_string(),
    };
    let url = format!("ws://{host}:{}/local", stack.address.port());
    println!();
    println!("  deltacast is running");
    println!("  WebSocket URL:   {url}?token=<JWT>");
    println!(
        "  Management API:  {}{}",
        stack.management_endpoint,
        management_note(serve.bind)
    );
    let http = stack
        .http_url
        .as_ref()
        .map(|_| format!("http://{host}:{}/v1", stack.address.port()));
    if let Some(http) = &http {
        println!("  HTTP API + SSE:  {http}/  (docs/http.md; OpenAPI at {http}/openapi.json)");
    }
    if stack.demo_url.is_some() {
        println!("  {}", demo_line(serve.bind, stack.address.port()));
    }
    if stack.signs_tokens {
        let token = dev_token(
            &stack.jwt_secret,
            "alice",
            Duration::from_secs(DEV_TOKEN_HOURS * 3600),
        );
        println!(
            "  Token (alice, every capability, {DEV_TOKEN_HOURS} h; `make token USER=bob` for others):"
        );
        println!("  {token}");
        println!();
        println!("  Try it:  {}", try_it_command(&url, &token));
        println!("           {{\"action\":\"subscribe\",\"channel\":\"chat:lobby\"}}");
        if let Some(http) = &http {
            for line in http_commands(http, &token) {
                println!("           {line}");
            }
        }
    } else {
        println!("  Tokens: signed by your identity provider (JwtJwksUrl)");
    }
    if let Some(note) = build_note(cfg!(debug_assertions)) {
        println!();
        println!("  {note}");
    }
    println!();
    let traffic = tokio::spawn(log_traffic(stack.metrics().clone()));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    traffic.abort();
    eprintln!("shutting down");
    stack.shutdown().await;
    Ok(())
}

/// Logs one `traffic:` line per [`TRAFFIC_WINDOW`] in which anything happened (see
/// [`Traffic`] for what it counts), until aborted.
async fn log_traffic(page: MetricsPage) {
    let mut ticks = tokio::time::interval(TRAFFIC_WINDOW);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut before = (tokio::time::Instant::now(), page.snapshot());
    loop {
        ticks.tick().await;
        let after = (tokio::time::Instant::now(), page.snapshot());
        if let Some(traffic) = Traffic::between(&before.1, &after.1, after.0 - before.0) {
            tracing::info!("traffic: {traffic}");
        }
        before = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_opens_the_socket_with_wscat_through_npx() {
        assert_eq!(
            try_it_command("ws://127.0.0.1:3001/local", "abc"),
            "npx --yes wscat@6 -c 'ws://127.0.0.1:3001/local?token=abc'"
        );
    }

    #[test]
    fn the_banner_streams_and_publishes_with_curl() {
        let [stream, publish] = http_commands("http://127.0.0.1:3001/v1", "abc");
        assert_eq!(
            stream,
            "curl -N 'http://127.0.0.1:3001/v1/channels/chat:lobby/events?token=abc'"
        );
        assert_eq!(
            publish,
            r#"curl --json '{"id":"m1","data":{"text":"hi"}}' -H 'authorization: Bearer abc' http://127.0.0.1:3001/v1/channels/chat:lobby/messages"#
        );
    }

    #[test]
    fn off_loopback_the_banner_says_the_management_api_answers_this_machine_only() {
        assert_eq!(management_note("127.0.0.1".parse().unwrap()), "");
        assert_eq!(
            management_note("0.0.0.0".parse().unwrap()),
            " (answers this machine only)"
        );
    }

    #[test]
    fn the_banner_links_the_demo_app_for_two_users_on_a_loopback_address() {
        assert_eq!(
            demo_line("127.0.0.1".parse().unwrap(), 3001),
            "Demo app:        http://127.0.0.1:3001/demo/?user=ann   (a second tab: ?user=bob)"
        );
        assert!(
            demo_line("0.0.0.0".parse().unwrap(), 4000)
                .contains(" http://127.0.0.1:4000/demo/?user=ann "),
            "all addresses: the loopback one, where the token route answers"
        );
        assert!(
            demo_line("::".parse().unwrap(), 4000).contains(" http://[::1]:4000/demo/?user=ann "),
            "IPv6 in brackets"
        );
    }

    #[test]
    fn a_debug_build_says_that_load_figures_need_a_release_build() {
        let note = build_note(true).expect("a note for debug builds");
        assert!(note.contains("make dev RELEASE=1"), "{note}");
        assert_eq!(build_note(false), None, "release builds need no note");
    }
}
