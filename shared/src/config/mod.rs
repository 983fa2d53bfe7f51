//! Configuration from environment variables, read once per process. Every variable,
//! its default and its meaning is listed in the README's Configuration section.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use crate::protocol::{FrameLimits, MAX_CHANNEL_LEN, MAX_DATA_DEPTH, MAX_ID_LEN};

mod state;

pub use state::{MAX_STATE_BYTES, MAX_STATE_SHARDS, StateSettings};

/// A token bucket: `per_second` tokens refill continuously, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained rate.
    pub per_second: f64,
    /// Bucket size: how many may come at once.
    pub burst: f64,
}

/// A configuration variable is missing or unusable. Functions fail their init with it,
/// so a misconfigured deployment is loud at the first invocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set to something unusable.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A source of configuration variables: the process environment, or a fixed map in tests.
pub struct Env(HashMap<String, String>);

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self(std::env::vars().collect())
    }

    /// A fixed set of variables.
    pub fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, String)>) -> Self {
        Self(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// A variable that is set and not empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.0.get(name).filter(|v| !v.is_empty()).cloned()
    }

    /// A variable that must be set.
    pub fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.optional(name).ok_or(ConfigError::Missing(name))
    }

    /// A numeric variable with a default.
    pub fn number<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(text) => text.trim().parse().map_err(|e| ConfigError::Invalid {
                name,
                reason: format!("{text:?}: {e}"),
            }),
        }
    }

    /// A positive whole-number variable with a default; a value too large for `T` is
    /// refused by the parse (never truncated).
    fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialEq + From<u8>,
        T::Err: std::fmt::Display,
    {
        let value = self.number(name, default)?;
        if value == T::from(0) {
            return Err(ConfigError::Invalid {
                name,
                reason: "must be greater than 0".into(),
            });
        }
        Ok(value)
    }
}

/// The settings shared by the functions that touch the table.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `TABLE_NAME`: the single DynamoDB table.
    pub table_name: String,
    /// `RETENTION_SECONDS` (86400): how long deltas stay readable.
    pub retention: Duration,
    /// `CONNECTION_TTL_SECONDS` (10800): when connection and subscription items expire.
    pub connection_ttl: Duration,
    /// `CATCHUP_LIMIT` (500): most deltas replayed by one `subscribe`.
    pub catchup_limit: u32,
    /// `HISTORY_DEFAULT_LIMIT` (100): page size when `history` gives no `limit`.
    pub history_default_limit: u32,
    /// `MAX_SUBSCRIPTIONS` (100): channels one connection may subscribe to.
    pub max_subscriptions: u32,
    /// `MAX_FRAME_BYTES` (32768), `MAX_DATA_BYTES` (24576), `MAX_DATA_DEPTH` (32),
    /// `HISTORY_MAX_LIMIT` (1000), `MAX_CHANNEL_LENGTH` (128), `MAX_ID_LENGTH` (64).
    pub frame_limits: FrameLimits,
    /// `RATE_LIMIT_PER_SECOND` (20) and `RATE_LIMIT_BURST` (50): request tokens per
    /// connection (what each request costs is in [`crate::cost`]).
    pub rate_limit: RateLimit,
    /// `USER_RATE_LIMIT_PER_SECOND` (40) and `USER_RATE_LIMIT_BURST` (100): request tokens
    /// per user across all their connections; `USER_RATE_LIMIT_BURST=0` turns it off.
    pub user_rate_limit: Option<RateLimit>,
    /// `CHANNEL_RATE_LIMIT_PER_SECOND` (100) and `CHANNEL_RATE_LIMIT_BURST` (200):
    /// publishes per channel, from all publishers together; `CHANNEL_RATE_LIMIT_BURST=0`
    /// turns it off.
    pub channel_rate_limit: Option<RateLimit>,
    /// `PUBLISH_LEASE_MS` (15000): how long a publish the sequencer has not stored holds
    /// its id before a retry may take it over (safe at any time: a message stored
    /// meanwhile is found, not stored again); longer than a stream batch usually takes.
    pub publish_lease: Duration,
    /// `MANAGEMENT_ENDPOINT`: the API Gateway Management API endpoint
    /// (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`).
    pub management_endpoint: Option<String>,
    /// `FANOUT_CONCURRENCY` (256): posts in flight at once in one fan-out invocation.
    pub fanout_concurrency: usize,
    /// `PUSH_RETRY_ATTEMPTS` (5): tries per post before a delta counts as failed.
    pub push_attempts: u32,
    /// `PUSH_RETRY_BASE_MS` (25): first backoff; doubled each retry, with full jitter.
    pub push_backoff_base: Duration,
    /// Live state: `STATE_NAMESPACES`, `STATE_PATCH_RATE`, `STATE_SHARDS`,
    /// `STATE_MAX_BYTES`, `STATE_OP_TTL_SECONDS` (see [`StateSettings`]).
    pub state: StateSettings,
}

