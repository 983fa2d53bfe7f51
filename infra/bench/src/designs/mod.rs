//! `publish_designs`: candidate publish designs for ONE hot channel, side by side against
//! DynamoDB Local (issue 12 asks for two or more to be compared before one is chosen).
//!
//! Each candidate gets a table of its own and, per concurrency P, a channel of its own;
//! P publishers publish small (64-byte) messages to it as fast as they are answered for
//! a fixed time. The figures per candidate and P: publishes per second, p50/p99 publish
//! latency, DynamoDB requests, write and read units and lost races per publish. Beside
//! them, the ceiling: P writers of unconditional small PutItems for the same time.
//! After each run the channel's deltas are read back and must be seqs 1..n, once per
//! message and exactly the seqs the publishers were told ([`dynamo::check`]): a figure
//! of a run that broke the promises would mean nothing.
//!
//! The candidates (one file each) are compact reimplementations on the raw SDK, not the
//! store's code: [`race`] (today's), [`counter`] (atomic head counter), [`sequencer`]
//! (inbox and one sequencer per channel).

mod counter;
mod dynamo;
mod race;
mod sequencer;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use dynamo::Ctx;
pub use stats::DesignRun;
use stats::Tally;

/// `deltacast-bench designs`: the comparison on its own.
#[derive(clap::Args, Clone, Debug)]
pub struct DesignsArgs {
    /// DynamoDB Local's endpoint.
    #[arg(long, env = "DELTACAST_TEST_DYNAMODB")]
    pub dynamodb: String,
    /// Concurrent publishers, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub publishers: Vec<usize>,
    /// Seconds per run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Milliseconds of network latency added to each request (0: DynamoDB Local as is;
    /// 5: about AWS's round trip within a region).
    #[arg(long, default_value_t = 0.0)]
    pub rtt_ms: f64,
}

/// Bytes of each message's data.
pub const PAYLOAD_BYTES: usize = 64;

/// How one publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored and answered with its seq.
    Stored,
    /// Gave up after the attempt limit (the client would retry).
    GaveUp,
}

/// The report: every run, the ceiling's among them.
#[derive(Debug, Clone, Serialize)]
pub struct DesignsReport {
    /// Seconds per run.
    pub seconds: f64,
    /// Bytes of each message's data.
    pub payload_bytes: usize,
    /// One row per design and concurrency; `ceiling` is unconditional PutItems.
    pub runs: Vec<DesignRun>,
    /// What the figures leave out.
    pub caveats: Vec<&'static str>,
    /// Milliseconds of network latency added to each request.
    pub rtt_ms: f64,
}

/// The designs, in the order they are run and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// Unconditional PutItems: DynamoDB Local's ceiling.
    Ceiling,
    /// Today's algorithm.
    Race,
    /// Atomic head counter.
    Counter,
    /// Inbox and single sequencer, deltas written one after another.
    Sequencer,
    /// Inbox and single sequencer, a batch's deltas in one transaction.
    SequencerTx,
}

impl Design {
    /// Every design.
    pub const ALL: [Design; 5] = [
        Design::Ceiling,
        Design::Race,
        Design::Counter,
        Design::Sequencer,
        Design::SequencerTx,
    ];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Design::Ceiling => "ceiling",
            Design::Race => "race",
            Design::Counter => "counter",
            Design::Sequencer => "sequencer",
            Design::SequencerTx => "sequencer-tx",
        }
    }
}

