//! The runtime against real processes: the `probe_function` example, built with
//! `lambda_runtime`, steered by its events.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::join_all;
use serde_json::{Value, json};

use super::{Function, FunctionConfig, FunctionFaults};
use crate::invoke::{Invoke, InvokeError};

/// Every test finishes well within this, or fails.
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// The probe's binary: `<target>/<profile>/examples/probe_function`, next to the test
/// binary's `deps/`. `cargo test --lib` does not build examples, so it is built (or
/// brought up to date) once per test run.
fn probe() -> PathBuf {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary lives in <target>/<profile>/deps");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut build = std::process::Command::new(cargo);
            // The workspace's feature set, as `make test` builds it: a build of this package
            // alone resolves features differently and would rebuild the probe (tens of
            // seconds on a busy machine).
            build.args(["build", "--quiet", "--workspace", "--example", "probe_function"]);
            match profile_dir.file_name().and_then(|name| name.to_str()) {
                Some("debug") | None => {}
                Some(profile) => {
                    build.args(["--profile", profile]);
                }
            }
            let built = build.status().is_ok_and(|status| status.success());
            let probe = profile_dir.join("examples").join("probe_function");
            assert!(
                probe.exists(),
                "{} is missing (building it succeeded: {built}); run `cargo build --workspace --example probe_function`",
                probe.display()
            );
            probe
        })
        .clone()
}

pub(crate) fn config(name: &str) -> FunctionConfig {
    config_for(name, probe())
}

fn config_for(name: &str, binary: PathBuf) -> FunctionConfig {
    FunctionConfig {
        name: name.to_owned(),
        binary,
        env: BTreeMap::new(),
        timeout: Duration::from_secs(2),
        memory_mb: 128,
        max_instances: 4,
        faults: FunctionFaults::default(),
    }
}

/// Runs a test under [`TEST_LIMIT`], the probe built first: building it is not the test.
pub(crate) async fn bounded<T>(test: impl Future<Output = T>) -> T {
    probe();
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test took too long")
}

pub(super) fn pid(response: &Result<Value, InvokeError>) -> u32 {
    let response = response.as_ref().expect("a response");
    let pid = response["pid"].as_u64().expect("a pid in the response");
    u32::try_from(pid).expect("a pid fits u32")
}

/// Whether the process exists and is not a zombie (an orphan's zombie may linger when
/// nothing reaps it, as in some containers).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may contain spaces and parentheses.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z' | 'X'))
}

