//! The DynamoDB Streams trigger: what Lambda's event source mapping does for a stream,
//! done locally against DynamoDB Local, invoking the same function binaries.
//!
//! # Design
//! [`run_trigger`] is one task that owns the mapping. Every second it lists the stream's
//! shards (DescribeStream, all pages, while the shards are being read) and starts reading
//! each new shard once its parent is finished (or no longer listed), so records of one
//! item are delivered in order across shard roll-overs. A finished shard is forgotten
//! once the listing no longer has it (trimmed away). `StartingPosition` applies to the
//! shards present at start: with `LATEST`, open shards are read from their tip and closed
//! ones skipped; shards that appear later are read from `TRIM_HORIZON`, like Lambda does.
//!
//! Each shard is read by its own future (all polled by the trigger's task, so the
//! invoker is only borrowed): a `reader` turns the shard into filtered batches, and
//! `delivery` hands each batch to the function and does not return until every record
//! of it is processed or given up on. So a shard has one batch in flight at a time and
//! its records are processed strictly in order (`ParallelizationFactor` 1), while
//! different shards proceed independently.
//!
//! # Layout
//! - `source`: the Streams calls, behind a trait (DynamoDB, or a scripted stream in tests).
//! - `reader`: shard iterators, batching window, filtering (see [`crate::filter`]).
//! - `record`: a stream record in the shape the function receives.
//! - `delivery`: invoking, partial batch responses, retries, bisecting, giving up.
//! - `on_failure`: the on-failure destination message, one JSON line per discard.
//!
//! Shutdown drops everything in flight, including an invocation, at its next await.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::filter::{FilterCriteria, FilterError};
use crate::invoke::Invoke;
use crate::template::StreamTrigger;

mod delivery;
mod on_failure;
mod reader;
mod record;
mod source;
#[cfg(test)]
mod tests;

use delivery::Delivery;
use reader::{BatchRules, ShardReader};
use source::{Position, ShardInfo, ShardSource, SourceError};

/// How often the stream's shards are listed again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// How the local stack polls and delivers, beyond what the template says.
#[derive(Clone, Debug, PartialEq)]
pub struct PollOptions {
    /// Pause between GetRecords calls on a shard that returned nothing (default 100 ms);
    /// also the first retry's backoff.
    pub poll_interval: Duration,
    /// JSON-lines file where batches that were given up on are recorded.
    pub on_failure_path: PathBuf,
    /// Fault injection: probability that a batch is invoked twice (models at-least-once
    /// delivery); default 0.
    pub duplicate_batch_rate: f64,
    /// The region the function sees in `awsRegion` (default `us-east-1`).
    pub region: String,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            on_failure_path: std::env::temp_dir().join("deltacast-stream-failures.jsonl"),
            duplicate_batch_rate: 0.0,
            region: "us-east-1".to_owned(),
        }
    }
}

/// Why the trigger could not run.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// DescribeStream says the stream does not exist (the table was deleted, or the ARN is
    /// wrong).
    #[error("stream {0} does not exist")]
    StreamNotFound(String),
    /// A filter pattern Lambda would refuse.
    #[error("stream trigger for {function}: {source}")]
    Filter {
        /// The function the trigger invokes.
        function: String,
        /// What is wrong with the pattern.
        source: FilterError,
    },
    /// A setting outside what Lambda accepts.
    #[error("stream trigger for {function}: {message}")]
    Config {
        /// The function the trigger invokes.
        function: String,
        /// What is wrong.
        message: String,
    },
}

/// Counters of what a trigger has done; clones share them.
#[derive(Clone, Debug, Default)]
pub struct TriggerStats(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    invocations: AtomicU64,
    records_delivered: AtomicU64,
    records_succeeded: AtomicU64,
    retries: AtomicU64,
    bisects: AtomicU64,
    records_given_up: AtomicU64,
    records_filtered_out: AtomicU64,
    duplicate_invocations: AtomicU64,
    shards_started: AtomicU64,
    shards_finished: AtomicU64,
}

