//! Starting one instance of a function: a Runtime API listener of its own, the process,
//! its log forwarders, and the task (see `task`) that owns them and runs the instance's
//! life. The pool keeps only an [`Instance`] handle, through which it hands over jobs and
//! which points each job's log tail, if it asked for one, at the instance's output.

use std::{io, net::Ipv4Addr, sync::Arc};

use tokio::{net::TcpListener, sync::mpsc, time::Instant};
use tracing::debug;

use super::api;
use super::drain::{Progress, Watched};
use super::environment::command;
use super::job::Job;
use super::logs::{Stream, forward_lines};
use super::shared::Shared;
use super::spawn;
use super::tail::Output;
use super::task::{Pending, Task};

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

/// The pool's handle on an instance. Dropping the last one while the instance is idle
/// stops it.
pub(super) struct Instance {
    jobs: mpsc::Sender<Job>,
    output: Arc<Output>,
}

impl Instance {
    /// False once the instance's task has ended.
    pub(super) fn is_alive(&self) -> bool {
        !self.jobs.is_closed()
    }

    /// Hands `job` to the instance; gives it back if the instance is gone. From here the
    /// process's lines go to the job's log, if it keeps one.
    pub(super) async fn submit(&self, job: Job) -> Result<(), Job> {
        self.output.collect_into(job.log.clone());
        self.jobs.send(job).await.map_err(|error| error.0)
    }

    /// The instance's output, as a log tail sees it.
    pub(super) fn output(&self) -> &Output {
        &self.output
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

    let stdout = child.stdout.take().map(|pipe| {
        let progress = Arc::new(Progress::of(&pipe));
        (Watched::new(pipe, progress.clone()), progress)
    });
    let stderr = child.stderr.take().map(|pipe| {
        let progress = Arc::new(Progress::of(&pipe));
        (Watched::new(pipe, progress.clone()), progress)
    });
    let pipes = [
        stdout.as_ref().map(|(_, progress)| progress.clone()),
        stderr.as_ref().map(|(_, progress)| progress.clone()),
    ];
    let output = Arc::new(Output::new(pipes.into_iter().flatten().collect()));
    // Before any line is read: a new instance's init output belongs to its first job.
    output.collect_into(job.log.clone());
    if let Some((stdout, _)) = stdout {
        let forward = forward_lines(stdout, shared.clone(), output.clone(), id, Stream::Stdout);
        tokio::spawn(forward);
    }
    let stderr = stderr.map(|(stderr, _)| {
        let forward = forward_lines(stderr, shared.clone(), output.clone(), id, Stream::Stderr);
        tokio::spawn(forward)
    });

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
    Ok(Instance { jobs, output })
}
