//! The task that owns one instance: a small state machine — initialising, idle, an event
//! waiting for the process's `next`, an event being handled — and the only place where
//! anything about the instance is decided. Everything reaches it through one `select!`: a
//! request of the process, a job from the pool, the process's exit, the deadline, the
//! function's shutdown. When it ends, the process is killed and reaped and every job it
//! held has been answered.

use std::{
    io,
    process::ExitStatus,
    sync::{Arc, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;
use tokio::{
    process::Child,
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use super::api::{Answered, ApiCall, Delivery, FunctionError, Reply};
use super::job::{Job, Outcome, Report};
use super::shared::Shared;
use crate::invoke::{InvokeError, StreamHead};

/// How long a new process may take to ask for its first event (Lambda's init limit).
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait, after an exit, for the last stderr line to be read.
const STDERR_TAIL_WAIT: Duration = Duration::from_millis(500);

/// An accepted job whose event the process has not fetched yet.
pub(super) struct Pending {
    pub(super) job: Job,
    pub(super) accepted_at: Instant,
    /// When the invocation times out, if its clock has started: an initialised instance
    /// accepted it, so the process owes a `next` and the time it takes counts.
    pub(super) deadline: Option<Instant>,
}

/// A job whose event the process has fetched.
pub(super) struct Running {
    job: Job,
    delivered_at: Instant,
    /// `delivered_at` on the wall clock, for [`FunctionStats::invocation_log`].
    ///
    /// [`FunctionStats::invocation_log`]: super::FunctionStats::invocation_log
    delivered_wall: SystemTime,
    deadline: Instant,
    /// Fault injection killed the process; its answers no longer count.
    doomed: bool,
    /// The response is being streamed: the invocation ends with the stream.
    streaming: bool,
}

/// Why the task's loop ended.
enum End {
    /// The process exited (or waiting for it failed).
    Exited(io::Result<ExitStatus>),
    /// The runtime reported `/init/error`.
    InitFailed,
    /// The invocation passed its deadline, running or waiting for the process's `next`.
    Timeout,
    /// The process did not ask for an event within [`INIT_TIMEOUT`].
    InitTimeout,
    /// The function is shutting down.
    Shutdown,
    /// The pool dropped the instance while it was idle.
    Discarded,
}

pub(super) struct Task {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    pub(super) child: Child,
    /// The process's id, which is also its process group's (see [`spawn`]); kept because
    /// `child` forgets it once the process is reaped.
    pub(super) pid: Option<u32>,
    pub(super) calls: mpsc::Receiver<ApiCall>,
    pub(super) jobs: mpsc::Receiver<Job>,
    pub(super) server: JoinHandle<()>,
    pub(super) stderr: Option<JoinHandle<Option<String>>>,
    pub(super) spawned_at: Instant,
    pub(super) initialized: bool,
    pub(super) init_error: Option<FunctionError>,
    /// A `next` waiting for an event.
    pub(super) parked: Option<oneshot::Sender<Delivery>>,
    pub(super) pending: Option<Pending>,
    pub(super) running: Option<Running>,
}

impl Task {
    pub(super) async fn run(mut self) {
        let end = loop {
            let deadline = self.deadline();
            let idle = self.pending.is_none() && self.running.is_none();
            tokio::select! {
                status = self.child.wait() => break End::Exited(status),
                Some(call) = self.calls.recv() => {
                    if let Some(end) = self.on_call(call) {
                        break end;
                    }
                }
                job = self.jobs.recv(), if idle => match job {
                    Some(job) => self.accept(job),
                    None => break End::Discarded,
                },
                () = sleep_until(deadline) => {
                    break if self.initialized { End::Timeout } else { End::InitTimeout };
                }
                () = self.shared.shutdown.cancelled() => break End::Shutdown,
            }
        };
        self.finish(end).await;
    }

    fn deadline(&self) -> Option<Instant> {
        match (&self.running, &self.pending) {
            (Some(running), _) => Some(running.deadline),
            (None, _) if !self.initialized => Some(self.spawned_at + INIT_TIMEOUT),
            (None, Some(pending)) => pending.deadline,
            (None, None) => None,
        }
    }

    fn on_call(&mut self, call: ApiCall) -> Option<End> {
        match call {
            ApiCall::Next { reply } => {
                if !self.initialized {
                    self.initialized = true;
                    let init = self.spawned_at.elapsed();
                    info!(
                        function = %self.shared.config.name,
                        instance = self.id,
                        init_ms = init.as_millis() as u64,
                        "instance initialised"
                    );
                    self.shared.record_init(init);
                }
                // A second `next` replaces the first, whose HTTP request then fails: the
                // local stack gives each instance one invocation at a time.
                self.parked = Some(reply);
                self.deliver();
                None
            }
            ApiCall::Answer {
                request_id,
                answer,
                reply,
            } => {
                let expected = self
                    .running
                    .as_ref()
                    .is_some_and(|running| running.job.request_id == request_id && !running.doomed);
                let expected = expected && !self.running.as_ref().is_some_and(|r| r.streaming);
                match self.running.take() {
                    Some(mut running) if expected => match answer {
                        Ok(Answered::Stream(head)) => {
                            if self.start_stream(&mut running, head, reply) {
                                self.running = Some(running);
                            } else {
                                let refused = InvokeError::Function {
                                    error_type: "Runtime.StreamingNotSupported".to_owned(),
                                    error_message: "the function streamed its response to a caller that takes whole responses (invoke it with InvokeWithResponseStream)".to_owned(),
                                };
                                self.settle_running(running, Err(refused), true);
                            }
                        }
                        answer => {
                            drop(reply.send(Reply::accepted()));
                            let result = match answer {
                                Ok(Answered::Json(value)) => Ok(value),
                                Ok(Answered::Stream(_)) => unreachable!("matched above"),
                                Err(error) => Err(InvokeError::Function {
                                    error_type: error.error_type,
                                    error_message: error.error_message,
                                }),
                            };
                            self.settle_running(running, result, true);
                        }
                    },
                    running => {
                        self.running = running;
                        drop(reply.send(Reply::invalid_request_id(&request_id)));
                    }
                }
                None
            }
            ApiCall::StreamEnded { request_id, reply } => {
                match self.running.take() {
                    Some(running) if running.streaming && running.job.request_id == request_id => {
                        drop(reply.send(Reply::accepted()));
                        self.settle_running(running, Ok(Value::Null), true);
                    }
                    running => {
                        self.running = running;
                        drop(reply.send(Reply::invalid_request_id(&request_id)));
                    }
                }
                None
            }
            ApiCall::InitError { error, reply } => {
                if self.initialized {
                    drop(reply.send(Reply::invalid_state(
                        "init/error after the runtime asked for an event",
                    )));
                    return None;
                }
                drop(reply.send(Reply::accepted()));
                self.init_error = Some(error);
                Some(End::InitFailed)
            }
        }
    }

    fn accept(&mut self, job: Job) {
        let accepted_at = Instant::now();
        self.pending = Some(Pending {
            job,
            accepted_at,
            // A runtime that hangs instead of asking for its next event cannot hold the
            // invocation for ever: the function's timeout runs from here.
            deadline: self
                .initialized
                .then(|| accepted_at + self.shared.config.timeout),
        });
        self.deliver();
    }

    /// Hands the pending event to the parked `next`, if there are both.
    fn deliver(&mut self) {
        if self.pending.is_none() || self.parked.is_none() {
            return;
        }
        let (Some(pending), Some(parked)) = (self.pending.take(), self.parked.take()) else {
            return;
        };
        let now = Instant::now();
        let delivered_wall = SystemTime::now();
        let deadline = pending.deadline.unwrap_or(now + self.shared.config.timeout);
        let deadline_ms = (delivered_wall + deadline.saturating_duration_since(now))
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            });
        let delivery = Delivery {
            request_id: pending.job.request_id.clone(),
            deadline_ms,
            trace_id: trace_id(),
            body: pending.job.event.clone(),
        };
        if parked.send(delivery).is_err() {
            // The `next` request went away (its connection closed): wait for another.
            self.pending = Some(pending);
            return;
        }
        let crash_rate = self.shared.config.faults.crash_rate;
        let doomed = crash_rate > 0.0 && rand::random::<f64>() < crash_rate;
        if doomed {
            warn!(
                function = %self.shared.config.name,
                instance = self.id,
                request_id = %pending.job.request_id,
                "fault injection: killing the instance mid-invocation"
            );
            if let Err(error) = self.child.start_kill() {
                warn!(function = %self.shared.config.name, instance = self.id, %error, "cannot kill the instance");
            }
        }
        self.running = Some(Running {
            job: pending.job,
            delivered_at: now,
            delivered_wall,
            deadline,
            doomed,
            streaming: false,
        });
    }

    /// Hands a streamed response to the caller that takes streams; the invocation runs
    /// on (its deadline still counts) until the stream ends. Returns false, refusing the
    /// stream, when the caller takes whole responses only.
    fn start_stream(
        &self,
        running: &mut Running,
        head: StreamHead,
        reply: oneshot::Sender<Reply>,
    ) -> bool {
        let taker = running
            .job
            .stream
            .as_ref()
            .and_then(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner).take());
        match taker {
            Some(taker) => {
                drop(taker.send(head));
                running.streaming = true;
                drop(reply.send(Reply::accepted()));
                true
            }
            None => {
                drop(reply.send(Reply::invalid_state(
                    "this invocation takes a whole response, not a stream",
                )));
                false
            }
        }
    }

    /// Settles the invocation the process fetched, and logs it.
    fn settle_running(&self, running: Running, result: Result<Value, InvokeError>, reusable: bool) {
        self.shared
            .record_invocation(running.delivered_wall, running.delivered_at.elapsed());
        self.settle(running.job, running.delivered_at, result, reusable);
    }

    fn settle(&self, job: Job, since: Instant, result: Result<Value, InvokeError>, reusable: bool) {
        let report = Report {
            result,
            reusable,
            duration: since.elapsed(),
            instance: self.id,
        };
        // The invocation's task only goes away when the runtime itself stops.
        drop(job.reply.send(Outcome::Done(report)));
    }

    async fn finish(mut self, end: End) {
        self.jobs.close();
        // Whatever the runtime started goes too. Before the process is reaped its id still
        // names the group; after an exit the group's id stays reserved while any member
        // lives, and killing an empty group fails harmlessly.
        kill_group(self.pid);
        if !matches!(end, End::Exited(_)) {
            // kill() also reaps the process; an error means it is already gone.
            if let Err(error) = self.child.kill().await {
                debug!(function = %self.shared.config.name, instance = self.id, %error, "kill");
            }
        }
        self.server.abort();
        self.shared.record_pid(self.id, None);
        let running = self.running.take();
        let pending = self.pending.take();
        match end {
            End::Exited(status) => {
                let status = describe(&status);
                if running.is_none() && pending.is_none() {
                    warn!(function = %self.shared.config.name, instance = self.id, %status, "idle instance exited");
                }
                if let Some(running) = running {
                    let crashed = InvokeError::Crashed(status.clone());
                    self.settle_running(running, Err(crashed), false);
                }
                if let Some(pending) = pending {
                    let error = if self.initialized {
                        InvokeError::Crashed(status)
                    } else if let Some(error) = self.init_error.take() {
                        init_error(error)
                    } else {
                        let message = match self.stderr_tail().await {
                            Some(line) => format!("{status}; stderr: {line}"),
                            None => status,
                        };
                        init_error(FunctionError {
                            error_type: "Runtime.ExitError".to_owned(),
                            error_message: message,
                        })
                    };
                    self.settle(pending.job, pending.accepted_at, Err(error), false);
                }
            }
            End::InitFailed | End::InitTimeout => {
                let error = self.init_error.take().unwrap_or_else(|| FunctionError {
                    error_type: "Runtime.InitTimeout".to_owned(),
                    error_message: format!(
                        "the runtime did not ask for an event within {} s",
                        INIT_TIMEOUT.as_secs()
                    ),
                });
                if let Some(pending) = pending {
                    self.settle(
                        pending.job,
                        pending.accepted_at,
                        Err(init_error(error)),
                        false,
                    );
                }
            }
            End::Timeout => {
                let timeout = || InvokeError::Timeout(self.shared.config.timeout);
                if let Some(running) = running {
                    self.settle_running(running, Err(timeout()), false);
                }
                if let Some(pending) = pending {
                    warn!(
                        function = %self.shared.config.name,
                        instance = self.id,
                        request_id = %pending.job.request_id,
                        "the runtime did not ask for its next event within the function's timeout"
                    );
                    self.settle(pending.job, pending.accepted_at, Err(timeout()), false);
                }
            }
            End::Shutdown | End::Discarded => {
                let stopped = || InvokeError::Unavailable("the function was shut down".to_owned());
                if let Some(running) = running {
                    self.settle_running(running, Err(stopped()), false);
                }
                if let Some(pending) = pending {
                    self.settle(pending.job, pending.accepted_at, Err(stopped()), false);
                }
            }
        }
        // Jobs sent while the instance was ending: the pool gives them to another.
        while let Ok(job) = self.jobs.try_recv() {
            drop(job.reply.send(Outcome::NotAccepted));
        }
        debug!(function = %self.shared.config.name, instance = self.id, "instance stopped");
    }

    /// The last line the process wrote to stderr, once the pipe is closed.
    async fn stderr_tail(&mut self) -> Option<String> {
        let stderr = self.stderr.as_mut()?;
        match tokio::time::timeout(STDERR_TAIL_WAIT, stderr).await {
            Ok(Ok(line)) => line,
            _ => None,
        }
    }
}