impl Settings {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from(&Env::from_process())
    }

    /// Reads the settings of a function that posts without a request to take the endpoint
    /// from (the stream consumers): `MANAGEMENT_ENDPOINT` is required.
    pub fn with_management_endpoint() -> Result<(Self, String), ConfigError> {
        let settings = Self::from_env()?;
        let endpoint = settings
            .management_endpoint
            .clone()
            .ok_or(ConfigError::Missing("MANAGEMENT_ENDPOINT"))?;
        Ok((settings, endpoint))
    }

    /// Reads the settings from `env`.
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let max_data_bytes = env.positive::<usize>("MAX_DATA_BYTES", 24 * 1024)?;
        let max_frame_bytes = env.positive::<usize>("MAX_FRAME_BYTES", 32 * 1024)?;
        if max_data_bytes > 30 * 1024 {
            return Err(ConfigError::Invalid {
                name: "MAX_DATA_BYTES",
                reason: "a delta must fit one 32 KB API Gateway frame with its envelope; use at most 30720".into(),
            });
        }
        let max_data_depth = env.positive::<usize>("MAX_DATA_DEPTH", 32)?;
        if max_data_depth > MAX_DATA_DEPTH {
            return Err(ConfigError::Invalid {
                name: "MAX_DATA_DEPTH",
                reason: format!(
                    "subscribers that parse with serde_json refuse deeper JSON; use at most {MAX_DATA_DEPTH}"
                ),
            });
        }
        let history_max_limit = env.positive::<u32>("HISTORY_MAX_LIMIT", 1000)?;
        let max_channel_len = env.positive("MAX_CHANNEL_LENGTH", MAX_CHANNEL_LEN)?;
        if max_channel_len > MAX_CHANNEL_LEN {
            return Err(ConfigError::Invalid {
                name: "MAX_CHANNEL_LENGTH",
                reason: format!("the protocol allows at most {MAX_CHANNEL_LEN}"),
            });
        }
        let max_id_len = env.positive("MAX_ID_LENGTH", MAX_ID_LEN)?;
        if max_id_len > MAX_ID_LEN {
            return Err(ConfigError::Invalid {
                name: "MAX_ID_LENGTH",
                reason: format!("the protocol allows at most {MAX_ID_LEN}"),
            });
        }
        let connection_rate =
            rate_limit(env, "RATE_LIMIT_PER_SECOND", 20.0, "RATE_LIMIT_BURST", 50.0)?;
        let user_rate = match env.number::<f64>("USER_RATE_LIMIT_BURST", 100.0)? {
            // 0 turns the per-user bucket off (and saves its write per request).
            0.0 => None,
            _ => Some(rate_limit(
                env,
                "USER_RATE_LIMIT_PER_SECOND",
                40.0,
                "USER_RATE_LIMIT_BURST",
                100.0,
            )?),
        };
        let channel_rate = match env.number::<f64>("CHANNEL_RATE_LIMIT_BURST", 200.0)? {
            0.0 => None,
            _ => Some(rate_limit(
                env,
                "CHANNEL_RATE_LIMIT_PER_SECOND",
                100.0,
                "CHANNEL_RATE_LIMIT_BURST",
                200.0,
            )?),
        };
        Ok(Self {
            table_name: env.required("TABLE_NAME")?,
            retention: Duration::from_secs(env.positive("RETENTION_SECONDS", 86_400)?),
            connection_ttl: Duration::from_secs(env.positive("CONNECTION_TTL_SECONDS", 10_800)?),
            catchup_limit: env.positive::<u32>("CATCHUP_LIMIT", 500)?,
            history_default_limit: env
                .positive::<u32>("HISTORY_DEFAULT_LIMIT", 100)?
                .min(history_max_limit),
            max_subscriptions: env.positive::<u32>("MAX_SUBSCRIPTIONS", 100)?,
            frame_limits: FrameLimits {
                max_frame_bytes,
                max_data_bytes,
                max_data_depth,
                max_history_limit: history_max_limit,
                max_channel_len,
                max_id_len,
            },
            rate_limit: connection_rate,
            user_rate_limit: user_rate,
            channel_rate_limit: channel_rate,
            publish_lease: Duration::from_millis(env.positive("PUBLISH_LEASE_MS", 15_000)?),
            management_endpoint: env.optional("MANAGEMENT_ENDPOINT"),
            fanout_concurrency: env.positive::<usize>("FANOUT_CONCURRENCY", 256)?,
            push_attempts: env.positive::<u32>("PUSH_RETRY_ATTEMPTS", 5)?,
            push_backoff_base: Duration::from_millis(env.positive("PUSH_RETRY_BASE_MS", 25)?),
            state: StateSettings::from(env)?,
        })
    }
}

