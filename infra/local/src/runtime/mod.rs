//! A local Lambda: runs a function's binary as real processes that speak the Lambda
//! Runtime API (2018-06-01), with a pool of instances per function.
//!
//! # Design
//!
//! **One Runtime API listener per instance.** In Lambda every execution environment has its
//! own Runtime API endpoint, and the API itself never says which environment is calling.
//! Giving each instance its own listener on `127.0.0.1:<ephemeral port>` keeps that
//! property: a `next` on a port means "this instance is free", a response on it can only
//! come from the process that was handed the event, and a dead process takes its
//! connections with it. No routing table, no instance ids in URLs, and the function's
//! unmodified `lambda_runtime` client works as it does in AWS. A port per instance is cheap.
//!
//! **One task per instance** (module `instance`) owns the process and the listener's requests and
//! runs the instance's life as a state machine (init, idle, invoked, gone). It is the only
//! place where anything about that instance is decided; it hears everything — the process's
//! requests, a new job, the process's exit, the deadline, shutdown — through one `select!`.
//!
//! **The pool** ([`Function`]) counts the instances that exist against `max_instances`.
//! An invocation takes an idle instance (the most recently used, as Lambda tends to), or
//! the right to start a new one if the limit allows, or else queues. Whoever releases an instance — or the slot of a discarded one — hands it
//! straight to the first waiter, so the queue is FIFO and nobody is woken for nothing.
//! Lambda throttles at once where this queues; the queue is bounded instead: an
//! invocation that waits longer than one instance can hold a job (Lambda's init limit plus
//! the function's timeout) fails with Lambda's throttling error
//! (`TooManyRequestsException: Rate Exceeded.`, as [`InvokeError::Unavailable`], which the
//! stream trigger retries like a throttle).
//! Instances stay warm after a response or a handler error, and are discarded after a
//! timeout, a crash or a failed init. Idle instances are not reaped: they live until
//! shutdown, and `max_instances` bounds them.
//!
//! **Each invocation runs in its own task**, so an invocation whose caller stops waiting
//! still runs to its end (as in Lambda) and gives its instance back; a dropped future can
//! never leak a slot of the pool.
//!
//! **Processes** (module `spawn`) get a cleared environment with Lambda's variables, and can
//! never outlive the gateway: killed on every way out, `kill_on_drop`, and on Linux
//! `PR_SET_PDEATHSIG`. Their stdout and stderr are forwarded line by line to `tracing`
//! (info and warn), with the function and instance as fields.
//!
//! Not modelled: memory limits (`memory_mb` is only reported to the function), response
//! streaming (answered with a `Runtime.StreamingNotSupported` error), SnapStart. The
//! init phase has Lambda's 10 s limit, separate from the function's timeout, which starts
//! when a warm instance accepts the invocation, or when a new instance's process fetches
//! it: a runtime that never asks for its next event cannot hold an invocation past it.

mod api;
mod instance;
mod spawn;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    future::Future,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use self::instance::{Instance, Job, Outcome, Report};
use crate::invoke::{Invoke, InvokeError};

/// How many init durations [`FunctionStats`] keeps (the most recent ones).
const MAX_INIT_SAMPLES: usize = 1024;
/// How many invocations [`FunctionStats::invocation_log`] keeps (the most recent ones).
const MAX_LOGGED_INVOCATIONS: usize = 4096;
/// How many instances one invocation tries before giving up (instances that died while
/// idle are found out only when they are given a job).
const MAX_ATTEMPTS: usize = 4;
/// How Lambda words a throttled invocation; the start of the [`InvokeError::Unavailable`]
/// message of an invocation that waited too long for an instance.
const THROTTLED: &str = "TooManyRequestsException: Rate Exceeded.";

