//! One binary under the local Runtime API, as Lambda would run it: a fresh process per
//! init measurement, and a cold then a warm invocation whose peak memory (`VmHWM`) counts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use deltacast_local::invoke::{Invoke, InvokeError, Invoked};
use deltacast_local::runtime::{Function, FunctionConfig, FunctionFaults};
use serde_json::{Value, json};

use super::environment::event_for;
use super::{StartupError, ms};

/// How long one invocation may take (the warm-up events may wait on retries to an
/// endpoint that is not there).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// What a cold and a warm invocation left.
pub(crate) struct Warm {
    /// `VmHWM` after both, in KiB.
    pub(crate) peak_rss_kb: u64,
    /// How the warm one ended: `ok` or the error.
    pub(crate) outcome: String,
    /// The cold invocation, ms.
    pub(crate) cold_invocation_ms: f64,
    /// The warm invocation, ms.
    pub(crate) warm_invocation_ms: f64,
}

/// One binary to measure.
pub(crate) struct Subject {
    /// The binary's name in reports.
    pub(crate) name: String,
    /// Its path.
    pub(crate) binary: PathBuf,
    /// Its environment.
    env: BTreeMap<String, String>,
    /// The event of the memory measurement.
    event: Value,
}

impl Subject {
    /// A binary that exists, with its fixture event.
    pub(crate) fn new(
        name: &str,
        binary: PathBuf,
        env: &BTreeMap<String, String>,
    ) -> Result<Self, StartupError> {
        if !binary.is_file() {
            return Err(StartupError::MissingBinary(binary));
        }
        Ok(Self {
            name: name.to_owned(),
            binary,
            env: env.clone(),
            event: event_for(name, env)?,
        })
    }

    /// A one-instance function running this binary.
    fn function(&self) -> Function {
        Function::new(FunctionConfig {
            name: self.name.clone(),
            binary: self.binary.clone(),
            env: self.env.clone(),
            timeout: INVOCATION_TIMEOUT,
            memory_mb: 128,
            max_instances: 1,
            faults: FunctionFaults::default(),
        })
    }

    /// Starts a fresh process and returns its init duration. The event is one no
    /// function accepts, so it is answered at once and touches nothing.
    pub(crate) async fn start_once(&self) -> Result<Duration, StartupError> {
        let function = self.function();
        let outcome = function.invoke(json!("startup-probe")).await;
        function.shutdown().await;
        let init = function.stats().init_durations.first().copied();
        match (init, outcome) {
            (Some(init), _) => Ok(init),
            (None, Err(error)) => Err(StartupError::Init {
                function: self.name.clone(),
                error,
            }),
            (None, Ok(_)) => Err(StartupError::Init {
                function: self.name.clone(),
                error: InvokeError::Unavailable("no init duration was recorded".to_owned()),
            }),
        }
    }

    /// `VmHWM` after a cold and a warm invocation with the subject's event, and how the
    /// warm one ended.
    pub(crate) async fn peak_rss(&self) -> Result<Warm, StartupError> {
        let function = self.function();
        let measured = async {
            if let Err(error @ InvokeError::Init { .. }) = whole(&function, &self.event).await {
                return Err(StartupError::Init {
                    function: self.name.clone(),
                    error,
                });
            }
            let outcome = match whole(&function, &self.event).await {
                Ok(_) => "ok".to_owned(),
                Err(error) => error.to_string(),
            };
            let pids = function.pids();
            let [pid] = pids[..] else {
                return Err(StartupError::NoProcess {
                    function: self.name.clone(),
                    count: pids.len(),
                });
            };
            // The runtime logs each invocation from the moment the process fetched it.
            let log = function.stats().invocation_log;
            let duration = |index: usize| log.get(index).map_or(0.0, |(_, took)| ms(*took));
            Ok(Warm {
                peak_rss_kb: peak_rss_kb(pid)?,
                outcome,
                cold_invocation_ms: duration(0),
                warm_invocation_ms: duration(1),
            })
        }
        .await;
        function.shutdown().await;
        measured
    }
}

/// Invokes `function` with `event` and reads the whole answer, streamed or not (the
/// `http` function streams).
async fn whole(function: &Function, event: &Value) -> Result<Value, InvokeError> {
    match function.invoke_streaming(event.clone()).await? {
        Invoked::Response(value) => Ok(value),
        Invoked::Stream(mut head) => {
            while head.body.recv().await.is_some() {}
            Ok(head.prelude)
        }
    }
}

/// `VmHWM` of process `pid`, in KiB.
fn peak_rss_kb(pid: u32) -> Result<u64, StartupError> {
    let path = PathBuf::from(format!("/proc/{pid}/status"));
    let status = std::fs::read_to_string(&path).map_err(|source| StartupError::Read {
        path: path.clone(),
        source,
    })?;
    vm_hwm_kb(&status).ok_or(StartupError::NoPeakRss { pid })
}

/// The `VmHWM:   1234 kB` line of a `/proc/<pid>/status`.
fn vm_hwm_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_rss_is_read_from_vm_hwm() {
        let status = "Name:\tconnect\nVmPeak:\t  99999 kB\nVmHWM:\t    8140 kB\nVmRSS:\t 8000 kB\n";
        assert_eq!(vm_hwm_kb(status), Some(8140));
        assert_eq!(vm_hwm_kb("Name:\tx\n"), None);
        let own = peak_rss_kb(std::process::id()).expect("this process has a VmHWM");
        assert!(own > 0);
    }
}
