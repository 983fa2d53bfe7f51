//! Start-up time, memory and package size of the function binaries, each beside a
//! hello-world Lambda built with the same profile (`examples/hello_function` of
//! `deltacast-local`).
//!
//! Every binary runs as Lambda would run it: a fresh process under the local Runtime API
//! ([`deltacast_local::runtime`]), with a cleared environment plus the variables it needs.
//! - **Init** is the runtime's own measure: process start to the first `next` request,
//!   with every client built. Each binary is started `runs` times; the starts go round
//!   the binaries (hello, then each function, then hello again...) so that a background
//!   load slows them all alike and the ratio stays fair. Each binary is started once
//!   beforehand, unmeasured, so that none pays for reading itself from disk.
//! - **Peak RSS** is `VmHWM` of a process that has answered a real event (from
//!   `events/`) twice: once cold, once warm. When the environment names a
//!   DynamoDB (Local) endpoint, the table is created there first (as `template.yaml`
//!   describes it) so that the invocations do real work. The answer may still be an error
//!   (no DynamoDB, no Management API); it is the memory after a real invocation that
//!   counts.
//! - **Zip** is the deployable package: the binary as `bootstrap`, deflated.
//!
//! Runs are sequential: on a small machine parallel starts would measure each other.

mod environment;
mod package;
mod subject;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltacast_local::invoke::InvokeError;
use serde::Serialize;

use environment::create_table;
pub use environment::function_env;
pub use package::zip_size;
use subject::Subject;

/// The hello-world baseline's name in reports.
pub const HELLO: &str = "hello_function";
/// The goal for start-up: at most this many times hello-world's p50.
pub const INIT_RATIO_GOAL: f64 = 2.0;
/// The goal for memory after a warm invocation, in KiB (30 MB).
pub const PEAK_RSS_GOAL_KB: u64 = 30 * 1024;
/// The goal for the deployable zip, in bytes (6 MB).
pub const ZIP_GOAL_BYTES: u64 = 6 * 1024 * 1024;

/// Why the measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A binary to measure is not there.
    #[error("{0} is missing: build it with `cargo build --release --bins --examples`")]
    MissingBinary(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// An event fixture is not JSON.
    #[error("{path} is not JSON: {source}")]
    Fixture {
        /// The fixture.
        path: PathBuf,
        /// What parsing it said.
        source: serde_json::Error,
    },
    /// A process did not get as far as asking for its first event.
    #[error("{function} did not initialise: {error}")]
    Init {
        /// The binary.
        function: String,
        /// How its start failed.
        error: InvokeError,
    },
    /// The instance to read memory from is not there.
    #[error("{function} has {count} live processes after its warm invocation, not 1")]
    NoProcess {
        /// The binary.
        function: String,
        /// How many there were.
        count: usize,
    },
    /// `/proc/<pid>/status` has no `VmHWM` line.
    #[error("no VmHWM in /proc/{pid}/status")]
    NoPeakRss {
        /// The process.
        pid: u32,
    },
    /// Building the zip failed.
    #[error("cannot zip {path}: {source}")]
    Zip {
        /// The binary.
        path: PathBuf,
        /// What the zip writer said.
        source: zip::result::ZipError,
    },
}

/// What one binary measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BinaryStartup {
    /// Median init (process start to first `next`), in milliseconds.
    pub init_ms_p50: f64,
    /// 90th percentile of init, in milliseconds.
    pub init_ms_p90: f64,
    /// `init_ms_p50` over hello-world's (1 for hello-world itself).
    pub init_ratio: f64,
    /// Peak resident memory (`VmHWM`) after a cold and a warm invocation, in KiB.
    pub peak_rss_kb: u64,
    /// The deployable zip (`bootstrap`, deflated), in bytes.
    pub zip_bytes: u64,
    /// The release binary, in bytes.
    pub binary_bytes: u64,
    /// How the warm invocation ended: `ok`, or the error the function answered.
    pub warm_outcome: String,
    /// The first invocation of a new process, from fetching the event to answering, in
    /// milliseconds: what init leaves to the first request (connections, TLS roots).
    pub cold_invocation_ms: f64,
    /// The same event on the same process right after, in milliseconds.
    pub warm_invocation_ms: f64,
    /// Whether init ≤ 2× hello-world, peak RSS ≤ 30 MB and the zip ≤ 6 MB.
    pub within_goals: bool,
    /// Every init measured, in milliseconds, in the order they ran.
    pub init_ms: Vec<f64>,
}

