//! Starting function processes so that none outlives the gateway.
//!
//! Three layers: the instance's task kills the process's group (on Linux) and reaps the
//! process on every way out,
//! `kill_on_drop` covers a task that is dropped instead, and on Linux
//! `PR_SET_PDEATHSIG(SIGKILL)` covers a gateway that is itself killed with `SIGKILL`.
//!
//! The death signal is sent when the *thread* that forked the child exits, not the
//! process. Tokio worker threads can exit (a worker that calls `block_in_place` becomes a
//! blocking thread, and idle blocking threads end after a while), which would kill
//! healthy instances at random. So every fork happens on one dedicated thread that lives
//! as long as the gateway: it receives commands over a channel, enters the caller's
//! runtime (so the child's pipes and exit notification belong to that runtime) and
//! spawns there.
//!
//! On Linux children also get their own process group, so a Ctrl-C in the terminal reaches
//! only the gateway, which then stops its instances in order instead of every function
//! crashing at once. Elsewhere (no death signal) they stay in the terminal's group so that
//! Ctrl-C still reaches them.

use std::{
    io,
    panic::AssertUnwindSafe,
    sync::{OnceLock, mpsc as std_mpsc},
};

use tokio::{
    process::{Child, Command},
    runtime::Handle,
    sync::oneshot,
};

struct SpawnRequest {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Spawns `command` from the spawner thread (falling back to the calling thread if that
/// thread could not be started).
pub(super) async fn spawn(mut command: Command) -> io::Result<Child> {
    die_with_gateway(&mut command);
    let Some(spawner) = spawner() else {
        return command.spawn();
    };
    let (reply, child) = oneshot::channel();
    let request = SpawnRequest {
        command,
        runtime: Handle::current(),
        reply,
    };
    if let Err(std_mpsc::SendError(mut request)) = spawner.send(request) {
        return request.command.spawn();
    }
    child
        .await
        .map_err(|_| io::Error::other("the process spawner thread stopped"))?
}

fn spawner() -> Option<&'static std_mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Option<std_mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (requests, incoming) = std_mpsc::channel::<SpawnRequest>();
            let thread = std::thread::Builder::new()
                .name("function-spawner".to_owned())
                .spawn(move || {
                    for request in incoming {
                        serve(request);
                    }
                });
            match thread {
                Ok(_) => Some(requests),
                Err(error) => {
                    tracing::warn!(%error, "no spawner thread; function processes are spawned from worker threads");
                    None
                }
            }
        })
        .as_ref()
}

fn serve(request: SpawnRequest) {
    let SpawnRequest {
        mut command,
        runtime,
        reply,
    } = request;
    let _runtime = runtime.enter();
    // This thread must never unwind: its end would kill every instance it started.
    let child = std::panic::catch_unwind(AssertUnwindSafe(|| command.spawn()))
        .unwrap_or_else(|_| Err(io::Error::other("spawning the process panicked")));
    // If the caller is gone, the child is dropped here and `kill_on_drop` stops it.
    drop(reply.send(child));
}

#[cfg(target_os = "linux")]
fn die_with_gateway(command: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let gateway = unsafe { libc::getpid() };
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let signal = libc::SIGKILL as libc::c_ulong;
            let unused: libc::c_ulong = 0;
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal, unused, unused, unused) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The gateway died between fork and prctl: the signal will never come.
            if libc::getppid() != gateway {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_gateway(_command: &mut Command) {}