/// How to run a function: its binary, environment and limits.
#[derive(Clone, Debug)]
pub struct FunctionConfig {
    /// The template's logical id, e.g. `MessageFunction`; in logs, the ARN and
    /// `AWS_LAMBDA_FUNCTION_NAME`.
    pub name: String,
    /// The function's executable, e.g. `target/debug/message`.
    pub binary: PathBuf,
    /// The function's environment, already resolved.
    pub env: BTreeMap<String, String>,
    /// How long one invocation may run: from the moment a warm instance accepts it, or a
    /// new instance's process fetches it.
    pub timeout: Duration,
    /// Reported to the function as `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`; not enforced.
    pub memory_mb: u64,
    /// How many instances may exist at once, like reserved concurrency (at least 1).
    pub max_instances: usize,
    /// Fault injection; none by default.
    pub faults: FunctionFaults,
}

/// Faults to inject into a function's invocations.
#[derive(Clone, Debug, Default)]
pub struct FunctionFaults {
    /// Probability (0 to 1) that an instance is killed right after it fetched an event.
    pub crash_rate: f64,
}

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

/// A function: a pool of instances of one binary. Clones share the pool.
#[derive(Clone)]
pub struct Function {
    inner: Arc<Inner>,
}

/// What the pool and its instances share. Instances hold this, never the pool, so an
/// instance cannot keep its function alive.
struct Shared {
    config: FunctionConfig,
    arn: Arc<str>,
    record: Mutex<Record>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// What [`Function::stats`] reports, kept in the shapes that are cheap to update.
#[derive(Default)]
struct Record {
    /// Counters and init durations; `pids` and `invocation_log` are filled in snapshots.
    stats: FunctionStats,
    /// Live instances: instance number to process id.
    pids: BTreeMap<u64, u32>,
    /// See [`FunctionStats::invocation_log`].
    invocations: VecDeque<(SystemTime, Duration)>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, update: impl FnOnce(&mut FunctionStats)) {
        update(&mut self.lock().stats);
    }

    fn record_init(&self, init: Duration) {
        self.record(|stats| {
            if stats.init_durations.len() >= MAX_INIT_SAMPLES {
                stats.init_durations.remove(0);
            }
            stats.init_durations.push(init);
        });
    }

    /// Instance `instance` runs as process `pid`, or (`None`) is gone.
    fn record_pid(&self, instance: u64, pid: Option<u32>) {
        let mut record = self.lock();
        match pid {
            Some(pid) => record.pids.insert(instance, pid),
            None => record.pids.remove(&instance),
        };
    }

    /// An invocation that the process fetched at `started` ended after `duration`.
    fn record_invocation(&self, started: SystemTime, duration: Duration) {
        let mut record = self.lock();
        if record.invocations.len() >= MAX_LOGGED_INVOCATIONS {
            record.invocations.pop_front();
        }
        record.invocations.push_back((started, duration));
    }
}

struct Inner {
    shared: Arc<Shared>,
    pool: Mutex<Pool>,
    /// How long an invocation may wait for an instance before it is throttled.
    queue_limit: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Without a `shutdown`, instances still stop when the last handle goes.
        self.shared.shutdown.cancel();
    }
}

#[derive(Default)]
struct Pool {
    /// Free instances, most recently used last.
    idle: Vec<Instance>,
    /// Instances that exist or are being started (idle, busy or starting).
    live: usize,
    /// Invocations waiting for an instance, first come first served.
    waiters: VecDeque<oneshot::Sender<Slot>>,
    /// Number of the next instance.
    next_instance: u64,
    closed: bool,
}

/// What an invocation gets from the pool.
enum Slot {
    /// An idle instance.
    Warm(Instance),
    /// The right to start an instance (already counted in `live`).
    Cold,
}

impl Function {
    /// A function with no instance yet; instances start on demand.
    pub fn new(config: FunctionConfig) -> Self {
        let queue_limit = instance::INIT_TIMEOUT.saturating_add(config.timeout);
        Self::with_queue_limit(config, queue_limit)
    }