/// Whether the functions' table was there for the warm invocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableState {
    /// The table existed or was created: its name.
    Ready(String),
    /// Why there was none (the invocations then answer errors).
    Missing(String),
}

/// Start-up, memory and size of every function, beside hello-world.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StartupReport {
    /// Starts measured per binary.
    pub runs: usize,
    /// The table of the warm invocations.
    pub table: TableState,
    /// Hello-world's median init, in milliseconds: the baseline of every `init_ratio`.
    pub hello_init_ms_p50: f64,
    /// Hello-world's 90th percentile init, in milliseconds.
    pub hello_init_ms_p90: f64,
    /// Hello-world's own figures.
    pub hello: BinaryStartup,
    /// Each function's figures, by binary name.
    pub functions: BTreeMap<String, BinaryStartup>,
}

/// Measures each of `functions` (binaries in `release_dir`) and the hello-world baseline
/// (`release_dir/examples/hello_function`): `runs` starts each for init, one cold and one
/// warm invocation with a fixture event for memory, and the zip. `env` is every
/// function's environment (see [`function_env`]); the runtime adds Lambda's own variables.
pub async fn measure(
    release_dir: &Path,
    functions: &[&str],
    runs: usize,
    env: &BTreeMap<String, String>,
) -> Result<StartupReport, StartupError> {
    let hello = Subject::new(HELLO, release_dir.join("examples").join(HELLO), env)?;
    let mut subjects = vec![hello];
    for name in functions {
        subjects.push(Subject::new(name, release_dir.join(name), env)?);
    }

    for subject in &subjects {
        subject.start_once().await?;
    }
    let mut inits: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); subjects.len()];
    for _ in 0..runs {
        for (subject, inits) in subjects.iter().zip(&mut inits) {
            inits.push(subject.start_once().await?);
        }
    }

    let table = match (env.get("AWS_ENDPOINT_URL_DYNAMODB"), env.get("TABLE_NAME")) {
        (Some(endpoint), Some(table)) => match create_table(endpoint, table, env).await {
            Ok(()) => TableState::Ready(table.clone()),
            Err(error) => TableState::Missing(error),
        },
        _ => TableState::Missing("no AWS_ENDPOINT_URL_DYNAMODB or TABLE_NAME".to_owned()),
    };
    let hello_p50 = percentile_ms(&inits[0], 0.5);
    let mut measured = Vec::with_capacity(subjects.len());
    for (subject, inits) in subjects.iter().zip(&inits) {
        let warm = subject.peak_rss().await?;
        let peak_rss_kb = warm.peak_rss_kb;
        let binary_bytes = std::fs::metadata(&subject.binary)
            .map_err(|source| StartupError::Read {
                path: subject.binary.clone(),
                source,
            })?
            .len();
        let zip_bytes = zip_size(&subject.binary)?;
        let init_ms_p50 = percentile_ms(inits, 0.5);
        let init_ratio = round2(init_ms_p50 / hello_p50);
        measured.push((
            subject.name.clone(),
            BinaryStartup {
                init_ms_p50,
                init_ms_p90: percentile_ms(inits, 0.9),
                init_ratio,
                peak_rss_kb,
                zip_bytes,
                binary_bytes,
                warm_outcome: warm.outcome,
                cold_invocation_ms: warm.cold_invocation_ms,
                warm_invocation_ms: warm.warm_invocation_ms,
                within_goals: init_ratio <= INIT_RATIO_GOAL
                    && peak_rss_kb <= PEAK_RSS_GOAL_KB
                    && zip_bytes <= ZIP_GOAL_BYTES,
                init_ms: inits.iter().map(|init| ms(*init)).collect(),
            },
        ));
    }
    let mut measured = measured.into_iter();
    let (_, hello) = measured.next().expect("hello-world is measured first");
    Ok(StartupReport {
        runs,
        table,
        hello_init_ms_p50: hello.init_ms_p50,
        hello_init_ms_p90: hello.init_ms_p90,
        hello,
        functions: measured.collect(),
    })
}

