//! A DynamoDB Local that belongs to the section: one for the ceiling measurements, one
//! for its two stacks (the second takes over the first one's table), each started from
//! `infra/dynamodb-local/dynamodb-local run` on a free port and killed when dropped.
//!
//! Why not the run's shared one, or a new table per stack: DynamoDB Local's writes slow
//! down for every table once *another* table (live or deleted) holds many stream records. Measured here
//! (2026-12-01, 16 writers of small `PutItem`s): ~400 puts/s on a fresh instance, ~78/s
//! beside another streamed table holding 15,000 stream records, the same after that table
//! was deleted; a table's own stream records did not slow it (0 to 17,500: 320-520/s), nor
//! did 20,000 items of an unstreamed table. The first stack's runs leave tens of
//! thousands of stream records, so a second stack on a new table of the same instance (the
//! overload run) saw writes take 300-900 ms (about 100 writes/s in all) and failed on
//! DynamoDB Local, not on the publish path. A second instance of its own was no better: a
//! new JVM is slow for long after its start; so the second stack reuses the first's warm
//! instance *and* its table (reading the stream from its tip).

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// How long a fresh instance may take to answer (the launcher installs nothing when
/// `make bench` has run `dynamodb-local install` already; Java starts in a few seconds).
const START_LIMIT: Duration = Duration::from_secs(90);

/// A running DynamoDB Local that belongs to this run.
pub struct FreshDynamoDb {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl FreshDynamoDb {
    /// Starts one on a free port of 127.0.0.1 and waits until it answers.
    pub async fn start(root: &Path) -> Result<Self, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port for DynamoDB Local: {e}"))?
            .port();
        let launcher = root.join("infra/dynamodb-local/dynamodb-local");
        // `run` execs Java, so the child is the JVM itself and killing it stops it.
        let mut child = Command::new(&launcher)
            .args(["run", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", launcher.display()))?;
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let started = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                return Ok(Self {
                    child,
                    endpoint: format!("http://{address}"),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "DynamoDB Local on port {port} exited at start: {status}"
                ));
            }
            if started.elapsed() > START_LIMIT {
                return Err(format!(
                    "DynamoDB Local on port {port} did not answer within {START_LIMIT:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops it and waits for the process to end.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
