//! What a trigger has done, as counters the stack, the benchmark and the tests read. The
//! reader and the delivery bump them; clones share one set, so a caller keeps a clone to
//! read while the trigger runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
