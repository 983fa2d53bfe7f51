//! A process's stdout and stderr, forwarded to `tracing` line by line with the function
//! and instance as fields; lines are capped so a process cannot make the gateway buffer
//! without bound, and the last stderr line is kept to explain a failed init.

use std::{io, sync::Arc};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tracing::{info, warn};

use super::shared::Shared;

/// Longer log lines are cut: a process cannot make the gateway buffer without bound.
const MAX_LOG_LINE: usize = 16 * 1024;

#[derive(Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Forwards the process's output to `tracing`, line by line, until the pipe closes;
/// returns the last non-empty line.
pub(super) async fn forward_lines(
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