    /// A function whose invocations wait at most `queue_limit` for an instance.
    fn with_queue_limit(config: FunctionConfig, queue_limit: Duration) -> Self {
        let arn = format!(
            "arn:aws:lambda:us-east-1:000000000000:function:{}",
            config.name
        );
        let shared = Arc::new(Shared {
            config,
            arn: arn.into(),
            record: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        Self {
            inner: Arc::new(Inner {
                shared,
                pool: Mutex::default(),
                queue_limit,
            }),
        }
    }

    /// The function's name (the template's logical id).
    pub fn name(&self) -> &str {
        &self.inner.shared.config.name
    }

    /// Kills every instance and waits until they are gone; invocations in progress or
    /// queued, and all later ones, fail with [`InvokeError::Unavailable`].
    pub async fn shutdown(&self) {
        let (idle, waiters) = {
            let mut pool = self.inner.pool();
            pool.closed = true;
            (
                std::mem::take(&mut pool.idle),
                std::mem::take(&mut pool.waiters),
            )
        };
        drop((idle, waiters));
        let shared = &self.inner.shared;
        shared.shutdown.cancel();
        shared.tasks.close();
        shared.tasks.wait().await;
    }

    /// A snapshot of the function's counters.
    pub fn stats(&self) -> FunctionStats {
        let record = self.inner.shared.lock();
        FunctionStats {
            pids: record.pids.values().copied().collect(),
            invocation_log: record.invocations.iter().copied().collect(),
            ..record.stats.clone()
        }
    }

    /// Process ids of the instances that exist now, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        self.inner.shared.lock().pids.values().copied().collect()
    }
}

impl fmt::Debug for Function {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Function")
            .field("name", &self.name())
            .finish_non_exhaustive()
    }
}

impl Invoke for Function {
    fn invoke(&self, event: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send {
        let inner = self.inner.clone();
        async move {
            let tasks = inner.shared.tasks.clone();
            tasks
                .spawn(inner.invoke(event))
                .await
                .unwrap_or_else(|error| {
                    Err(InvokeError::Unavailable(format!(
                        "the invocation was aborted: {error}"
                    )))
                })
        }
    }
}

impl Inner {
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn name(&self) -> &str {
        &self.shared.config.name
    }

    async fn invoke(self: Arc<Self>, event: Value) -> Result<Value, InvokeError> {
        let request_id = uuid_v4();
        self.shared.record(|stats| stats.invocations += 1);
        let report = match serde_json::to_vec(&event) {
            Ok(event) => self.run(&request_id, Bytes::from(event)).await,
            Err(error) => Err(InvokeError::Unavailable(format!(
                "the event cannot be serialised: {error}"
            ))),
        };
        let (result, instance, duration) = match report {
            Ok(report) => (report.result, Some(report.instance), report.duration),
            Err(error) => (Err(error), None, Duration::ZERO),
        };
        self.shared.record(|stats| match &result {
            Err(InvokeError::Function { .. } | InvokeError::Init { .. }) => stats.errors += 1,
            Err(InvokeError::Timeout(_)) => stats.timeouts += 1,
            Err(InvokeError::Crashed(_)) => stats.crashes += 1,
            Err(InvokeError::Unavailable(message)) if message.starts_with(THROTTLED) => {
                stats.throttles += 1;
            }
            Ok(_) | Err(InvokeError::Unavailable(_)) => {}
        });
        let duration_ms = duration.as_millis() as u64;
        match &result {
            Ok(_) => {
                info!(function = %self.name(), instance, %request_id, duration_ms, outcome = %"ok", "invocation")
            }
            Err(error) => info!(
                function = %self.name(), instance, %request_id, duration_ms,
                outcome = %outcome(error), %error, "invocation"
            ),
        }
        result
    }

