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
//! - `reader`: shard iterators, batching window, filtering (see [`filter`]).
//! - `record`: a stream record in the shape the function receives.
//! - `delivery`: invoking, partial batch responses, retries, bisecting, giving up.
//! - `on_failure`: the on-failure destination message, one JSON line per discard.
//! - `replay`: reading a discarded range back from the stream as the event the trigger
//!   sent (what `redrive` replays).
//!
//! - `trigger`: the loop that lists shards and starts their readers; settings checks.
//! - `filter`: Lambda event filtering (`FilterCriteria` patterns).
//! - `options`: the local stack's polling settings ([`PollOptions`]).
//! - `stats`: the trigger's counters ([`TriggerStats`]).
//!
//! Shutdown drops everything in flight, including an invocation, at its next await.

mod delivery;
pub mod filter;
pub(crate) mod on_failure;
mod options;
mod reader;
mod record;
mod replay;
mod source;
mod stats;
#[cfg(test)]
mod tests;
mod trigger;

pub use options::PollOptions;
pub use replay::{RecordRange, Replay, ReplayError, read_range};
pub use stats::{TriggerCounts, TriggerStats};
#[cfg(test)]
use trigger::{Shard, ShardState, forget_trimmed, run};
pub use trigger::{StreamError, run_trigger, run_trigger_with_stats};
