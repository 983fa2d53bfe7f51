//! What a function's pool and its instances share: the configuration, the counters behind
//! [`FunctionStats`], the shutdown token and the task tracker. Instances hold this, never
//! the pool, so an instance cannot keep its function alive.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::{Duration, SystemTime},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::config::FunctionConfig;
use crate::metrics::{FunctionFigures, Registry};

/// How many init durations [`FunctionStats`] keeps (the most recent ones).
const MAX_INIT_SAMPLES: usize = 1024;
/// How many invocations [`FunctionStats::invocation_log`] keeps (the most recent ones).
const MAX_LOGGED_INVOCATIONS: usize = 4096;

/// What a function has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FunctionStats {
    /// Processes started.
    pub instances_started: u64,
    /// Invocations asked for (including those that never ran).
    pub invocations: u64,
    /// Invocations that ended in a handler error or an init error.
    pub errors: u64,
    /// Invocations stopped at their timeout.
    pub timeouts: u64,
    /// Invocations whose process exited or was killed before answering.
    pub crashes: u64,
    /// Invocations that waited for an instance longer than the queue allows, and failed
    /// with Lambda's throttling error.
    pub throttles: u64,
    /// Init durations (spawn to first `next`) of the most recent instances, oldest first.
    pub init_durations: Vec<Duration>,
    /// Process ids of the instances that exist now (idle, busy or starting), oldest first.
    pub pids: Vec<u32>,
    /// The most recent invocations that reached a process: when the process fetched the
    /// event (wall clock) and how long it took to answer, fail or die, in the order they
    /// ended. Invocations that never reached a process are not listed.
    pub invocation_log: Vec<(SystemTime, Duration)>,
}

impl From<&FunctionStats> for FunctionFigures {
    fn from(stats: &FunctionStats) -> Self {
        Self {
            invocations: stats.invocations,
            errors: stats.errors,
            timeouts: stats.timeouts,
            crashes: stats.crashes,
            throttles: stats.throttles,
        }
    }
}

/// What the pool and its instances share. Instances hold this, never the pool, so an
/// instance cannot keep its function alive.
pub(super) struct Shared {
    pub(super) config: FunctionConfig,
    pub(super) arn: Arc<str>,
    pub(super) record: Mutex<Record>,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    /// Where the instances' EMF lines go ([`Function::with_metrics`]); unset, they are
    /// logged like any other line.
    ///
    /// [`Function::with_metrics`]: super::Function::with_metrics
    pub(super) metrics: OnceLock<Arc<Registry>>,
}

/// What [`Function::stats`] reports, kept in the shapes that are cheap to update.
#[derive(Default)]
pub(super) struct Record {
    /// Counters and init durations; `pids` and `invocation_log` are filled in snapshots.
    stats: FunctionStats,
    /// Live instances: instance number to process id.
    pids: BTreeMap<u64, u32>,
    /// See [`FunctionStats::invocation_log`].
    invocations: VecDeque<(SystemTime, Duration)>,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A snapshot of the counters, with the live instances and the invocation log.
    pub(super) fn snapshot(&self) -> FunctionStats {
        let record = self.lock();
        FunctionStats {
            pids: record.pids.values().copied().collect(),
            invocation_log: record.invocations.iter().copied().collect(),
            ..record.stats.clone()
        }
    }

    /// Process ids of the instances that exist now, oldest first.
    pub(super) fn pids(&self) -> Vec<u32> {
        self.lock().pids.values().copied().collect()
    }

    pub(super) fn record(&self, update: impl FnOnce(&mut FunctionStats)) {
        update(&mut self.lock().stats);
    }

    pub(super) fn record_init(&self, init: Duration) {
        self.record(|stats| {
            if stats.init_durations.len() >= MAX_INIT_SAMPLES {
                stats.init_durations.remove(0);
            }
            stats.init_durations.push(init);
        });
    }

    /// Instance `instance` runs as process `pid`, or (`None`) is gone.
    pub(super) fn record_pid(&self, instance: u64, pid: Option<u32>) {
        let mut record = self.lock();
        match pid {
            Some(pid) => record.pids.insert(instance, pid),
            None => record.pids.remove(&instance),
        };
    }

    /// An invocation that the process fetched at `started` ended after `duration`.
    pub(super) fn record_invocation(&self, started: SystemTime, duration: Duration) {
        let mut record = self.lock();
        if record.invocations.len() >= MAX_LOGGED_INVOCATIONS {
            record.invocations.pop_front();
        }
        record.invocations.push_back((started, duration));
    }
}