/// Runs every design with each concurrency of `args`.
pub async fn measure(args: &DesignsArgs) -> Result<DesignsReport, String> {
    let client = Client::new(&deltacast_local::stack::local_sdk_config(&args.dynamodb).await);
    let duration = Duration::from_secs_f64(args.seconds);
    let rtt = Duration::from_secs_f64(args.rtt_ms / 1000.0);
    let mut tables = Vec::new();
    for design in Design::ALL {
        let table = format!(
            "bench-designs-{}-{:08x}",
            design.name(),
            rand::random::<u32>()
        );
        dynamo::create_table(&client, &table).await?;
        tables.push((design, table));
    }
    // Concurrency first, so that each design runs right after the ceiling it is shown
    // beside (a shared machine's load drifts).
    let mut runs = Vec::new();
    let mut result = Ok(());
    'all: for &publishers in &args.publishers {
        for (design, table) in &tables {
            eprintln!("  {} with {publishers} publishers...", design.name());
            match run(&client, table, *design, publishers, duration, rtt).await {
                Ok(r) => runs.push(r),
                Err(e) => {
                    result = Err(format!(
                        "{} with {publishers} publishers: {e}",
                        design.name()
                    ));
                    break 'all;
                }
            }
        }
    }
    for (_, table) in &tables {
        dynamo::delete_table(&client, table).await?;
    }
    result?;
    runs.sort_by_key(|r| Design::ALL.iter().position(|d| d.name() == r.design));
    Ok(DesignsReport {
        seconds: args.seconds,
        rtt_ms: args.rtt_ms,
        payload_bytes: PAYLOAD_BYTES,
        runs,
        caveats: vec![
            "DynamoDB Local on this machine: no network latency (on AWS a round trip is ~5 ms, so latencies grow by ~5 ms per sequential request) and no partition limits (1,000 WCU/s per partition on AWS)",
            "refused conditional writes are counted as 1 write unit each (DynamoDB bills them by item size; all items here are under 1 KB)",
            "counter: no crash repair (tombstones for seqs whose publisher died), which costs nothing on this path",
            "sequencer: an in-process channel stands in for the DynamoDB stream, so the stream's delay (a poll, ~100 ms to 1 s on AWS) is not in the latency; the sequencer neither updates the claims with their seqs nor posts acks over the Management API",
            "sequencer-tx: DynamoDB Local reports 2 write units per transaction whatever its size; the figure counts AWS's 2 per item (≤ 1 KB)",
        ],
    })
}

/// One design with `publishers` publishers on a fresh channel of `table`.
pub async fn run(
    client: &Client,
    table: &str,
    design: Design,
    publishers: usize,
    duration: Duration,
    rtt: Duration,
) -> Result<DesignRun, String> {
    let channel = format!(
        "{}-{publishers}-{:08x}",
        design.name(),
        rand::random::<u32>()
    );
    let ctx = Arc::new(Ctx::new(client.clone(), table, &channel, rtt));
    ctx.start_epoch().await?;
    let sequencer = match design {
        Design::Sequencer => Some(sequencer::Sequencer::start(ctx.clone(), false)),
        Design::SequencerTx => Some(sequencer::Sequencer::start(ctx.clone(), true)),
        _ => None,
    };
    let sequencer = Arc::new(sequencer);
    let data = "x".repeat(PAYLOAD_BYTES);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(publishers);
    for p in 0..publishers {
        let (ctx, sequencer, data) = (ctx.clone(), sequencer.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let from = format!("p{p}");
            let mut tally = Tally::default();
            let mut k = 0u64;
            while Instant::now() < deadline {
                let id = format!("m{k}");
                k += 1;
                let begun = Instant::now();
                let outcome = match (design, sequencer.as_ref()) {
                    (Design::Ceiling, _) => ceiling_put(&ctx, &from, &id, &data).await?,
                    (Design::Race, _) => race::publish(&ctx, &from, &id, &data).await?,
                    (Design::Counter, _) => counter::publish(&ctx, &from, &id, &data).await?,
                    (_, Some(s)) => s.publish(&ctx, &from, &id, &data).await?,
                    (Design::Sequencer | Design::SequencerTx, None) => {
                        unreachable!("the sequencer was started")
                    }
                };
                match outcome {
                    Outcome::Stored => tally.latencies.push(begun.elapsed()),
                    Outcome::GaveUp => tally.gave_up += 1,
                }
            }
            Ok::<Tally, String>(tally)
        }));
    }
    let mut tally = Tally::default();
    let mut failure = None;
    for task in tasks {
        match task.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(t) => {
                tally.latencies.extend(t.latencies);
                tally.gave_up += t.gave_up;
            }
            Err(e) => failure = Some(e),
        }
    }
    tally.elapsed = started.elapsed();
    if let Some(sequencer) = Arc::into_inner(sequencer).flatten() {
        sequencer.stop().await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    (
        tally.requests,
        tally.wcu,
        tally.rcu,
        tally.retries,
        tally.batches,
    ) = ctx.meter.totals();
    if ctx.meter.round_trips() != tally.requests {
        return Err(format!(
            "{} requests but {} round trips: a request path skips the added latency",
            tally.requests,
            ctx.meter.round_trips()
        ));
    }
    let mut report = DesignRun::from_tally(design.name(), publishers, &tally);
    if design != Design::Ceiling {
        report.problems = Some(ctx.problems(report.publishes).await?);
    }
    Ok(report)
}

