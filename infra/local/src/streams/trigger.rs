//! The trigger's own loop: check the settings as CreateEventSourceMapping would, then
//! list the stream's shards every second and read each new shard (once its parent is
//! finished) with its own reader and delivery, until shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::delivery::Delivery;
use super::filter::{FilterCriteria, FilterError};
use super::on_failure;
use super::options::PollOptions;
use super::reader::{BatchRules, ShardReader};
use super::source::{Position, ShardInfo, ShardSource, SourceError};
use super::stats::TriggerStats;
use crate::invoke::Invoke;
use crate::template::StreamTrigger;

/// How often the stream's shards are listed again.
const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

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
pub(super) async fn run<S: ShardSource, I: Invoke>(
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
pub(super) struct Shard {
    pub(super) parent: Option<String>,
    pub(super) start: Position,
    pub(super) state: ShardState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ShardState {
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
pub(super) fn forget_trimmed(shards: &mut BTreeMap<String, Shard>, listed: &[ShardInfo]) {
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