#[tokio::test]
async fn echo_round_trip_then_warm_reuse() {
    bounded(async {
        // GIVEN a function with no instance
        let function = Function::new(config("EchoFunction"));

        // WHEN it is invoked twice in a row
        let first = function
            .invoke(json!({ "echo": { "hello": [1, 2] } }))
            .await;
        let second = function.invoke(json!({ "echo": "again" })).await;

        // THEN both answer, from the same warm process
        assert_eq!(
            first.as_ref().expect("first")["echo"],
            json!({ "hello": [1, 2] })
        );
        assert_eq!(second.as_ref().expect("second")["echo"], json!("again"));
        assert_eq!(pid(&first), pid(&second));
        let stats = function.stats();
        assert_eq!(stats.instances_started, 1);
        assert_eq!(stats.invocations, 2);
        assert_eq!(stats.errors + stats.timeouts + stats.crashes, 0);
        assert_eq!(stats.init_durations.len(), 1);
        assert!(stats.init_durations[0] > Duration::ZERO);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn stats_name_live_processes_and_log_invocations() {
    bounded(async {
        // GIVEN a function with no instance
        let function = Function::new(config("LoggedFunction"));
        assert!(function.pids().is_empty());
        let before = SystemTime::now();

        // WHEN it is invoked twice, the first invocation taking 200 ms, and once with an error
        let first = function.invoke(json!({ "sleep_ms": 200 })).await;
        let second = function.invoke(json!({ "echo": 1 })).await;
        let failed = function.invoke(json!({ "error": "no" })).await;
        assert!(failed.is_err());

        // THEN the one live process is named, and the three invocations are logged in order
        let stats = function.stats();
        assert_eq!(stats.pids, vec![pid(&first)]);
        assert_eq!(function.pids(), vec![pid(&second)]);
        let log = &stats.invocation_log;
        assert_eq!(log.len(), 3);
        assert!(log[0].0 >= before);
        assert!(log[0].1 >= Duration::from_millis(200));
        assert!(log[1].0 >= log[0].0 + log[0].1);
        assert!(log[2].0 >= log[1].0);
        // AND once the function is shut down no process is listed
        function.shutdown().await;
        assert!(function.stats().pids.is_empty());
        assert_eq!(function.stats().invocation_log.len(), 3);
    })
    .await;
}

#[tokio::test]
async fn the_process_gets_lambda_headers_and_environment() {
    bounded(async {
        // GIVEN a function with its own environment, and a variable set in the gateway
        let mut config = config("ContextFunction");
        config.env = BTreeMap::from([
            ("PROBE_ENV_NAME".to_owned(), "GREETING".to_owned()),
            ("GREETING".to_owned(), "hello".to_owned()),
            ("AWS_REGION".to_owned(), "eu-west-3".to_owned()),
        ]);
        let function = Function::new(config);
        let before_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;

        // WHEN it is invoked
        let response = function
            .invoke(json!({
                "context": true,
                "getenv": [
                    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION",
                    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_RUNTIME_API",
                    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_REGION", "AWS_DEFAULT_REGION",
                    "_HANDLER", "TZ", "LAMBDA_TASK_ROOT", "PATH", "HOME", "CARGO_PKG_NAME"
                ]
            }))
            .await
            .expect("a response");

        // THEN the runtime client saw Lambda's headers
        let context = &response["context"];
        let request_id = context["request_id"].as_str().expect("request id");
        assert_eq!(request_id.len(), 36, "a UUID: {request_id}");
        assert_eq!(
            context["invoked_function_arn"],
            json!("arn:aws:lambda:us-east-1:000000000000:function:ContextFunction")
        );
        let deadline_ms = context["deadline_ms"].as_u64().expect("deadline");
        assert!(deadline_ms >= before_ms + 1_900 && deadline_ms <= before_ms + 10_000);
        assert!(
            context["xray_trace_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("Root=1-"))
        );
        assert_eq!(context["function_name"], json!("ContextFunction"));
        assert_eq!(context["memory_mb"], json!(128));
        // AND Lambda's environment, the function's own, and nothing else of the gateway's
        assert_eq!(response["env"], json!("hello"));
        let env = &response["getenv"];
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], json!("ContextFunction"));
        assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], json!("$LATEST"));
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], json!("128"));
        assert!(
            env["AWS_LAMBDA_RUNTIME_API"]
                .as_str()
                .is_some_and(|api| api.starts_with("127.0.0.1:"))
        );
        assert_eq!(
            env["AWS_LAMBDA_LOG_GROUP_NAME"],
            json!("/aws/lambda/ContextFunction")
        );
        assert_eq!(env["AWS_REGION"], json!("eu-west-3"));
        assert_eq!(env["AWS_DEFAULT_REGION"], json!("eu-west-3"));
        assert_eq!(env["_HANDLER"], json!("bootstrap"));
        assert_eq!(env["TZ"], json!(":UTC"));
        assert!(
            env["LAMBDA_TASK_ROOT"]
                .as_str()
                .is_some_and(|root| root.ends_with("examples"))
        );
        assert!(env["PATH"].is_string());
        assert_eq!(
            env["CARGO_PKG_NAME"],
            Value::Null,
            "the gateway's environment leaked"
        );
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn parallel_invocations_start_one_instance_each() {
    bounded(async {
        // GIVEN a function allowed 3 instances
        let mut config = config("ParallelFunction");
        config.max_instances = 3;
        let function = Function::new(config);

        // WHEN 3 slow invocations run at once
        let responses =
            join_all((0..3).map(|i| function.invoke(json!({ "echo": i, "sleep_ms": 400 })))).await;

        // THEN each ran on its own instance
        let mut pids: Vec<u32> = responses.iter().map(pid).collect();
        pids.sort_unstable();
        pids.dedup();
        assert_eq!(pids.len(), 3);
        let stats = function.stats();
        assert_eq!(stats.instances_started, 3);
        assert_eq!(stats.init_durations.len(), 3);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn invocations_queue_when_the_limit_is_reached() {
    bounded(async {
        // GIVEN a function allowed a single instance
        let mut config = config("QueuedFunction");
        config.max_instances = 1;
        let function = Function::new(config);

        // WHEN 4 invocations arrive at once
        let responses =
            join_all((0..4).map(|i| function.invoke(json!({ "echo": i, "sleep_ms": 100 })))).await;

        // THEN they all succeed, one after the other, on the one instance
        for (i, response) in responses.iter().enumerate() {
            assert_eq!(response.as_ref().expect("a response")["echo"], json!(i));
        }
        let mut pids: Vec<u32> = responses.iter().map(pid).collect();
        pids.dedup();
        assert_eq!(pids.len(), 1);
        assert_eq!(function.stats().instances_started, 1);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_handler_error_keeps_the_instance_warm() {
    bounded(async {
        let function = Function::new(config("ErrorFunction"));
        let before = function.invoke(json!({})).await;

        // WHEN the handler returns an error
        let error = function.invoke(json!({ "error": "boom" })).await;

        // THEN the caller gets it, and the instance serves the next invocation
        assert_eq!(
            error,
            Err(InvokeError::Function {
                error_type: "ProbeError".to_owned(),
                error_message: "boom".to_owned(),
            })
        );
        let after = function.invoke(json!({})).await;
        assert_eq!(pid(&before), pid(&after));
        let stats = function.stats();
        assert_eq!((stats.errors, stats.instances_started), (1, 1));
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_panic_is_a_function_error() {
    bounded(async {
        let function = Function::new(config("PanicFunction"));
        let before = function.invoke(json!({})).await;

        let error = function.invoke(json!({ "panic": true })).await;

        // lambda_runtime catches the panic and reports it through /error.
        match error {
            Err(InvokeError::Function { error_message, .. }) => {
                assert_eq!(error_message, "Lambda panicked: probe panic requested");
            }
            other => panic!("expected a function error, got {other:?}"),
        }
        let after = function.invoke(json!({})).await;
        assert_eq!(pid(&before), pid(&after));
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_timeout_kills_the_instance_and_the_next_invocation_gets_a_fresh_one() {
    bounded(async {
        // GIVEN a function with a short timeout and a warm instance
        let mut config = config("SlowFunction");
        config.timeout = Duration::from_millis(500);
        let function = Function::new(config);
        let before = pid(&function.invoke(json!({})).await);

        // WHEN an invocation runs too long
        let started = tokio::time::Instant::now();
        let timed_out = function.invoke(json!({ "sleep_ms": 10_000 })).await;

        // THEN it times out, well before the handler's sleep ends; the process is gone, and
        // a new one serves next
        assert_eq!(
            timed_out,
            Err(InvokeError::Timeout(Duration::from_millis(500)))
        );
        assert!(started.elapsed() < Duration::from_secs(8));
        assert!(
            !alive(before),
            "the timed-out process {before} still exists"
        );
        let after = pid(&function.invoke(json!({})).await);
        assert_ne!(before, after);
        let stats = function.stats();
        assert_eq!((stats.timeouts, stats.instances_started), (1, 2));
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_exit_mid_invocation_is_a_crash() {
    bounded(async {
        let function = Function::new(config("ExitFunction"));
        let before = pid(&function.invoke(json!({})).await);

        let crashed = function.invoke(json!({ "exit": 3 })).await;

        assert_eq!(
            crashed,
            Err(InvokeError::Crashed("exit status: 3".to_owned()))
        );
        let after = pid(&function.invoke(json!({})).await);
        assert_ne!(before, after);
        assert_eq!(function.stats().crashes, 1);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_failed_init_is_an_init_error_with_the_last_stderr_line() {
    bounded(async {
        // GIVEN a function whose init fails
        let mut config = config("BrokenFunction");
        config
            .env
            .insert("PROBE_INIT_FAIL".to_owned(), "1".to_owned());
        let function = Function::new(config);

        // WHEN it is invoked twice
        for _ in 0..2 {
            let error = function.invoke(json!({})).await;

            // THEN each attempt starts an instance, which fails its init
            match error {
                Err(InvokeError::Init {
                    error_type,
                    error_message,
                }) => {
                    assert_eq!(error_type, "Runtime.ExitError");
                    assert!(
                        error_message.starts_with("exit status: 1"),
                        "{error_message}"
                    );
                    assert!(
                        error_message.contains("probe init failed"),
                        "{error_message}"
                    );
                }
                other => panic!("expected an init error, got {other:?}"),
            }
        }
        let stats = function.stats();
        assert_eq!((stats.errors, stats.instances_started), (2, 2));
        assert!(stats.init_durations.is_empty());
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn injected_crashes_kill_the_instance_after_it_fetched_the_event() {
    bounded(async {
        let mut config = config("FlakyFunction");
        config.faults.crash_rate = 1.0;
        let function = Function::new(config);

        for _ in 0..2 {
            let crashed = function.invoke(json!({ "echo": 1 })).await;
            assert_eq!(crashed, Err(InvokeError::Crashed("signal: 9".to_owned())));
        }
        let stats = function.stats();
        assert_eq!((stats.crashes, stats.instances_started), (2, 2));
        // Both instances had initialised: the kill came after the event was fetched.
        assert_eq!(stats.init_durations.len(), 2);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_leaves_no_process_and_fails_what_was_in_flight() {
    bounded(async {
        // GIVEN a function with two idle instances and one busy one
        let mut config = config("StoppedFunction");
        config.max_instances = 3;
        let function = Function::new(config);
        let warm = join_all((0..2).map(|_| function.invoke(json!({ "sleep_ms": 200 })))).await;
        let pids: Vec<u32> = warm.iter().map(pid).collect();
        let busy = tokio::spawn({
            let function = function.clone();
            async move { function.invoke(json!({ "sleep_ms": 10_000 })).await }
        });
        // (the busy invocation runs on one of the warm instances)
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(pids.iter().all(|&pid| alive(pid)));

        // WHEN the function shuts down
        let started = tokio::time::Instant::now();
        function.shutdown().await;

        // THEN every process is gone (the busy one well before its 10 s sleep ends), the busy
        // invocation failed, and later ones do too
        assert!(started.elapsed() < Duration::from_secs(8));
        for pid in pids {
            assert!(!alive(pid), "process {pid} outlived the shutdown");
        }
        assert!(matches!(
            busy.await.expect("the invocation task"),
            Err(InvokeError::Unavailable(_))
        ));
        assert!(matches!(
            function.invoke(json!({})).await,
            Err(InvokeError::Unavailable(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_missing_binary_makes_the_function_unavailable() {
    bounded(async {
        let mut config = config("MissingFunction");
        config.binary = PathBuf::from("/nonexistent/bootstrap");
        let function = Function::new(config);

        let error = function.invoke(json!({})).await;

        assert!(
            matches!(&error, Err(InvokeError::Unavailable(message)) if message.contains("/nonexistent/bootstrap")),
            "{error:?}"
        );
        // The slot was given back: a second attempt fails the same way instead of waiting.
        assert!(matches!(
            function.invoke(json!({})).await,
            Err(InvokeError::Unavailable(_))
        ));
        function.shutdown().await;
    })
    .await;
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_processes_output_and_each_invocation_are_logged() {
    // The test runtime has one thread, so a thread-local subscriber sees every task.
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer({
            let captured = captured.clone();
            move || captured.clone()
        })
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // While a single Dispatch exists, tracing-core caches a callsite's interest from the
    // subscriber of whichever thread hits it first (tokio-rs/tracing#3611): a test on
    // another thread would silence this one. With a second Dispatch alive, interest is
    // combined over all of them and asked again of each thread's own subscriber.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());

    bounded(async {
        let function = Function::new(config("ChattyFunction"));
        function
            .invoke(json!({ "log": "hello from the probe" }))
            .await
            .expect("a response");
        // The output is forwarded by its own tasks; give them a moment.
        for _ in 0..100 {
            if captured.text().contains("(stderr)") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        function.shutdown().await;
    })
    .await;

    let logs = captured.text();
    let line = |needle: &str| {
        logs.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?} in:\n{logs}"))
            .to_owned()
    };
    let stdout = line("hello from the probe");
    assert!(
        stdout.contains("INFO")
            && stdout.contains("function=ChattyFunction")
            && stdout.contains("instance=1"),
        "{stdout}"
    );
    let stderr = line("hello from the probe (stderr)");
    assert!(stderr.contains("WARN"), "{stderr}");
    let init = line("instance initialised");
    assert!(init.contains("init_ms="), "{init}");
    let invocation = line("outcome=");
    assert!(
        invocation.contains("request_id=")
            && invocation.contains("duration_ms=")
            && invocation.contains("outcome=ok"),
        "{invocation}"
    );
}

/// Set in the gateway process of [`instances_die_with_a_sigkilled_gateway`]: the probe's path.
const GATEWAY_PROBE: &str = "DELTACAST_RUNTIME_TEST_GATEWAY_PROBE";
/// What the probe of [`gateway_for_the_sigkill_test`] logs once it is in its handler.
const IN_HANDLER: &str = "the probe is in its handler";

#[cfg(target_os = "linux")]
#[tokio::test]
async fn instances_die_with_a_sigkilled_gateway() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    bounded(async {
        // GIVEN a gateway (this test binary, running the test below) with a busy instance
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut gateway = tokio::process::Command::new(exe)
            .args([
                "--exact",
                "runtime::tests::gateway_for_the_sigkill_test",
                "--ignored",
                "--nocapture",
            ])
            .env(GATEWAY_PROBE, probe())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the gateway process");
        let stdout = gateway.stdout.take().expect("the gateway's stdout");
        let mut lines = BufReader::new(stdout).lines();
        let instance = loop {
            let line = lines
                .next_line()
                .await
                .expect("the gateway's output")
                .expect("the gateway printed its instance's pid");
            if let Some(pid) = line.strip_prefix("instance pid ") {
                break pid.parse::<u32>().expect("a pid");
            }
        };
        assert!(alive(instance));

        // WHEN the gateway is killed with SIGKILL (no chance to clean up)
        gateway.kill().await.expect("killing the gateway");

        // THEN the kernel kills the instance too
        for _ in 0..100 {
            if !alive(instance) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("instance {instance} outlived its SIGKILLed gateway");
    })
    .await;
}

/// The gateway of [`instances_die_with_a_sigkilled_gateway`]; does nothing on its own.
#[cfg(target_os = "linux")]
#[tokio::test]
#[ignore = "run by instances_die_with_a_sigkilled_gateway"]
async fn gateway_for_the_sigkill_test() {
    let Some(probe) = std::env::var_os(GATEWAY_PROBE) else {
        return;
    };
    // The instance's output is forwarded to `tracing`: that is how the gateway learns that
    // the probe is in its handler. (This process runs this test alone.)
    let captured = Captured::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .finish(),
    )
    .expect("the gateway process's only subscriber");
    let mut config = config_for("OrphanFunction", probe.into());
    config.max_instances = 1;
    config.timeout = TEST_LIMIT;
    let function = Function::new(config);
    let instance = pid(&function.invoke(json!({})).await);
    // Busy in its handler, the instance does not notice that its Runtime API is gone (an
    // idle one would: its `next` fails and lambda_runtime exits).
    tokio::spawn({
        let function = function.clone();
        async move {
            function
                .invoke(json!({ "log": IN_HANDLER, "sleep_ms": 60_000 }))
                .await
        }
    });
    bounded(async {
        while !captured.text().contains(IN_HANDLER) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    println!("instance pid {instance}");
    std::io::stdout().flush().expect("stdout");
    // Killed long before this ends.
    tokio::time::sleep(TEST_LIMIT).await;
}

/// Set in the environment of [`scripted_runtime`]: which script it plays.
const SCRIPT: &str = "DELTACAST_RUNTIME_TEST_SCRIPT";

/// A function binary that runs [`scripted_runtime`] of this test binary: a runtime that
/// speaks raw HTTP, to reach what `lambda_runtime` never sends.
fn scripted_function(name: &str, script: &str) -> Function {
    Function::new(scripted_config(name, script))
}

/// The configuration of [`scripted_function`].
fn scripted_config(name: &str, script: &str) -> FunctionConfig {
    static WRAPPER: OnceLock<PathBuf> = OnceLock::new();
    let wrapper = WRAPPER.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;

        let exe = std::env::current_exe().expect("the test binary's path");
        let name = exe.file_name().and_then(|name| name.to_str()).unwrap_or("test");
        // One wrapper per test binary, replaced atomically: runs do not pile up files.
        let wrapper = std::env::temp_dir().join(format!("{name}-scripted-runtime"));
        let draft = wrapper.with_extension(std::process::id().to_string());
        let text = format!(
            "#!/bin/sh\nexec '{}' --exact runtime::tests::scripted_runtime --ignored --nocapture --quiet\n",
            exe.display()
        );
        std::fs::write(&draft, text).expect("writing the wrapper");
        std::fs::set_permissions(&draft, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::rename(&draft, &wrapper).expect("installing the wrapper");
        wrapper
    });
    let mut config = config_for(name, wrapper.clone());
    config.env.insert(SCRIPT.to_owned(), script.to_owned());
    config
}

/// One HTTP/1.1 exchange over a fresh connection: status, lower-cased head, body.
fn http(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    use std::io::Read;

    let api = std::env::var("AWS_LAMBDA_RUNTIME_API").expect("AWS_LAMBDA_RUNTIME_API");
    let mut stream = std::net::TcpStream::connect(&api).expect("connecting to the Runtime API");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).expect("sending");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("receiving");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// `next`: the request id and the event.
fn next_event() -> (String, Value) {
    let (status, head, body) = http("GET", "/2018-06-01/runtime/invocation/next", &[], "");
    expect(status == 200, 20);
    let request_id = head
        .lines()
        .find_map(|line| line.strip_prefix("lambda-runtime-aws-request-id: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    (request_id, serde_json::from_str(&body).unwrap_or_default())
}

/// A failed expectation exits with `code`, which the test sees as a crash.
fn expect(condition: bool, code: i32) {
    if !condition {
        std::process::exit(code);
    }
}

/// The function of [`scripted_function`]; does nothing on its own.
#[test]
#[ignore = "the function process of the scripted runtime tests"]
fn scripted_runtime() {
    let Ok(script) = std::env::var(SCRIPT) else {
        return;
    };
    let invocation = |id: &str, what: &str| format!("/2018-06-01/runtime/invocation/{id}/{what}");
    match script.as_str() {
        "init_error" => {
            let report = r#"{"errorType":"Custom.InitFailed","errorMessage":"no config"}"#;
            let (status, _, _) = http("POST", "/2018-06-01/runtime/init/error", &[], report);
            expect(status == 202, 10);
            std::thread::sleep(TEST_LIMIT);
        }
        // Never asks for an event: the instance stays in its init.
        "hang_init" => std::thread::sleep(TEST_LIMIT),
        // Answers its first event, then hangs instead of asking for the next one.
        "hang_after_response" => {
            let (id, _) = next_event();
            let (status, _, _) = http("POST", &invocation(&id, "response"), &[], "{}");
            expect(status == 202, 17);
            std::thread::sleep(TEST_LIMIT);
        }
        // Starts a process of its own for every event and answers with its pid.
        "grandchild" => loop {
            let (id, _) = next_event();
            let child = std::process::Command::new("sleep")
                .arg(TEST_LIMIT.as_secs().to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            expect(child.is_ok(), 18);
            let pid = child.map_or(0, |child| child.id());
            let body = json!({ "grandchild": pid }).to_string();
            let (status, _, _) = http("POST", &invocation(&id, "response"), &[], &body);
            expect(status == 202, 19);
        },
        "protocol" => loop {
            let (id, event) = next_event();
            match event["step"].as_u64() {
                Some(1) => {
                    let (status, _, _) =
                        http("POST", &invocation("not-the-id", "response"), &[], "{}");
                    expect(status == 400, 11);
                    let (status, _, _) = http("POST", "/2018-06-01/runtime/init/error", &[], "{}");
                    expect(status == 403, 12);
                    let (status, _, _) = http("GET", "/2018-06-01/runtime/nothing", &[], "");
                    expect(status == 404, 13);
                    let (status, _, _) =
                        http("POST", &invocation(&id, "response"), &[], "not json");
                    expect(status == 202, 14);
                }
                Some(2) => {
                    let header = [("lambda-runtime-function-error-type", "Custom.Header")];
                    let (status, _, _) =
                        http("POST", &invocation(&id, "error"), &header, "plain text");
                    expect(status == 202, 15);
                }
                _ => {
                    let (status, _, _) = http("POST", &invocation(&id, "response"), &[], "");
                    expect(status == 202, 16);
                }
            }
        },
        _ => {}
    }
}

#[tokio::test]
async fn init_error_reports_fail_the_invocation_and_discard_the_instance() {
    bounded(async {
        let function = scripted_function("InitErrorFunction", "init_error");

        let error = function.invoke(json!({})).await;

        assert_eq!(
            error,
            Err(InvokeError::Init {
                error_type: "Custom.InitFailed".to_owned(),
                error_message: "no config".to_owned(),
            })
        );
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn the_runtime_api_answers_what_lambda_runtime_never_sends() {
    bounded(async {
        // GIVEN a runtime that probes the API with wrong ids, late init errors, unknown
        // paths, a response that is not JSON, a plain-text error and an empty response
        let function = scripted_function("ProtocolFunction", "protocol");

        // WHEN it is invoked three times
        let not_json = function.invoke(json!({ "step": 1 })).await;
        let plain_error = function.invoke(json!({ "step": 2 })).await;
        let empty = function.invoke(json!({ "step": 3 })).await;

        // THEN each answer is read leniently, and the one instance stays warm
        assert!(
            matches!(&not_json, Err(InvokeError::Function { error_type, .. }) if error_type == "Runtime.InvalidResponse"),
            "{not_json:?}"
        );
        assert_eq!(
            plain_error,
            Err(InvokeError::Function {
                error_type: "Custom.Header".to_owned(),
                error_message: "plain text".to_owned(),
            })
        );
        assert_eq!(empty, Ok(Value::Null));
        assert_eq!(function.stats().instances_started, 1);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_runtime_that_never_asks_for_its_next_event_times_out() {
    bounded(async {
        // GIVEN a warm instance whose runtime answered its first event, then hung instead of
        // asking for the next one
        let mut config = scripted_config("HungFunction", "hang_after_response");
        config.timeout = Duration::from_secs(1);
        config.max_instances = 1;
        let function = Function::new(config);
        assert_eq!(function.invoke(json!({})).await, Ok(json!({})));
        let hung = function.pids();
        assert_eq!(hung.len(), 1);

        // WHEN it is given the next invocation
        let timed_out = function.invoke(json!({})).await;

        // THEN the invocation times out (instead of waiting for ever), and the instance is
        // killed
        assert_eq!(timed_out, Err(InvokeError::Timeout(Duration::from_secs(1))));
        assert!(!alive(hung[0]), "the hung process {} still exists", hung[0]);
        let stats = function.stats();
        assert_eq!((stats.timeouts, stats.instances_started), (1, 1));
        assert!(function.pids().is_empty());
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_invocation_that_waits_too_long_for_an_instance_is_throttled() {
    bounded(async {
        // GIVEN a function of one instance, held by a runtime that never finishes its init
        // (the init limit, 10 s, frees it), and a queue limit of half a second
        let mut config = scripted_config("ThrottledFunction", "hang_init");
        config.max_instances = 1;
        let function = Function::with_queue_limit(config, Duration::from_millis(500));
        let holder = tokio::spawn({
            let function = function.clone();
            async move { function.invoke(json!({})).await }
        });
        while function.stats().instances_started == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // WHEN a second invocation arrives
        let throttled = function.invoke(json!({})).await;

        // THEN it fails with Lambda's throttling error, and leaves no waiter behind
        assert!(
            matches!(&throttled, Err(InvokeError::Unavailable(message))
                if message.starts_with("TooManyRequestsException: Rate Exceeded.")),
            "{throttled:?}"
        );
        assert_eq!(function.stats().throttles, 1);
        assert_eq!(function.waiting(), 0);
        function.shutdown().await;
        holder
            .await
            .expect("the holding invocation")
            .expect_err("never initialised");
    })
    .await;
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn processes_an_instance_started_die_with_it() {
    bounded(async {
        // GIVEN an instance whose runtime started a process of its own
        let function = scripted_function("ForkingFunction", "grandchild");
        let response = function.invoke(json!({})).await.expect("a response");
        let grandchild = response["grandchild"]
            .as_u64()
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|&pid| pid > 0)
            .expect("the grandchild's pid");
        assert!(alive(grandchild));

        // WHEN the function shuts down
        function.shutdown().await;

        // THEN that process is killed too (it is in the instance's process group)
        for _ in 0..500 {
            if !alive(grandchild) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("process {grandchild}, started by an instance, outlived it");
    })
    .await;
}

#[test]
fn request_ids_are_random_version_4_uuids() {
    let id = super::uuid_v4();
    let groups: Vec<&str> = id.split('-').collect();
    assert_eq!(
        groups.iter().map(|group| group.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12],
        "{id}"
    );
    assert!(
        id.chars()
            .all(|c| c == '-' || matches!(c, '0'..='9' | 'a'..='f')),
        "{id}"
    );
    assert!(groups[2].starts_with('4'), "version 4: {id}");
    assert!(
        groups[3].starts_with(['8', '9', 'a', 'b']),
        "RFC 4122 variant: {id}"
    );
    assert_ne!(id, super::uuid_v4());
}