/// A snapshot of a trigger's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TriggerCounts {
    /// Invocations, retries and bisected halves included, duplicates not.
    pub invocations: u64,
    /// Records sent in those invocations (a retried record counts each time).
    pub records_delivered: u64,
    /// Records the function processed (checkpointed).
    pub records_succeeded: u64,
    /// Retries: of a failed batch, or of the rest of a partially failed one.
    pub retries: u64,
    /// Failed batches split in two.
    pub bisects: u64,
    /// Records given up on (retries exhausted, too old, or unreadable).
    pub records_given_up: u64,
    /// Records that matched no filter.
    pub records_filtered_out: u64,
    /// Extra deliveries made by fault injection.
    pub duplicate_invocations: u64,
    /// Shards that got an iterator (the trigger reads them).
    pub shards_started: u64,
    /// Shards read to their end (closed) or gone.
    pub shards_finished: u64,
}

impl TriggerStats {
    /// Fresh counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters now.
    pub fn counts(&self) -> TriggerCounts {
        let c = &self.0;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TriggerCounts {
            invocations: get(&c.invocations),
            records_delivered: get(&c.records_delivered),
            records_succeeded: get(&c.records_succeeded),
            retries: get(&c.retries),
            bisects: get(&c.bisects),
            records_given_up: get(&c.records_given_up),
            records_filtered_out: get(&c.records_filtered_out),
            duplicate_invocations: get(&c.duplicate_invocations),
            shards_started: get(&c.shards_started),
            shards_finished: get(&c.shards_finished),
        }
    }

