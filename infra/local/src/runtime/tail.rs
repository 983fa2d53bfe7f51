//! The log of one invocation, for its tail (`X-Amz-Log-Type: Tail`): the lines its
//! instance's process wrote while it ran, framed as Lambda frames them (`START`, `END`,
//! `REPORT`), cut to the last [`LOG_TAIL_BYTES`].
//!
//! An instance runs one invocation at a time, so each instance has one [`Output`]: the log
//! of the invocation it runs now, set when the pool hands it a job and replaced with the
//! next one. The log forwarders hand it every line; it keeps them only while the
//! invocation asked for a tail, so that the others pay one atomic load per line.
//!
//! **The tail rule.** A line written just before the response may be read just after it
//! (the pipes and the Runtime API are separate tasks). So when the invocation has ended,
//! and before its instance goes back to the pool, [`Output::settle`] waits until every
//! pipe has been forwarded up to that moment (see `drain`), or at most [`SETTLE_LIMIT`]; a
//! line not ended by a newline by then is not in the tail.

use std::{
    collections::VecDeque,
    fmt::Write as _,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tokio::time::Instant;

use super::drain::Progress;
use crate::invoke::{InvokeError, LOG_TAIL_BYTES};

/// How long a tail waits at most for the lines written before the response.
pub(super) const SETTLE_LIMIT: Duration = Duration::from_millis(50);
/// How often a tail looks again whether the pipes have been read.
const SETTLE_POLL: Duration = Duration::from_millis(1);

/// One instance's output as a tail sees it: the log the lines go to, if the invocation it
/// runs keeps one, and how far each of its pipes has been read.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// Whether an invocation keeps a log now; read for every line without the lock.
    collecting: AtomicBool,
    log: Mutex<Option<Arc<InvocationLog>>>,
    pipes: Vec<Arc<Progress>>,
}

impl Output {
    /// The output of an instance whose pipes are read as `pipes` say.
    pub(super) fn new(pipes: Vec<Arc<Progress>>) -> Self {
        Self {
            pipes,
            ..Self::default()
        }
    }

    fn log(&self) -> MutexGuard<'_, Option<Arc<InvocationLog>>> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The instance takes a job: its lines now go to `log` (to nothing for `None`).
    pub(super) fn collect_into(&self, log: Option<Arc<InvocationLog>>) {
        let mut current = self.log();
        self.collecting.store(log.is_some(), Ordering::Release);
        *current = log;
    }

    /// A line the process wrote (with or without its newline).
    pub(super) fn line(&self, line: &[u8]) {
        if !self.collecting.load(Ordering::Acquire) {
            return;
        }
        if let Some(log) = self.log().as_ref() {
            log.push(line);
        }
    }

