//! One instance of a function: its process, its Runtime API listener, and the task that
//! owns both.
//!
//! The task is a small state machine — initialising, idle, an event waiting for the
//! process's `next`, an event being handled — and the only place where anything about the
//! instance is decided. Everything that can happen to an instance reaches it through one
//! `select!`: a request of the process (through [`api`]), a job from the pool, the
//! process's exit, the deadline, the function's shutdown. When the task ends, the process
//! has been killed and reaped and every job it held has been answered.

use std::{
    collections::BTreeMap,
    io,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::ExitStatus,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::body::Bytes;
use serde_json::Value;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader},
    net::TcpListener,
    process::{Child, Command},
    sync::{mpsc, oneshot},
    task::JoinHandle,
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    Shared,
    api::{self, ApiCall, Delivery, FunctionError, Reply},
    spawn,
};
use crate::invoke::InvokeError;

/// How long a new process may take to ask for its first event (Lambda's init limit).
pub(super) const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer log lines are cut: a process cannot make the gateway buffer without bound.
const MAX_LOG_LINE: usize = 16 * 1024;
/// How long to wait, after an exit, for the last stderr line to be read.
const STDERR_TAIL_WAIT: Duration = Duration::from_millis(500);
/// `AWS_REGION` when the function's environment does not set it.
const DEFAULT_REGION: &str = "us-east-1";

/// Why an instance could not be started.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    /// The binary does not exist (or its path cannot be resolved).
    #[error("cannot find the binary {binary}: {source}")]
    Binary {
        /// The configured path.
        binary: String,
        /// What resolving it said.
        source: io::Error,
    },
    /// No port for the instance's Runtime API.
    #[error("cannot open a Runtime API listener: {0}")]
    Listen(#[source] io::Error),
    /// The process could not be started.
    #[error("cannot start {binary}: {source}")]
    Spawn {
        /// The resolved path.
        binary: String,
        /// What spawning said.
        source: io::Error,
    },
}

/// One invocation, handed from the pool to an instance.
pub(super) struct Job {
    /// The request id the process will see.
    pub(super) request_id: String,
    /// The event, serialised once by the pool.
    pub(super) event: Bytes,
    /// Where the outcome goes.
    pub(super) reply: oneshot::Sender<Outcome>,
}

/// What became of a [`Job`].
pub(super) enum Outcome {
    /// The instance was gone before it took the job; the pool tries another.
    NotAccepted,
    /// The invocation ran (or failed); the pool keeps or discards the instance.
    Done(Report),
}

/// The result of an invocation on an instance.
pub(super) struct Report {
    /// The function's response, or why there is none.
    pub(super) result: Result<Value, InvokeError>,
    /// Whether the instance can take the next invocation (it is alive and idle).
    pub(super) reusable: bool,
    /// From the event's delivery to the answer (from acceptance if it was never delivered).
    pub(super) duration: Duration,
    /// The instance that ran it.
    pub(super) instance: u64,
}

/// The pool's handle on an instance. Dropping the last one while the instance is idle
/// stops it.
pub(super) struct Instance {
    jobs: mpsc::Sender<Job>,
}

impl Instance {
    /// False once the instance's task has ended.
    pub(super) fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Hands `job` to the instance; gives it back if the instance is gone.
    pub(super) async fn submit(&self, job: Job) -> Result<(), Job> {
        self.jobs.send(job).await.map_err(|error| error.0)
    }
}

/// Starts instance `id` of the function for `job`: a listener, the process, its log
/// forwarders and the task that runs it, which holds `job` from the start.
pub(super) async fn start(shared: &Arc<Shared>, id: u64, job: Job) -> Result<Instance, StartError> {
    let config = &shared.config;
    let binary = tokio::fs::canonicalize(&config.binary)
        .await
        .map_err(|source| StartError::Binary {
            binary: config.binary.display().to_string(),
            source,
        })?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(StartError::Listen)?;
    let address = listener.local_addr().map_err(StartError::Listen)?;
    let (calls, api_calls) = mpsc::channel(8);
    let server = api::serve(listener, calls, shared.arn.clone());

    let spawned_at = Instant::now();
    let mut child = match spawn::spawn(command(shared, &binary, address)).await {
        Ok(child) => child,
        Err(source) => {
            server.abort();
            return Err(StartError::Spawn {
                binary: binary.display().to_string(),
                source,
            });
        }
    };
    let pid = child.id();
    debug!(function = %config.name, instance = id, pid, api = %address, "instance started");
    shared.record(|stats| stats.instances_started += 1);
    shared.record_pid(id, pid);

    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(stdout, shared.clone(), id, Stream::Stdout));
    }
    let stderr = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(forward_lines(stderr, shared.clone(), id, Stream::Stderr)));

    let (jobs, incoming_jobs) = mpsc::channel(1);
    let task = Task {
        shared: shared.clone(),
        id,
        child,
        pid,
        calls: api_calls,
        jobs: incoming_jobs,
        server,
        stderr,
        spawned_at,
        initialized: false,
        init_error: None,
        parked: None,
        // The timeout starts when the event is fetched: init has a limit of its own.
        pending: Some(Pending {
            job,
            accepted_at: spawned_at,
            deadline: None,
        }),
        running: None,
    };
    shared.tasks.spawn(task.run());
    Ok(Instance { jobs })
}