fn init_error(error: FunctionError) -> InvokeError {
    InvokeError::Init {
        error_type: error.error_type,
        error_message: error.error_message,
    }
}

/// `exit status: N` or `signal: N`, as Lambda words a runtime's exit.
fn describe(status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => {
            if let Some(code) = status.code() {
                return format!("exit status: {code}");
            }
            #[cfg(unix)]
            if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(status) {
                return format!("signal: {signal}");
            }
            status.to_string()
        }
        Err(error) => format!("cannot wait for the process: {error}"),
    }
}

/// Sends `SIGKILL` to the process group `pid` leads (on Linux every instance leads its
/// own, see [`spawn`]); elsewhere instances share the gateway's group and only the process
/// itself is killed, by the caller.
#[cfg(target_os = "linux")]
fn kill_group(pid: Option<u32>) {
    let Some(group) = pid.and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
        return;
    };
    if group <= 1 {
        return;
    }
    // SAFETY: killpg has no memory-safety preconditions; the group is one this gateway
    // created, and a group that no longer exists makes it fail with ESRCH.
    unsafe {
        libc::killpg(group, libc::SIGKILL);
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_group(_pid: Option<u32>) {}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// An X-Ray style trace header: `Root=1-<epoch seconds>-<96 random bits>;Sampled=0`.
fn trace_id() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let random = rand::random::<u128>() >> 32;
    format!(
        "Root=1-{seconds:08x}-{random:024x};Parent={:016x};Sampled=0",
        rand::random::<u64>()
    )
}