    /// Runs the job on an instance, retrying on another one when an instance turns out to
    /// have died while idle.
    async fn run(&self, request_id: &str, event: Bytes) -> Result<Report, InvokeError> {
        for _ in 0..MAX_ATTEMPTS {
            let (reply, outcome) = oneshot::channel();
            let job = Job {
                request_id: request_id.to_owned(),
                event: event.clone(),
                reply,
            };
            let instance = match self.acquire().await? {
                Slot::Warm(instance) => match instance.submit(job).await {
                    Ok(()) => instance,
                    Err(_) => {
                        self.release(Slot::Cold);
                        continue;
                    }
                },
                // A new instance starts with its job, as in Lambda: it cannot be lost to
                // a process that dies before the job is handed over.
                Slot::Cold => {
                    let id = {
                        let mut pool = self.pool();
                        pool.next_instance += 1;
                        pool.next_instance
                    };
                    match instance::start(&self.shared, id, job).await {
                        Ok(instance) => instance,
                        Err(error) => {
                            self.release(Slot::Cold);
                            warn!(function = %self.name(), %error, "cannot start an instance");
                            return Err(InvokeError::Unavailable(error.to_string()));
                        }
                    }
                }
            };
            match outcome.await {
                Ok(Outcome::Done(report)) => {
                    self.release(if report.reusable {
                        Slot::Warm(instance)
                    } else {
                        Slot::Cold
                    });
                    return Ok(report);
                }
                Ok(Outcome::NotAccepted) | Err(_) => self.release(Slot::Cold),
            }
        }
        Err(InvokeError::Unavailable(format!(
            "no instance took the invocation after {MAX_ATTEMPTS} attempts"
        )))
    }

    /// An idle instance, the right to start one, or a place in the queue for at most
    /// `queue_limit` (then the invocation is throttled).
    async fn acquire(&self) -> Result<Slot, InvokeError> {
        let stopped = || InvokeError::Unavailable(format!("{} was shut down", self.name()));
        let mut waiter = {
            let mut pool = self.pool();
            if pool.closed {
                return Err(stopped());
            }
            while let Some(instance) = pool.idle.pop() {
                if instance.is_alive() {
                    return Ok(Slot::Warm(instance));
                }
                pool.live = pool.live.saturating_sub(1);
            }
            if pool.live < self.shared.config.max_instances.max(1) {
                pool.live += 1;
                return Ok(Slot::Cold);
            }
            let (waiter, slot) = oneshot::channel();
            pool.waiters.push_back(waiter);
            slot
        };
        if let Ok(slot) = tokio::time::timeout(self.queue_limit, &mut waiter).await {
            return slot.map_err(|_| stopped());
        }
        // `release` hands slots out under the pool's lock: holding it, a slot either has
        // arrived or never will, since the closed receiver makes `release` pass it on.
        let mut pool = self.pool();
        waiter.close();
        if let Ok(slot) = waiter.try_recv() {
            return Ok(slot);
        }
        pool.waiters.retain(|waiter| !waiter.is_closed());
        let queued = pool.waiters.len();
        drop(pool);
        warn!(
            function = %self.name(),
            waited_ms = self.queue_limit.as_millis() as u64,
            max_instances = self.shared.config.max_instances,
            queued,
            "invocation throttled: no instance became free"
        );
        Err(InvokeError::Unavailable(format!(
            "{THROTTLED} No instance of {} became free within {:.1} s (max_instances {}).",
            self.name(),
            self.queue_limit.as_secs_f64(),
            self.shared.config.max_instances.max(1)
        )))
    }

    /// Gives an instance (or the slot of a discarded one) to the first waiter, or back to
    /// the pool.
    fn release(&self, mut slot: Slot) {
        let mut pool = self.pool();
        if pool.closed {
            // A warm instance is dropped here and stops itself.
            return;
        }
        while let Some(waiter) = pool.waiters.pop_front() {
            match waiter.send(slot) {
                Ok(()) => return,
                Err(unclaimed) => slot = unclaimed,
            }
        }
        match slot {
            Slot::Warm(instance) => pool.idle.push(instance),
            Slot::Cold => pool.live = pool.live.saturating_sub(1),
        }
    }
}

fn outcome(error: &InvokeError) -> &'static str {
    match error {
        InvokeError::Function { .. } => "function_error",
        InvokeError::Init { .. } => "init_error",
        InvokeError::Timeout(_) => "timeout",
        InvokeError::Crashed(_) => "crashed",
        InvokeError::Unavailable(message) if message.starts_with(THROTTLED) => "throttled",
        InvokeError::Unavailable(_) => "unavailable",
    }
}

/// A random UUID (version 4), the form of Lambda's request ids; also used by the stream
/// trigger's on-failure records.
pub(crate) fn uuid_v4() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}
