//! What a test logged: a `tracing` subscriber, for the current thread only, that writes
//! every level as text into a buffer the test can read.

use std::sync::{Arc, Mutex};

/// The captured text, shared with the subscriber's writer.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("the capture")).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("the capture").extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logging in the current thread is captured while the guard lives (a current-thread
/// tokio test runs all its tasks here).
pub struct Capture {
    /// What was logged.
    pub logs: Logs,
    _guard: tracing::subscriber::DefaultGuard,
    // Other test threads run without a subscriber. With a second dispatcher alive,
    // tracing asks each thread's own subscriber instead of caching one answer for all
    // (tokio-rs/tracing#3611).
    _second: tracing::Dispatch,
}

/// Starts capturing this thread's logs, every level, without colours or times.
pub fn capture() -> Capture {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    Capture {
        logs,
        _guard: tracing::subscriber::set_default(subscriber),
        _second: tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
    }
}