    fn bump(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn add_invocation(&self, records: usize) {
        Self::bump(&self.0.invocations, 1);
        Self::bump(&self.0.records_delivered, records);
    }

    pub(crate) fn add_succeeded(&self, records: usize) {
        Self::bump(&self.0.records_succeeded, records);
    }

    pub(crate) fn add_retry(&self) {
        Self::bump(&self.0.retries, 1);
    }

    pub(crate) fn add_bisect(&self) {
        Self::bump(&self.0.bisects, 1);
    }

    pub(crate) fn add_given_up(&self, records: usize) {
        Self::bump(&self.0.records_given_up, records);
    }

    pub(crate) fn add_filtered_out(&self, records: usize) {
        Self::bump(&self.0.records_filtered_out, records);
    }

    pub(crate) fn add_duplicate(&self) {
        Self::bump(&self.0.duplicate_invocations, 1);
    }

    pub(crate) fn add_shard_started(&self) {
        Self::bump(&self.0.shards_started, 1);
    }

    pub(crate) fn add_shard_finished(&self) {
        Self::bump(&self.0.shards_finished, 1);
    }
}

/// Runs the trigger until `shutdown` is cancelled (then `Ok`), or until the stream turns
/// out not to exist or the trigger's settings are invalid.
pub async fn run_trigger<I: Invoke>(
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    trigger: StreamTrigger,
    invoker: I,
    options: PollOptions,
    shutdown: CancellationToken,
) -> Result<(), StreamError> {
    run_trigger_with_stats(
        streams,
        stream_arn,
        trigger,
        invoker,
        options,
        shutdown,
        TriggerStats::new(),
    )
    .await
}

/// [`run_trigger`], counting into `stats` (keep a clone to read them).
pub async fn run_trigger_with_stats<I: Invoke>(
    streams: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    trigger: StreamTrigger,
    invoker: I,
    options: PollOptions,
    shutdown: CancellationToken,
    stats: TriggerStats,
) -> Result<(), StreamError> {
    run(
        &streams,
        &stream_arn,
        &trigger,
        &invoker,
        &options,
        &shutdown,
        &stats,
    )
    .await
}

/// The trigger over any [`ShardSource`].
async fn run<S: ShardSource, I: Invoke>(
    source: &S,
    stream_arn: &str,
    trigger: &StreamTrigger,
    invoker: &I,
    options: &PollOptions,
    shutdown: &CancellationToken,
    stats: &TriggerStats,
) -> Result<(), StreamError> {
    let filters = check(trigger)?;
    if trigger.parallelization_factor > 1 {
        info!(
            function = %trigger.function,
            parallelization_factor = trigger.parallelization_factor,
            "the local stack processes each shard one batch at a time (ParallelizationFactor 1)"
        );
    }
    let mapping = Trigger {
        source,
        stream_arn,
        trigger,
        invoker,
        options,
        stats,
        rules: BatchRules {
            batch_size: trigger.batch_size,
            batching_window: trigger.batching_window,
            poll_interval: options.poll_interval,
            filters: &filters,
            region: &options.region,
        },
        function_arn: on_failure::function_arn(&options.region, stream_arn, &trigger.function),
    };
    info!(function = %trigger.function, stream_arn, "stream trigger started");
    tokio::select! {
        _ = shutdown.cancelled() => {
            info!(function = %trigger.function, "stream trigger stopped");
            Ok(())
        }
        result = mapping.run() => result,
    }
}

/// Checks the settings the way CreateEventSourceMapping would; compiles the filters.
fn check(trigger: &StreamTrigger) -> Result<FilterCriteria, StreamError> {
    let config = |message: String| StreamError::Config {
        function: trigger.function.clone(),
        message,
    };
    if !(1..=10_000).contains(&trigger.batch_size) {
        return Err(config(format!(
            "BatchSize {} is not within 1..=10000",
            trigger.batch_size
        )));
    }
    if !matches!(
        trigger.starting_position.as_str(),
        "LATEST" | "TRIM_HORIZON"
    ) {
        return Err(config(format!(
            "StartingPosition {:?} is not LATEST or TRIM_HORIZON",
            trigger.starting_position
        )));
    }
    if trigger.maximum_retry_attempts < -1 {
        return Err(config(format!(
            "MaximumRetryAttempts {} is below -1",
            trigger.maximum_retry_attempts
        )));
    }
    FilterCriteria::new(&trigger.filters).map_err(|source| StreamError::Filter {
        function: trigger.function.clone(),
        source,
    })
}

/// A shard the trigger knows of.
#[derive(Debug)]
struct Shard {
    parent: Option<String>,
    start: Position,
    state: ShardState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardState {
    Waiting,
    Reading,
    Finished,
}

/// One running trigger's shared pieces.
struct Trigger<'a, S, I> {
    source: &'a S,
    stream_arn: &'a str,
    trigger: &'a StreamTrigger,
    invoker: &'a I,
    options: &'a PollOptions,
    stats: &'a TriggerStats,
    rules: BatchRules<'a>,
    function_arn: String,
}

impl<S: ShardSource, I: Invoke> Trigger<'_, S, I> {
    /// Discovers shards and reads them, forever (the caller stops it). The listing is one
    /// more branch of the `select!`, so a slow DescribeStream never pauses the readers.
    async fn run(&self) -> Result<(), StreamError> {
        let mut shards: BTreeMap<String, Shard> = BTreeMap::new();
        let mut reading: FuturesUnordered<BoxFuture<'_, String>> = FuturesUnordered::new();
        let mut listing: Option<BoxFuture<'_, Result<Vec<ShardInfo>, SourceError>>> = None;
        let mut discovered = false;
        let mut next_discovery = Instant::now();
        loop {
            for shard_id in ready(&shards) {
                if let Some(shard) = shards.get_mut(&shard_id) {
                    shard.state = ShardState::Reading;
                    reading.push(Box::pin(self.read_shard(shard_id, shard.start.clone())));
                }
            }
            tokio::select! {
                Some(shard_id) = reading.next(), if !reading.is_empty() => {
                    if let Some(shard) = shards.get_mut(&shard_id) {
                        shard.state = ShardState::Finished;
                    }
                }
                listed = async { Some(listing.as_mut()?.await) }, if listing.is_some() => {
                    listing = None;
                    next_discovery = Instant::now() + DISCOVERY_INTERVAL;
                    match listed {
                        Some(Ok(listed)) => {
                            self.learn(&mut shards, listed, !discovered);
                            discovered = true;
                        }
                        Some(Err(SourceError::NotFound(_))) => {
                            return Err(StreamError::StreamNotFound(self.stream_arn.to_owned()));
                        }
                        Some(Err(err)) => {
                            warn!(stream_arn = self.stream_arn, error = %err, "DescribeStream failed; will try again")
                        }
                        None => {}
                    }
                }
                _ = tokio::time::sleep_until(next_discovery), if listing.is_none() => {
                    listing = Some(Box::pin(self.source.shards(self.stream_arn)));
                }
            }
        }
    }