/// The process's command line and environment, as Lambda would set them up.
fn command(shared: &Shared, binary: &Path, api: SocketAddr) -> Command {
    let config = &shared.config;
    let task_root = binary.parent().unwrap_or(Path::new("/"));
    let mut command = Command::new(binary);
    command.env_clear();
    command.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if let Some(filter) = std::env::var_os("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    command.envs(&config.env);
    for (name, value) in lambda_env(shared, task_root, api) {
        command.env(name, value);
    }
    command
        .current_dir(task_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The variables Lambda sets. Like Lambda's reserved variables, they win over the
/// function's own environment, except the region, which the function may choose.
fn lambda_env(
    shared: &Shared,
    task_root: &Path,
    api: SocketAddr,
) -> BTreeMap<&'static str, String> {
    let config = &shared.config;
    let region = config
        .env
        .get("AWS_REGION")
        .cloned()
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let default_region = config
        .env
        .get("AWS_DEFAULT_REGION")
        .cloned()
        .unwrap_or_else(|| region.clone());
    let task_root = task_root.display().to_string();
    let log_stream = format!(
        "{}/[$LATEST]{:032x}",
        chrono::Utc::now().format("%Y/%m/%d"),
        rand::random::<u128>()
    );
    BTreeMap::from([
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", config.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", default_region),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
    ])
}

/// An accepted job whose event the process has not fetched yet.
struct Pending {
    job: Job,
    accepted_at: Instant,
    /// When the invocation times out, if its clock has started: an initialised instance
    /// accepted it, so the process owes a `next` and the time it takes counts.
    deadline: Option<Instant>,
}

/// A job whose event the process has fetched.
struct Running {
    job: Job,
    delivered_at: Instant,
    /// `delivered_at` on the wall clock, for [`FunctionStats::invocation_log`].
    ///
    /// [`FunctionStats::invocation_log`]: super::FunctionStats::invocation_log
    delivered_wall: SystemTime,
    deadline: Instant,
    /// Fault injection killed the process; its answers no longer count.
    doomed: bool,
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

struct Task {
    shared: Arc<Shared>,
    id: u64,
    child: Child,
    /// The process's id, which is also its process group's (see [`spawn`]); kept because
    /// `child` forgets it once the process is reaped.
    pid: Option<u32>,
    calls: mpsc::Receiver<ApiCall>,
    jobs: mpsc::Receiver<Job>,
    server: JoinHandle<()>,
    stderr: Option<JoinHandle<Option<String>>>,
    spawned_at: Instant,
    initialized: bool,
    init_error: Option<FunctionError>,
    /// A `next` waiting for an event.
    parked: Option<oneshot::Sender<Delivery>>,
    pending: Option<Pending>,
    running: Option<Running>,
}

impl Task {
    async fn run(mut self) {
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
                match self.running.take() {
                    Some(running) if expected => {
                        drop(reply.send(Reply::accepted()));
                        let result = answer.map_err(|error| InvokeError::Function {
                            error_type: error.error_type,
                            error_message: error.error_message,
                        });
                        self.settle_running(running, result, true);
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
        });
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

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Forwards the process's output to `tracing`, line by line, until the pipe closes;
/// returns the last non-empty line.
async fn forward_lines(
    output: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    instance: u64,
    stream: Stream,
) -> Option<String> {
    let mut reader = BufReader::new(output);
    let mut buffer = Vec::new();
    let mut last = None;
    loop {
        buffer.clear();
        match read_line_capped(&mut reader, &mut buffer, MAX_LOG_LINE).await {
            Ok(0) | Err(_) => break last,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
        let function = &shared.config.name;
        let (level, text) = function_log_line(line);
        match (level, stream) {
            ("ERROR", _) => tracing::error!(function = %function, instance, "{text}"),
            ("WARN", _) | (_, Stream::Stderr) => warn!(function = %function, instance, "{text}"),
            ("DEBUG" | "TRACE", _) => tracing::debug!(function = %function, instance, "{text}"),
            _ => info!(function = %function, instance, "{text}"),
        }
        last = Some(line.to_owned());
    }
}

/// Splits a function's text log line (`lambda_runtime`'s default format, no colours) into
/// its level and its message, dropping the per-invocation span prefix (the gateway logs
/// the request id on its own invocation line).
fn function_log_line(line: &str) -> (&str, &str) {
    let trimmed = line.trim_start();
    let (level, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((word, rest)) if matches!(word, "TRACE" | "DEBUG" | "INFO" | "WARN" | "ERROR") => {
            (word, rest.trim_start())
        }
        _ => return ("", line),
    };
    let rest = match rest.strip_prefix("Lambda runtime invoke{") {
        Some(after) => after.split_once("}: ").map_or(rest, |(_, message)| message),
        None => rest,
    };
    (level, rest)
}

/// Reads one line into `line`, keeping at most `cap` bytes of it (the rest of a longer
/// line is read and dropped). Returns the number of bytes consumed; 0 at the end.
async fn read_line_capped(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    cap: usize,
) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (used, complete) = match available.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (newline + 1, true),
            None => (available.len(), false),
        };
        let room = cap.saturating_sub(line.len());
        line.extend_from_slice(&available[..used.min(room)]);
        reader.consume(used);
        consumed += used;
        if complete {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod log_line_tests {
    use super::function_log_line;

    #[test]
    fn keeps_the_level_and_drops_the_invocation_span() {
        assert_eq!(
            function_log_line(
                r#" INFO Lambda runtime invoke{requestId="r" xrayTraceId="t"}: connected connection_id="c""#
            ),
            ("INFO", r#"connected connection_id="c""#)
        );
        assert_eq!(
            function_log_line("ERROR storage failed"),
            ("ERROR", "storage failed")
        );
        assert_eq!(function_log_line("plain text"), ("", "plain text"));
    }
}