/// The ceiling's "publish": one unconditional PutItem of a delta-sized item.
async fn ceiling_put(ctx: &Ctx, from: &str, id: &str, data: &str) -> Result<Outcome, String> {
    ctx.round_trip().await;
    let mut item = ctx.delta(0, from, id, data);
    item.insert("sk".into(), dynamo::s(format!("x#{from}#{id}")));
    let out = ctx
        .client
        .put_item()
        .table_name(&ctx.table)
        .set_item(Some(item))
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| format!("ceiling put: {}", dynamo::sdk(e)))?;
    ctx.meter.record(out.consumed_capacity(), true);
    Ok(Outcome::Stored)
}

/// The report as a table, each run beside the ceiling at the same concurrency.
pub fn table(report: &DesignsReport) -> String {
    let mut out = format!(
        "{:<12} {:>4} {:>9} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>7} {:>6}  check\n",
        "design",
        "P",
        "publ/s",
        "ceiling",
        "p50 ms",
        "p99 ms",
        "req/p",
        "WCU/p",
        "RCU/p",
        "retry/p",
        "gaveup",
        "batch"
    );
    for r in &report.runs {
        let ceiling = report
            .runs
            .iter()
            .find(|c| c.design == "ceiling" && c.publishers == r.publishers)
            .map(|c| format!("{:.0}%", 100.0 * r.per_s / c.per_s.max(1e-9)))
            .unwrap_or_default();
        let check = match &r.problems {
            None => "-".to_owned(),
            Some(p) if p.is_empty() => "ok".to_owned(),
            Some(p) => p.join("; "),
        };
        out.push_str(&format!(
            "{:<12} {:>4} {:>9.0} {:>8} {:>8.1} {:>8.1} {:>7.2} {:>7.2} {:>7.2} {:>8.2} {:>7} {:>6}  {check}\n",
            r.design,
            r.publishers,
            r.per_s,
            ceiling,
            r.p50_ms,
            r.p99_ms,
            r.requests_per_publish,
            r.wcu_per_publish,
            r.rcu_per_publish,
            r.retries_per_publish,
            r.gave_up,
            r.mean_batch.map(|b| format!("{b:.1}")).unwrap_or_else(|| "-".into()),
        ));
    }
    out
}

/// The summary's rows (figure, value, baseline) of a `publish_designs` section.
pub fn rows(section: &Value) -> Vec<(String, String, String)> {
    let runs = section["runs"].as_array().cloned().unwrap_or_default();
    let ceiling = |p: &Value| {
        runs.iter()
            .find(|c| c["design"] == "ceiling" && &c["publishers"] == p)
            .and_then(|c| c["per_s"].as_f64())
            .unwrap_or(0.0)
    };
    runs.iter()
        .filter(|r| r["design"] != "ceiling")
        .map(|r| {
            let f = |name: &str| r[name].as_f64().unwrap_or(0.0);
            (
                format!(
                    "publish_designs {} P={} per_s",
                    r["design"].as_str().unwrap_or("?"),
                    r["publishers"]
                ),
                format!("{:.0}", f("per_s")),
                format!(
                    "ceiling {:.0}/s; p50 {:.1} ms, p99 {:.1} ms, {:.2} WCU/publish",
                    ceiling(&r["publishers"]),
                    f("p50_ms"),
                    f("p99_ms"),
                    f("wcu_per_publish")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
