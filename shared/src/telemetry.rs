//! Logging for the functions: `tracing` with structured fields, JSON when the function's
//! log format is JSON (`AWS_LAMBDA_LOG_FORMAT`, set by the template), level from
//! `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`. Tokens and message payloads are never logged.

/// Installs the global subscriber; call once at the top of `main`.
pub fn init() {
    lambda_runtime::tracing::init_default_subscriber();
}
