//! The pool: a [`Function`] counts its instances against `max_instances`, hands an
//! invocation an idle instance (the most recently used) or the right to start one, queues
//! it otherwise (first come, first served, bounded by Lambda's throttling error), and keeps
//! or discards the instance after the outcome. Each invocation runs in its own task. An
//! invocation that asked for a log tail keeps its instance until the tail is complete
//! (see `tail`), then renders it.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError},
    time::Duration,
};

use axum::body::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use super::config::FunctionConfig;
use super::instance::{self, Instance};
use super::job::{Job, Outcome, Report, StreamSlot, uuid_v4};
use super::shared::{FunctionStats, Shared};
use super::tail::InvocationLog;
use super::task::INIT_TIMEOUT;
use crate::invoke::{
    Invocation, Invoke, InvokeError, InvokeOptions, Invoked, Whole, WholeInvocation,
};
use crate::metrics::Registry;

/// How many instances one invocation tries before giving up (instances that died while
/// idle are found out only when they are given a job).
const MAX_ATTEMPTS: usize = 4;
/// How Lambda words a throttled invocation; the start of the [`InvokeError::Unavailable`]
/// message of an invocation that waited too long for an instance.
const THROTTLED: &str = "TooManyRequestsException: Rate Exceeded.";

/// A function: a pool of instances of one binary. Clones share the pool.
#[derive(Clone)]
pub struct Function {
    inner: Arc<Inner>,
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
        let queue_limit = INIT_TIMEOUT.saturating_add(config.timeout);
        Self::with_queue_limit(config, queue_limit)
    }

    /// A function whose invocations wait at most `queue_limit` for an instance.
    pub(super) fn with_queue_limit(config: FunctionConfig, queue_limit: Duration) -> Self {
        let arn = crate::invoke::local_function_arn(&config.name);
        let shared = Arc::new(Shared {
            config,
            arn: arn.into(),
            record: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: OnceLock::new(),
        });
        Self {
            inner: Arc::new(Inner {
                shared,
                pool: Mutex::default(),
                queue_limit,
            }),
        }
    }

    /// Hands the EMF documents its instances print on stdout to `registry` rather than to
    /// the log (see [`crate::metrics`]); the first registry given stays.
    pub fn with_metrics(self, registry: Arc<Registry>) -> Self {
        let _ = self.inner.shared.metrics.set(registry);
        self
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
        self.inner.shared.snapshot()
    }

    /// Process ids of the instances that exist now, oldest first.
    pub fn pids(&self) -> Vec<u32> {
        self.inner.shared.pids()
    }

    /// How many invocations wait for an instance.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.inner.pool().waiters.len()
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
                .spawn(inner.invoke(event, None, InvokeOptions::default()))
                .await
                .map_or_else(aborted, |invocation| invocation.result)
        }
    }

    fn invoke_streaming(
        &self,
        event: Value,
    ) -> impl Future<Output = Result<Invoked, InvokeError>> + Send {
        let inner = self.inner.clone();
        async move {
            let (head, invocation) = inner.spawn_taking_stream(event, InvokeOptions::default());
            // The stream, as soon as it starts (the invocation runs on in its task); or,
            // when no stream came, the whole response.
            match head.await {
                Ok(head) => Ok(Invoked::Stream(head)),
                Err(_) => invocation
                    .await
                    .map_or_else(aborted, |invocation| invocation.result)
                    .map(Invoked::Response),
            }
        }
    }

    fn invoke_whole(
        &self,
        event: Value,
        options: InvokeOptions,
        limit: usize,
    ) -> impl Future<Output = WholeInvocation> + Send {
        let inner = self.inner.clone();
        async move {
            let (head, invocation) = inner.spawn_taking_stream(event, options);
            let gathered = match head.await {
                Ok(head) => Some(super::stream::gather(head, limit).await),
                Err(_) => None,
            };
            // After the stream: a timeout or crash mid-stream is the invocation's error.
            let Invocation { result, log_tail } =
                invocation.await.unwrap_or_else(|error| Invocation {
                    result: aborted(error),
                    log_tail: None,
                });
            let result = match (result, gathered) {
                (Err(error), _) | (Ok(_), Some(Err(error))) => Err(error),
                (Ok(_), Some(Ok(streamed))) => Ok(Whole::Streamed(streamed)),
                (Ok(response), None) => Ok(Whole::Json(response)),
            };
            WholeInvocation { result, log_tail }
        }
    }

    fn invoke_with(
        &self,
        event: Value,
        options: InvokeOptions,
    ) -> impl Future<Output = Invocation> + Send {
        let inner = self.inner.clone();
        async move {
            let tasks = inner.shared.tasks.clone();
            tasks
                .spawn(inner.invoke(event, None, options))
                .await
                .unwrap_or_else(|error| Invocation {
                    result: aborted(error),
                    log_tail: None,
                })
        }
    }
}

fn aborted<T>(error: tokio::task::JoinError) -> Result<T, InvokeError> {
    Err(InvokeError::Unavailable(format!(
        "the invocation was aborted: {error}"
    )))
}

impl Inner {
    /// Runs the invocation in its own task with a slot for a streamed response: the
    /// stream's head arrives on the receiver as soon as it starts (the sender is dropped
    /// when the function answers whole); the task gives the invocation's outcome.
    fn spawn_taking_stream(
        self: Arc<Self>,
        event: Value,
        options: InvokeOptions,
    ) -> (
        oneshot::Receiver<crate::invoke::StreamHead>,
        tokio::task::JoinHandle<Invocation>,
    ) {
        let (taker, head) = oneshot::channel();
        let slot: StreamSlot = Arc::new(Mutex::new(Some(taker)));
        let tasks = self.shared.tasks.clone();
        (head, tasks.spawn(self.invoke(event, Some(slot), options)))
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn name(&self) -> &str {
        &self.shared.config.name
    }

    async fn invoke(
        self: Arc<Self>,
        event: Value,
        stream: Option<StreamSlot>,
        options: InvokeOptions,
    ) -> Invocation {
        let request_id = options.request_id.unwrap_or_else(uuid_v4);
        let log = options.tail.then(|| Arc::new(InvocationLog::default()));
        self.shared.record(|stats| stats.invocations += 1);
        let report = match serde_json::to_vec(&event) {
            Ok(event) => {
                let event = Bytes::from(event);
                self.run(&request_id, event, stream, log.clone()).await
            }
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
        // Only an invocation that reached a process has a log.
        let log_tail = log.filter(|_| instance.is_some()).map(|log| {
            let memory_mb = self.shared.config.memory_mb;
            log.tail(&request_id, &result, duration, memory_mb)
        });
        Invocation { result, log_tail }
    }

    /// Runs the job on an instance, retrying on another one when an instance turns out to
    /// have died while idle. With a `log`, the instance goes back to the pool only once
    /// the log has every line written before the outcome (see `tail`).
    async fn run(
        &self,
        request_id: &str,
        event: Bytes,
        stream: Option<StreamSlot>,
        log: Option<Arc<InvocationLog>>,
    ) -> Result<Report, InvokeError> {
        for _ in 0..MAX_ATTEMPTS {
            let (reply, outcome) = oneshot::channel();
            let job = Job {
                request_id: request_id.to_owned(),
                event: event.clone(),
                reply,
                stream: stream.clone(),
                log: log.clone(),
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
                    if log.is_some() {
                        instance.output().settle().await;
                        instance.output().collect_into(None);
                    }
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
