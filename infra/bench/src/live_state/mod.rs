//! The `live_state` section of `make bench` (issue 13): state channels and presence at
//! the rate of an audience, on a stack of its own (release binaries) against a DynamoDB
//! Local of its own (see `crate::dynamodb::fresh`), whose write ceiling is measured first:
//!
//! 1. a live poll (`poll.rs`): `--live-voters` voters vote once each (plus duplicate
//!    attempts and retries) while `--live-viewers` viewers hold the tally: votes acked per
//!    second beside the write ceiling, the final tally against the votes acked, duplicates
//!    answered as such, patch frames per viewer per second against `STATE_PATCH_RATE`,
//!    and the time from a vote's ack to the viewers' state including it;
//! 2. the poll's write units per vote and its cost on AWS, beside the same poll as a log
//!    channel (each vote a publish delivered to every viewer);
//! 3. presence (`presence.rs`): `--live-members` members entering within
//!    `--live-enter-seconds` while `--live-watchers` watchers hold the member list: frames
//!    per watcher, time until every list is complete, the list after all leave.
//!
//! Every run is bounded in clients and time.

mod poll;
mod presence;
mod rows;

use std::time::Duration;

use deltacast::store::{Lifetimes, Store};
use serde_json::{Value, json};

use crate::RunArgs;
use crate::cost::PRICES;
use crate::dynamodb::{FreshDynamoDb, ceiling};

pub use rows::rows;

/// The section's settings (`deltacast-bench run --live-...`).
#[derive(clap::Args, Clone, Debug)]
pub struct LiveArgs {
    /// Voters in the poll, each voting once.
    #[arg(id = "live-voters", long = "live-voters", default_value_t = 1000)]
    pub voters: usize,
    /// Viewers of the poll.
    #[arg(id = "live-viewers", long = "live-viewers", default_value_t = 200)]
    pub viewers: usize,
    /// Members entering one channel's presence.
    #[arg(id = "live-members", long = "live-members", default_value_t = 500)]
    pub members: usize,
    /// Watchers of that presence.
    #[arg(id = "live-watchers", long = "live-watchers", default_value_t = 50)]
    pub watchers: usize,
    /// Seconds over which the members enter.
    #[arg(
        id = "live-enter-seconds",
        long = "live-enter-seconds",
        default_value_t = 5.0
    )]
    pub enter_seconds: f64,
    /// Instances per function on the section's stack.
    #[arg(
        id = "live-max-instances",
        long = "live-max-instances",
        default_value_t = 16
    )]
    pub max_instances: usize,
}

/// The patch rate the section's stack runs with (the default).
const PATCH_RATE: f64 = 4.0;
/// Write units of one publish on a busy channel (inbox put, then the delta in the
/// sequencer's transaction: docs/data-model.md), what a vote costs as a log publish.
const LOG_WCU_PER_PUBLISH: f64 = 3.0;
/// Concurrent writers and seconds of the write ceiling measurement.
const CEILING_WRITERS: usize = 32;
const CEILING_SECONDS: f64 = 4.0;

/// Measures the section.
pub async fn measure(args: &RunArgs) -> Result<Value, String> {
    let live = &args.live;
    let root = std::env::current_dir().map_err(|e| e.to_string())?;
    let dynamodb = FreshDynamoDb::start(&root).await?;
    let result = on(args, live, &dynamodb.endpoint).await;
    dynamodb.stop().await;
    result
}

async fn on(args: &RunArgs, live: &LiveArgs, endpoint: &str) -> Result<Value, String> {
    eprintln!("  live_state: DynamoDB Local's write ceiling...");
    let duration = Duration::from_secs_f64(CEILING_SECONDS);
    let ceiling = ceiling::measure(endpoint, CEILING_WRITERS, duration, true).await?;
    let max_instances = live.max_instances;
    let stack = crate::start_stack_with(args, |options| {
        options.max_instances = max_instances;
        options.dynamodb_endpoint = endpoint.to_owned();
    })
    .await?;
    let secret = stack.jwt_secret.clone();
    let result = async {
        let poll = poll::run(&stack.url, &secret, live.voters, live.viewers).await?;
        let document = document_size(endpoint, &stack.table_name).await?;
        let presence = presence::run(
            &stack.url,
            &secret,
            live.members,
            live.watchers,
            live.enter_seconds,
        )
        .await?;
        Ok::<_, String>((poll, document, presence))
    }
    .await;
    stack.shutdown().await;
    let (poll, (doc_writes, doc_bytes), presence) = result?;
    let cost = poll_cost(&poll, doc_writes, doc_bytes);
    Ok(json!({
        "patch_rate": PATCH_RATE,
        "dynamodb_local_write_ceiling": ceiling,
        "poll": poll,
        "document": {"writes": doc_writes, "bytes": doc_bytes},
        "cost": cost,
        "presence": presence,
    }))
}

/// The poll document's writes and its size at the end, bytes.
async fn document_size(endpoint: &str, table: &str) -> Result<(u64, usize), String> {
    let client =
        aws_sdk_dynamodb::Client::new(&deltacast_local::stack::local_sdk_config(endpoint).await);
    let lifetimes = Lifetimes {
        retention: Duration::from_secs(86_400),
        connection_ttl: Duration::from_secs(10_800),
        publish_lease: Duration::from_secs(15),
    };
    let store = Store::new(client, table, lifetimes);
    let state = store
        .state(poll::CHANNEL)
        .await
        .map_err(|e| e.to_string())?;
    let value = Value::Object(state.document.value.clone()).to_string();
    Ok((state.writes, value.len()))
}

/// Write units per vote, and the poll's cost on AWS beside the same poll as a log channel.
fn poll_cost(poll: &poll::PollFigures, doc_writes: u64, doc_bytes: usize) -> Value {
    let votes = poll.votes_acked.max(1) as f64;
    // An op item is well under 1 KB: 1 write unit; a refused duplicate or retry also bills 1.
    let op_wcu = 1.0;
    let repeats = (poll.duplicate_attempts + poll.retries) as f64;
    // Each document write bills its whole item (the value, the checkpoint, the patch;
    // counted at its final size, an upper bound).
    let doc_wcu = ((doc_bytes + 512) as f64 / 1024.0).ceil();
    let state_wcu = votes * op_wcu + repeats + doc_writes as f64 * doc_wcu;
    let viewers = poll.viewers as f64;
    let answers = votes + poll.duplicate_attempts as f64 + poll.retries as f64;
    let state_messages = answers + viewers * (1.0 + poll.patches_per_viewer_mean);
    let log_wcu = votes * LOG_WCU_PER_PUBLISH + repeats;
    let log_messages = answers + viewers + votes * viewers;
    let dollars = |wcu: f64, messages: f64| {
        (wcu * PRICES.dynamodb_write_per_million + messages * PRICES.websocket_message_per_million)
            / 1e6
    };
    // A poll's document without the bench's per-voter markers: the tally alone, under
    // 1 KB, so 1 unit a write.
    let tally_wcu = votes * op_wcu + repeats + doc_writes as f64;
    json!({
        "wcu_per_vote": state_wcu / votes,
        "wcu_per_vote_tally_only": tally_wcu / votes,
        "document_wcu_per_write": doc_wcu,
        "state": {"wcu": state_wcu, "messages": state_messages, "usd": dollars(state_wcu, state_messages)},
        "log": {"wcu": log_wcu, "wcu_per_vote": log_wcu / votes, "messages": log_messages, "usd": dollars(log_wcu, log_messages)},
        "counted": "DynamoDB writes and API Gateway messages (what differs); connection minutes, Lambda and reads are left out",
    })
}