    /// Adds newly listed shards, and forgets finished ones that are no longer listed. At the
    /// first listing `StartingPosition` applies: with `LATEST`, closed shards hold nothing
    /// new and are done already.
    fn learn(&self, shards: &mut BTreeMap<String, Shard>, listed: Vec<ShardInfo>, at_start: bool) {
        forget_trimmed(shards, &listed);
        for info in listed {
            if shards.contains_key(&info.id) {
                continue;
            }
            let latest = at_start && self.trigger.starting_position == "LATEST";
            let (start, state) = match (latest, info.closed) {
                (true, true) => (Position::Latest, ShardState::Finished),
                (true, false) => (Position::Latest, ShardState::Waiting),
                (false, _) => (Position::TrimHorizon, ShardState::Waiting),
            };
            debug!(shard_id = info.id, parent = ?info.parent, closed = info.closed, ?start, "new shard");
            shards.insert(
                info.id,
                Shard {
                    parent: info.parent,
                    start,
                    state,
                },
            );
        }
    }

    /// Reads one shard to its end, delivering batch after batch; returns its id.
    async fn read_shard(&self, shard_id: String, start: Position) -> String {
        let delivery = Delivery {
            invoker: self.invoker,
            trigger: self.trigger,
            options: self.options,
            stats: self.stats,
            stream_arn: self.stream_arn,
            shard_id: &shard_id,
            function_arn: &self.function_arn,
        };
        let mut reader = ShardReader::new(
            self.source,
            self.stream_arn,
            &shard_id,
            start,
            &self.rules,
            self.stats,
        );
        while let Some(batch) = reader.next_batch().await {
            delivery.deliver(batch).await;
        }
        self.stats.add_shard_finished();
        debug!(shard_id, "shard finished");
        shard_id
    }
}

/// Drops the finished shards that `listed` no longer has: trimmed away, they will not come
/// back. (A finished shard still listed is kept, or it would be read again.) A child whose
/// parent is forgotten is ready, as one whose parent is finished. An empty listing is
/// not trusted to forget anything: forgotten shards that came back would be read again.
fn forget_trimmed(shards: &mut BTreeMap<String, Shard>, listed: &[ShardInfo]) {
    if listed.is_empty() {
        return;
    }
    shards.retain(|id, shard| {
        shard.state != ShardState::Finished || listed.iter().any(|info| info.id == *id)
    });
}

/// Shards waiting whose parent is finished or unknown (trimmed away).
fn ready(shards: &BTreeMap<String, Shard>) -> Vec<String> {
    shards
        .iter()
        .filter(|(_, shard)| shard.state == ShardState::Waiting)
        .filter(|(_, shard)| {
            shard
                .parent
                .as_ref()
                .and_then(|parent| shards.get(parent))
                .is_none_or(|parent| parent.state == ShardState::Finished)
        })
        .map(|(id, _)| id.clone())
        .collect()
}