    /// Waits until every pipe has been forwarded up to now, or [`SETTLE_LIMIT`] passed.
    pub(super) async fn settle(&self) {
        let limit = Instant::now() + SETTLE_LIMIT;
        while !self.pipes.iter().all(|pipe| pipe.caught_up()) && Instant::now() < limit {
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
}

/// The lines of one invocation that asked for a tail: only the last ones, enough to fill
/// a tail.
#[derive(Debug, Default)]
pub(super) struct InvocationLog {
    lines: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    lines: VecDeque<String>,
    /// The bytes of `lines`, a newline each included.
    bytes: usize,
}

impl InvocationLog {
    fn lines(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `line` (its end, if it is longer than a tail), forgetting lines that can no
    /// longer be in the tail.
    fn push(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = &line[line.len().saturating_sub(LOG_TAIL_BYTES)..];
        let line = String::from_utf8_lossy(line).into_owned();
        let mut lines = self.lines();
        lines.bytes += line.len() + 1;
        lines.lines.push_back(line);
        while let Some(first) = lines.lines.front() {
            let rest = lines.bytes - (first.len() + 1);
            if rest < LOG_TAIL_BYTES {
                break;
            }
            lines.bytes = rest;
            lines.lines.pop_front();
        }
    }

    /// The tail of the invocation `request_id` that ended with `result` after `duration`,
    /// on a function of `memory_mb`: its log as Lambda writes it, at most
    /// [`LOG_TAIL_BYTES`] from its end.
    pub(super) fn tail(
        &self,
        request_id: &str,
        result: &Result<Value, InvokeError>,
        duration: Duration,
        memory_mb: u64,
    ) -> String {
        let mut log = format!("START RequestId: {request_id} Version: $LATEST\n");
        for line in &self.lines().lines {
            log.push_str(line);
            log.push('\n');
        }
        match result {
            Err(error @ InvokeError::Timeout(_)) => {
                let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
                let _ = writeln!(log, "{now} {request_id} {error}");
            }
            Err(error @ InvokeError::Crashed(_)) => {
                let _ = writeln!(log, "RequestId: {request_id} Error: {error}");
                log.push_str("Runtime.ExitError\n");
            }
            _ => {}
        }
        let millis = duration.as_secs_f64() * 1000.0;
        let billed = duration.as_micros().div_ceil(1000).max(1);
        let _ = write!(
            log,
            "END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {millis:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\t\n"
        );
        last_bytes(log, LOG_TAIL_BYTES)
    }
}

/// The end of `text`, at most `limit` bytes, starting on a character.
fn last_bytes(text: String, limit: usize) -> String {
    let mut start = text.len().saturating_sub(limit);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn log_of(lines: &[&str]) -> Arc<InvocationLog> {
        let output = Output::default();
        let log = Arc::new(InvocationLog::default());
        output.collect_into(Some(log.clone()));
        for line in lines {
            output.line(line.as_bytes());
        }
        log
    }

    #[test]
    fn a_tail_frames_the_functions_lines_as_lambda_does() {
        let log = log_of(&["hello\n", "from the probe (stderr)\r\n"]);
        let tail = log.tail("r-1", &Ok(json!({})), Duration::from_micros(1_500), 128);
        assert_eq!(
            tail,
            "START RequestId: r-1 Version: $LATEST\nhello\nfrom the probe (stderr)\n\
             END RequestId: r-1\nREPORT RequestId: r-1\tDuration: 1.50 ms\t\
             Billed Duration: 2 ms\tMemory Size: 128 MB\t\n"
        );
    }

    #[test]
    fn a_timeout_or_a_crash_is_written_before_the_end_as_lambda_writes_it() {
        let log = log_of(&[]);
        let timed_out = log.tail(
            "r-2",
            &Err(InvokeError::Timeout(Duration::from_secs(3))),
            Duration::from_secs(3),
            128,
        );
        assert!(
            timed_out.contains(" r-2 Task timed out after 3.00 seconds\nEND RequestId: r-2\n"),
            "{timed_out}"
        );
        let crashed = log.tail(
            "r-3",
            &Err(InvokeError::Crashed("signal: 9".into())),
            Duration::ZERO,
            128,
        );
        assert!(
            crashed.contains(
                "RequestId: r-3 Error: Runtime exited with error: signal: 9\nRuntime.ExitError\nEND"
            ),
            "{crashed}"
        );
    }

    #[test]
    fn a_long_log_keeps_its_last_4_kb_with_the_end_and_the_report() {
        let line = "é".repeat(100);
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), 200).collect();
        let log = log_of(&lines);
        assert!(
            log.lines().bytes < 2 * LOG_TAIL_BYTES,
            "old lines are forgotten"
        );
        let tail = log.tail("r-4", &Ok(json!({})), Duration::ZERO, 128);
        assert!(tail.len() <= LOG_TAIL_BYTES);
        assert!(tail.len() > LOG_TAIL_BYTES - 4, "only a character is cut");
        assert!(!tail.contains("START"));
        assert!(tail.ends_with("Memory Size: 128 MB\t\n"));
        assert!(tail.contains("END RequestId: r-4\n"));

        let huge = "x".repeat(3 * LOG_TAIL_BYTES);
        let log = log_of(&[&huge]);
        assert_eq!(
            log.lines().bytes,
            LOG_TAIL_BYTES + 1,
            "a long line keeps its end"
        );
    }

    #[test]
    fn lines_are_kept_only_while_an_invocation_collects() {
        let output = Output::default();
        output.line(b"before\n");
        let log = Arc::new(InvocationLog::default());
        output.collect_into(Some(log.clone()));
        output.line(b"during\n");
        output.collect_into(None);
        output.line(b"after\n");
        assert_eq!(log.lines().lines, ["during"]);
    }
}