/// A token bucket from a rate variable and a burst variable; the error names the one at
/// fault.
fn rate_limit(
    env: &Env,
    rate_name: &'static str,
    rate_default: f64,
    burst_name: &'static str,
    burst_default: f64,
) -> Result<RateLimit, ConfigError> {
    let per_second: f64 = env.number(rate_name, rate_default)?;
    if !(per_second > 0.0 && per_second.is_finite()) {
        return Err(ConfigError::Invalid {
            name: rate_name,
            reason: format!(
                "{per_second}: the rate must be a positive number of tokens per second"
            ),
        });
    }
    let burst: f64 = env.number(burst_name, burst_default)?;
    if !(burst >= 1.0 && burst.is_finite()) {
        return Err(ConfigError::Invalid {
            name: burst_name,
            reason: format!("{burst}: the burst must be at least 1 token"),
        });
    }
    Ok(RateLimit { per_second, burst })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_and_table_is_required() {
        let env = Env::from_pairs([("TABLE_NAME", "t".to_owned())]);
        let settings = Settings::from(&env).unwrap();
        assert_eq!(settings.retention, Duration::from_secs(86_400));
        assert_eq!(settings.catchup_limit, 500);
        assert_eq!(settings.frame_limits.max_data_bytes, 24 * 1024);
        assert_eq!(settings.frame_limits.max_data_depth, 32);
        assert_eq!(
            Settings::from(&Env::from_pairs::<&str>([])).unwrap_err(),
            ConfigError::Missing("TABLE_NAME")
        );
    }

    #[test]
    fn bad_numbers_are_named() {
        let env = Env::from_pairs([
            ("TABLE_NAME", "t".to_owned()),
            ("CATCHUP_LIMIT", "lots".to_owned()),
        ]);
        let err = Settings::from(&env).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Invalid {
                name: "CATCHUP_LIMIT",
                ..
            }
        ));
        // Every variable, with a value it refuses: the error names that variable, in its
        // type and in the message the function's init error carries.
        for (name, bad) in [
            ("RETENTION_SECONDS", "0"),
            ("CONNECTION_TTL_SECONDS", "-5"),
            ("CATCHUP_LIMIT", "0"),
            ("HISTORY_DEFAULT_LIMIT", "1.5"),
            ("HISTORY_MAX_LIMIT", "0"),
            ("MAX_SUBSCRIPTIONS", "lots"),
            ("MAX_FRAME_BYTES", "0"),
            ("MAX_DATA_BYTES", "40000"),
            ("MAX_DATA_DEPTH", "200"),
            ("MAX_CHANNEL_LENGTH", "129"),
            ("MAX_ID_LENGTH", "65"),
            ("RATE_LIMIT_PER_SECOND", "0"),
            ("RATE_LIMIT_BURST", "0"),
            ("USER_RATE_LIMIT_PER_SECOND", "NaN"),
            ("USER_RATE_LIMIT_BURST", "-1"),
            ("PUBLISH_LEASE_MS", "0"),
            ("FANOUT_CONCURRENCY", "0"),
            ("PUSH_RETRY_ATTEMPTS", "0"),
            ("PUSH_RETRY_BASE_MS", "x"),
        ] {
            let env = Env::from_pairs([("TABLE_NAME", "t".to_owned()), (name, bad.to_owned())]);
            let err = Settings::from(&env).expect_err(name);
            assert!(
                matches!(err, ConfigError::Invalid { name: named, .. } if named == name),
                "{name}={bad}: {err:?}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        for (depth, ok) in [("0", false), ("8", true), ("128", true), ("129", false)] {
            let env = Env::from_pairs([
                ("TABLE_NAME", "t".to_owned()),
                ("MAX_DATA_DEPTH", depth.to_owned()),
            ]);
            match Settings::from(&env) {
                Ok(settings) => {
                    assert!(ok, "MAX_DATA_DEPTH={depth} should be refused");
                    assert_eq!(settings.frame_limits.max_data_depth.to_string(), depth);
                }
                Err(err) => {
                    assert!(!ok, "MAX_DATA_DEPTH={depth} should be accepted: {err}");
                    assert!(matches!(
                        err,
                        ConfigError::Invalid {
                            name: "MAX_DATA_DEPTH",
                            ..
                        }
                    ));
                }
            }
        }
        // 2^32 would have wrapped to 0 in a u32; it is refused instead.
        let env = Env::from_pairs([
            ("TABLE_NAME", "t".to_owned()),
            ("MAX_SUBSCRIPTIONS", "4294967296".to_owned()),
        ]);
        assert!(matches!(
            Settings::from(&env).unwrap_err(),
            ConfigError::Invalid {
                name: "MAX_SUBSCRIPTIONS",
                ..
            }
        ));
    }

    #[test]
    fn rate_limits_default_name_their_variable_and_the_user_one_can_be_off() {
        let base = [("TABLE_NAME", "t".to_owned())];
        let settings = Settings::from(&Env::from_pairs(base.clone())).unwrap();
        assert_eq!(
            settings.rate_limit,
            RateLimit {
                per_second: 20.0,
                burst: 50.0
            }
        );
        assert_eq!(
            settings.user_rate_limit,
            Some(RateLimit {
                per_second: 40.0,
                burst: 100.0
            })
        );
        assert_eq!(
            settings.channel_rate_limit,
            Some(RateLimit {
                per_second: 100.0,
                burst: 200.0
            })
        );
        let off = Env::from_pairs([base[0].clone(), ("USER_RATE_LIMIT_BURST", "0".to_owned())]);
        assert_eq!(Settings::from(&off).unwrap().user_rate_limit, None);
        let off = Env::from_pairs([
            base[0].clone(),
            ("CHANNEL_RATE_LIMIT_BURST", "0".to_owned()),
        ]);
        assert_eq!(Settings::from(&off).unwrap().channel_rate_limit, None);
        for (name, value) in [
            ("CHANNEL_RATE_LIMIT_PER_SECOND", "0"),
            ("CHANNEL_RATE_LIMIT_BURST", "-3"),
            ("RATE_LIMIT_PER_SECOND", "0"),
            ("RATE_LIMIT_BURST", "0.5"),
            ("USER_RATE_LIMIT_PER_SECOND", "-1"),
            ("USER_RATE_LIMIT_BURST", "inf"),
            ("USER_RATE_LIMIT_BURST", "lots"),
        ] {
            let env = Env::from_pairs([base[0].clone(), (name, value.to_owned())]);
            match Settings::from(&env) {
                Err(ConfigError::Invalid { name: named, .. }) => {
                    assert_eq!(named, name, "{name}={value}")
                }
                other => panic!("{name}={value}: {other:?}"),
            }
        }
    }
}
