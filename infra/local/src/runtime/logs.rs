//! A process's stdout and stderr, forwarded to `tracing` line by line with the function
//! and instance as fields; lines are capped so a process cannot make the gateway buffer
//! without bound, and the last stderr line is kept to explain a failed init. Every line
//! also goes to the instance's [`Output`], which keeps it only for an invocation that asked
//! for a log tail.
//!
//! When the function has a metrics registry, a stdout line that is an EMF document goes
//! there instead (logged at debug only), as CloudWatch Logs would take it for a metric;
//! one meant as EMF but invalid is logged as a warning with the rule it breaks, never
//! with the line itself.

use std::{io, sync::Arc};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tracing::{debug, info, warn};

use super::shared::Shared;
use super::tail::Output;
use crate::metrics::{Capture, Registry};

/// Longer log lines are cut: a process cannot make the gateway buffer without bound.
const MAX_LOG_LINE: usize = 16 * 1024;
/// Longer stdout lines are cut when they may be EMF documents: CloudWatch takes log events
/// of up to 256 KB, and a cut document is an invalid one.
const MAX_EMF_LINE: usize = 256 * 1024;

#[derive(Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Forwards the process's output to `tracing` (and to `tail`), line by line, until the
/// pipe closes; returns the last non-empty line.
pub(super) async fn forward_lines(
    output: impl AsyncRead + Unpin,
    shared: Arc<Shared>,
    tail: Arc<Output>,
    instance: u64,
    stream: Stream,
) -> Option<String> {
    let mut reader = BufReader::new(output);
    let mut buffer = Vec::new();
    let mut last = None;
    let metrics = match stream {
        Stream::Stdout => shared.metrics.get().cloned(),
        Stream::Stderr => None,
    };
    let cap = if metrics.is_some() {
        MAX_EMF_LINE
    } else {
        MAX_LOG_LINE
    };
    loop {
        buffer.clear();
        match read_line_capped(&mut reader, &mut buffer, cap).await {
            Ok(0) | Err(_) => break last,
            Ok(_) => {}
        }
        // Before the next read: a tail waits for the reader to ask for more (see `drain`).
        tail.line(&buffer);
        let function = &shared.config.name;
        if let Some(metrics) = &metrics
            && captured(metrics, &buffer, function, instance)
        {
            continue;
        }
        let line = String::from_utf8_lossy(&buffer[..buffer.len().min(MAX_LOG_LINE)]);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
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

/// Hands `line` to `metrics` if it is meant as EMF, and says whether it was.
fn captured(metrics: &Registry, line: &[u8], function: &str, instance: u64) -> bool {
    let line = String::from_utf8_lossy(line);
    let line = line.trim_end_matches(['\n', '\r']);
    match metrics.capture(line) {
        Capture::NotEmf => false,
        Capture::Recorded => {
            debug!(function = %function, instance, "{line}");
            true
        }
        Capture::Invalid(error) => {
            warn!(function = %function, instance, %error, "invalid EMF line, not counted");
            true
        }
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

#[cfg(test)]
mod capture_tests {
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use tokio_util::{sync::CancellationToken, task::TaskTracker};

    use super::{Output, Shared, Stream, forward_lines};
    use crate::metrics::Registry;
    use crate::runtime::{FunctionConfig, FunctionFaults};

    const EMF: &str = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"deltacast","Dimensions":[["function"]],"Metrics":[{"Name":"Deliveries","Unit":"Count"}]}]},"function":"fanout","Deliveries":40}"#;

    fn shared(metrics: Option<Arc<Registry>>) -> Arc<Shared> {
        let shared = Shared {
            config: FunctionConfig {
                name: "FanoutFunction".into(),
                binary: "fanout".into(),
                env: Default::default(),
                timeout: Duration::from_secs(1),
                memory_mb: 128,
                max_instances: 1,
                faults: FunctionFaults::default(),
            },
            arn: "arn".into(),
            record: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            metrics: OnceLock::new(),
        };
        if let Some(metrics) = metrics {
            let _ = shared.metrics.set(metrics);
        }
        Arc::new(shared)
    }

    #[tokio::test]
    async fn emf_lines_on_stdout_go_to_the_registry_and_the_rest_to_the_log() {
        let registry = Arc::new(Registry::new());
        let output = format!("INFO started\n{EMF}\n{{\"_aws\":{{}}}}\n{EMF}\n");
        let last = forward_lines(
            output.as_bytes(),
            shared(Some(registry.clone())),
            Arc::new(Output::default()),
            1,
            Stream::Stdout,
        )
        .await;
        assert_eq!(
            registry.counter("Deliveries", &[("function", "fanout")]),
            80.0
        );
        assert_eq!(registry.snapshot().invalid_lines, 1);
        assert_eq!(
            last.as_deref(),
            Some("INFO started"),
            "EMF lines are not log lines"
        );
    }

    #[tokio::test]
    async fn without_a_registry_or_on_stderr_emf_lines_are_log_lines() {
        let registry = Arc::new(Registry::new());
        let output = format!("{EMF}\n");
        let last = forward_lines(
            output.as_bytes(),
            shared(None),
            Arc::new(Output::default()),
            1,
            Stream::Stdout,
        )
        .await;
        assert_eq!(last.as_deref(), Some(EMF));
        let last = forward_lines(
            output.as_bytes(),
            shared(Some(registry.clone())),
            Arc::new(Output::default()),
            1,
            Stream::Stderr,
        )
        .await;
        assert_eq!(last.as_deref(), Some(EMF));
        assert_eq!(registry.snapshot(), Default::default());
    }

    #[tokio::test]
    async fn an_emf_line_longer_than_a_log_line_is_still_read_whole() {
        let registry = Arc::new(Registry::new());
        let padding = "x".repeat(20 * 1024);
        let line = EMF.replace(
            r#""Deliveries":40"#,
            &format!(r#""Deliveries":40,"pad":"{padding}""#),
        );
        let output = format!("{line}\n");
        forward_lines(
            output.as_bytes(),
            shared(Some(registry.clone())),
            Arc::new(Output::default()),
            1,
            Stream::Stdout,
        )
        .await;
        assert_eq!(registry.counter("Deliveries", &[]), 40.0);
    }
}
