//! The http function's own settings (the table's are [`deltacast::config::Settings`]):
//! how long a publish waits for the sequencer, and how an event stream polls, beats and
//! ends. Each is read once at init; a bad value fails the init naming the variable.

use std::time::Duration;

use deltacast::config::{ConfigError, Env};

/// How the http function waits and streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// `HTTP_PUBLISH_WAIT_MS` (10,000): how long a publish handed to the sequencer (a busy
    /// channel) is waited for before the answer is `503 in_flight` (retry with the same
    /// id: it is acknowledged once).
    pub publish_wait: Duration,
    /// The event streams'.
    pub sse: SseSettings,
}

/// How an event stream behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseSettings {
    /// `SSE_POLL_MS` (250): how often a stream reads its channel for new deltas.
    pub poll: Duration,
    /// `SSE_HEARTBEAT_SECONDS` (15): how long a stream may stay silent before it sends
    /// a comment line, so proxies and clients see it alive.
    pub heartbeat: Duration,
    /// `SSE_MAX_SECONDS` (840): how long one stream lasts at most; it also ends
    /// [`DEADLINE_MARGIN`] before the invocation's deadline, whichever comes first.
    pub max: Duration,
    /// `SSE_RETRY_MS` (1,000): the `retry:` hint a stream ends with, how long the client
    /// waits before it reconnects (and resumes with `Last-Event-ID`).
    pub retry_ms: u64,
    /// `SSE_MAX_STREAMS_PER_USER` (10): streams one user may hold open at once (each holds
    /// a Lambda execution environment).
    pub max_streams_per_user: u32,
}

/// How long before the invocation's deadline a stream ends, so it ends cleanly (its
/// `retry:` hint sent) instead of being cut by the timeout.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

impl HttpSettings {
    /// Reads the settings from `env`.
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            publish_wait: Duration::from_millis(within(
                env,
                "HTTP_PUBLISH_WAIT_MS",
                10_000,
                100..=60_000,
            )?),
            sse: SseSettings {
                poll: Duration::from_millis(within(env, "SSE_POLL_MS", 250, 50..=10_000)?),
                heartbeat: Duration::from_secs(within(env, "SSE_HEARTBEAT_SECONDS", 15, 1..=300)?),
                max: Duration::from_secs(within(env, "SSE_MAX_SECONDS", 840, 1..=900)?),
                retry_ms: within(env, "SSE_RETRY_MS", 1_000, 0..=60_000)?,
                max_streams_per_user: within(env, "SSE_MAX_STREAMS_PER_USER", 10, 1..=1_000)?
                    as u32,
            },
        })
    }
}

/// A whole number variable within `range`, or `default` when unset.
fn within(
    env: &Env,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let value = env.number(name, default)?;
    if range.contains(&value) {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        name,
        reason: format!(
            "{value} is out of range: {} to {}",
            range.start(),
            range.end()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_without_variables() {
        let settings = HttpSettings::from(&Env::from_pairs::<String>([])).unwrap();
        assert_eq!(settings.publish_wait, Duration::from_secs(10));
        assert_eq!(settings.sse.poll, Duration::from_millis(250));
        assert_eq!(settings.sse.heartbeat, Duration::from_secs(15));
        assert_eq!(settings.sse.max, Duration::from_secs(840));
        assert_eq!(settings.sse.retry_ms, 1000);
        assert_eq!(settings.sse.max_streams_per_user, 10);
    }

    #[test]
    fn a_value_out_of_range_names_the_variable_and_the_range() {
        let env = Env::from_pairs([("SSE_MAX_SECONDS", "901".to_owned())]);
        let error = HttpSettings::from(&env).unwrap_err().to_string();
        assert_eq!(
            error,
            "environment variable SSE_MAX_SECONDS is invalid: 901 is out of range: 1 to 900"
        );
        let env = Env::from_pairs([("SSE_POLL_MS", "fast".to_owned())]);
        assert!(
            HttpSettings::from(&env)
                .unwrap_err()
                .to_string()
                .contains("SSE_POLL_MS")
        );
    }
}