/// The nearest-rank percentile `p` (0 to 1) of `samples`, in milliseconds.
pub(crate) fn percentile_ms(samples: &[Duration], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    crate::percentile::nearest_rank(&sorted, p).map_or(0.0, ms)
}

/// `duration` in milliseconds, to two decimals.
pub(crate) fn ms(duration: Duration) -> f64 {
    round2(duration.as_secs_f64() * 1000.0)
}

/// `value` to two decimals.
fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::startup::environment::workspace_root;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=20).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&samples, 0.5), 10.0);
        assert_eq!(percentile_ms(&samples, 0.9), 18.0);
        assert_eq!(percentile_ms(&[Duration::from_micros(1500)], 0.9), 1.5);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }

    /// `target/<profile>`, where this test binary's `deps/` is.
    fn profile_dir() -> PathBuf {
        let exe = std::env::current_exe().expect("the test binary's path");
        exe.parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps")
            .to_path_buf()
    }

    #[tokio::test]
    async fn measures_a_function_beside_hello_world() {
        // GIVEN the authorizer and hello-world, built with this test's profile
        let dir = profile_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "deltacast-local",
            "--example",
            HELLO,
        ]);
        build.args(["-p", "deltacast-authorizer", "--bin", "authorizer"]);
        if let Some(profile) = dir.file_name().and_then(|name| name.to_str())
            && profile != "debug"
        {
            build.args(["--profile", profile]);
        }
        assert!(build.status().is_ok_and(|status| status.success()));

        // WHEN both are measured
        let env = function_env(None, "bench");
        let report = measure(&dir, &["authorizer"], 3, &env)
            .await
            .expect("measured");

        // THEN every figure is there, and the authorizer accepted the fixture's token
        assert_eq!(report.runs, 3);
        assert!(
            matches!(report.table, TableState::Missing(_)),
            "nothing listens there"
        );
        assert!(report.hello_init_ms_p50 > 0.0);
        assert!(report.hello_init_ms_p90 >= report.hello_init_ms_p50);
        assert_eq!(report.hello.init_ratio, 1.0);
        assert_eq!(report.hello.warm_outcome, "ok");
        let authorizer = &report.functions["authorizer"];
        assert_eq!(authorizer.init_ms.len(), 3);
        assert!(authorizer.init_ms_p90 >= authorizer.init_ms_p50);
        assert!(authorizer.peak_rss_kb > 1024);
        assert!(authorizer.zip_bytes > 0 && authorizer.zip_bytes < authorizer.binary_bytes);
        assert_eq!(authorizer.warm_outcome, "ok");
        assert!(authorizer.cold_invocation_ms > 0.0 && authorizer.warm_invocation_ms > 0.0);
        let json = serde_json::to_value(&report).expect("serialisable");
        assert!(json["functions"]["authorizer"]["init_ms_p50"].is_number());
    }

    /// The start-up figures of the release build, without the rest of `make bench`:
    /// `cargo build --release --bins --examples`, then
    /// `cargo test --release -p deltacast-bench startup -- --ignored --nocapture`.
    /// `STARTUP_RUNS` sets the starts per binary (20), `STARTUP_RELEASE_DIR` where the
    /// binaries are (`target/release`; hello-world in its `examples/`).
    #[tokio::test]
    #[ignore = "measures the release build; run it on purpose"]
    async fn startup_of_the_release_build() {
        let runs = std::env::var("STARTUP_RUNS")
            .ok()
            .and_then(|runs| runs.parse().ok())
            .unwrap_or(20);
        let dir = match std::env::var_os("STARTUP_RELEASE_DIR") {
            Some(dir) => PathBuf::from(dir),
            None if profile_dir().ends_with("release") => profile_dir(),
            None => workspace_root().join("target/release"),
        };
        let env = function_env(
            std::env::var("DELTACAST_TEST_DYNAMODB").ok().as_deref(),
            "deltacast-bench",
        );
        let functions = ["authorizer", "connect", "message", "disconnect", "fanout"];
        let report = measure(&dir, &functions, runs, &env)
            .await
            .expect("measured");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serialisable")
        );
    }
}
