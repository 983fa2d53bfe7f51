//! Logging (and, through [`crate::metrics`], metrics) for the functions: `tracing` with structured fields, JSON when the function's
//! log format is JSON (`AWS_LAMBDA_LOG_FORMAT`, set by the template), level from
//! `AWS_LAMBDA_LOG_LEVEL` or `RUST_LOG`. Tokens and message payloads are never logged.
//!
//! `lambda_runtime`'s default subscriber applies the level to every crate, and at `TRACE`
//! the dependencies log what passes through them: `lambda_runtime` the raw event (the
//! frame with its `data`, the authorizer request with its token, the stream records with
//! their deltas), the AWS SDK every request and response body (deltas written and read).
//! So the level reaches our own crates only; dependencies stop at `DEBUG`, whatever the
//! variables say (`tests/promises.rs` runs the stack at `trace` and looks for a payload).

use std::str::FromStr;

use lambda_runtime::tracing::subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use lambda_runtime::tracing::subscriber::layer::SubscriberExt;
use lambda_runtime::tracing::subscriber::util::SubscriberInitExt;
use lambda_runtime::tracing::subscriber::{Layer, fmt, registry};
use tracing::{Level, Metadata};

/// Our crates: the library and the function binaries, which may log at any level.
const OWN_CRATES: [&str; 9] = [
    "deltacast",
    "deltacast_message",
    "authorizer",
    "connect",
    "disconnect",
    "fanout",
    "message",
    "sequencer",
    "http",
];

/// The most verbose level a dependency may log at.
const DEPENDENCY_LEVEL: Level = Level::DEBUG;

/// Whether a span or event may be logged at all: ours at any level, a dependency's only
/// up to [`DEPENDENCY_LEVEL`].
fn may_log(metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let own = OWN_CRATES.iter().any(|name| {
        target
            .strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    own || *metadata.level() <= DEPENDENCY_LEVEL
}

/// Installs the global subscriber and the metrics recorder ([`crate::metrics::init`]) of
/// the function `function` (its role: `message`, `fanout`, ...); call once at the top of
/// `main`.
pub fn init(function: &'static str) {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    let level =
        LevelFilter::from_str(level.as_deref().unwrap_or("INFO")).unwrap_or(LevelFilter::INFO);
    let levels = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let format = fmt::layer().with_target(false).without_time();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let format = if json {
        format.json().boxed()
    } else {
        format.boxed()
    };
    registry()
        .with(format.with_filter(filter_fn(may_log)).with_filter(levels))
        .init();
    // After the subscriber, so that a recorder that cannot be installed is logged.
    crate::metrics::init(function);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::callsite::Identifier;
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    struct Site;
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!()
        }
    }
    static SITE: Site = Site;

    fn metadata(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&SITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn dependencies_stop_at_debug_and_our_crates_do_not() {
        for target in [
            "deltacast::store",
            "message::actions::publish",
            "fanout",
            "authorizer::handler",
            "sequencer::handler",
        ] {
            assert!(may_log(&metadata(target, Level::TRACE)), "{target}");
        }
        for target in [
            "lambda_runtime::layers::api_response",
            "aws_smithy_runtime::client",
            "hyper_util",
            "messages",
            "deltacastle",
        ] {
            assert!(!may_log(&metadata(target, Level::TRACE)), "{target}");
            assert!(may_log(&metadata(target, Level::DEBUG)), "{target}");
        }
    }
}
