//! The settings of live state (state channels and presence): which channels hold a
//! document, how often their subscribers get a patch (presence watchers too), and the
//! limits of documents and member lists.

use std::time::Duration;

use super::{ConfigError, Env};

/// The largest `STATE_MAX_BYTES`: a snapshot (the value with its envelope) must fit one
/// 128 KB API Gateway message, and the document item must stay well under DynamoDB's
/// 400 KB with its last patch and the stamps beside the value.
pub const MAX_STATE_BYTES: usize = 96 * 1024;

/// The most `STATE_SHARDS`: a fold reads and checkpoints each shard's stream position.
pub const MAX_STATE_SHARDS: u32 = 100;

/// How live state behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct StateSettings {
    /// `STATE_NAMESPACES` (`state:`): comma-separated channel name prefixes; a channel
    /// whose name starts with one of them is a state channel. `none`: no state channels.
    pub namespaces: Vec<String>,
    /// `STATE_PATCH_RATE` (4): most patches per second per channel.
    pub patch_rate: u32,
    /// `STATE_SHARDS` (10): the partitions a state channel's ops are written over.
    pub shards: u32,
    /// `STATE_MAX_BYTES` (65536): the largest document value, serialised.
    pub max_bytes: usize,
    /// `STATE_OP_TTL_SECONDS` (0: kept): how long an op's id is remembered (a repeat
    /// within it is a duplicate).
    pub op_ttl: Option<Duration>,
    /// `PRESENCE_MAX_MEMBERS` (1000): most members of one channel's presence.
    pub max_members: u64,
}

impl Default for StateSettings {
    fn default() -> Self {
        Self::from(&Env::from_pairs(Vec::<(String, String)>::new())).expect("defaults are valid")
    }
}

impl StateSettings {
    /// Reads the settings from `env`.
    pub fn from(env: &Env) -> Result<Self, ConfigError> {
        let namespaces = match env.optional("STATE_NAMESPACES") {
            None => vec!["state:".to_owned()],
            Some(text) if text.trim() == "none" => Vec::new(),
            Some(text) => {
                let prefixes: Vec<String> = text
                    .split(',')
                    .map(|p| p.trim().to_owned())
                    .filter(|p| !p.is_empty())
                    .collect();
                if prefixes.is_empty() {
                    return Err(ConfigError::Invalid {
                        name: "STATE_NAMESPACES",
                        reason: "list channel name prefixes separated by commas, or none".into(),
                    });
                }
                prefixes
            }
        };
        let shards = env.positive::<u32>("STATE_SHARDS", 10)?;
        if shards > MAX_STATE_SHARDS {
            return Err(ConfigError::Invalid {
                name: "STATE_SHARDS",
                reason: format!("{shards}: at most {MAX_STATE_SHARDS}"),
            });
        }
        let max_bytes = env.positive::<usize>("STATE_MAX_BYTES", 64 * 1024)?;
        if max_bytes > MAX_STATE_BYTES {
            return Err(ConfigError::Invalid {
                name: "STATE_MAX_BYTES",
                reason: format!(
                    "{max_bytes}: a snapshot must fit one 128 KB API Gateway message; use at most {MAX_STATE_BYTES}"
                ),
            });
        }
        let patch_rate = env.positive::<u32>("STATE_PATCH_RATE", 4)?;
        if patch_rate > 100 {
            return Err(ConfigError::Invalid {
                name: "STATE_PATCH_RATE",
                reason: format!("{patch_rate}: at most 100 patches per second"),
            });
        }
        let op_ttl = match env.number::<u64>("STATE_OP_TTL_SECONDS", 0)? {
            0 => None,
            secs => Some(Duration::from_secs(secs)),
        };
        Ok(Self {
            namespaces,
            patch_rate,
            shards,
            max_bytes,
            op_ttl,
            max_members: env.positive::<u64>("PRESENCE_MAX_MEMBERS", 1000)?,
        })
    }

    /// Whether `channel` is a state channel.
    pub fn is_state(&self, channel: &str) -> bool {
        self.namespaces.iter().any(|p| channel.starts_with(p))
    }

    /// The least time between two patches of one channel, in milliseconds.
    pub fn patch_interval_ms(&self) -> u64 {
        1000 / u64::from(self.patch_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (*k, v.to_string())))
    }

    #[test]
    fn defaults_make_state_colon_channels_state_channels() {
        let s = StateSettings::default();
        assert!(s.is_state("state:poll"));
        assert!(!s.is_state("chat:poll"));
        assert_eq!(
            (s.patch_rate, s.shards, s.max_bytes, s.op_ttl),
            (4, 10, 65536, None)
        );
        assert_eq!(s.patch_interval_ms(), 250);
    }

    #[test]
    fn namespaces_are_a_list_or_none() {
        let s = StateSettings::from(&env(&[("STATE_NAMESPACES", "poll:, doc:")])).unwrap();
        assert!(s.is_state("poll:1") && s.is_state("doc:x") && !s.is_state("state:x"));
        let none = StateSettings::from(&env(&[("STATE_NAMESPACES", "none")])).unwrap();
        assert!(!none.is_state("state:x"));
        let err = StateSettings::from(&env(&[("STATE_NAMESPACES", " , ")])).unwrap_err();
        assert!(err.to_string().contains("STATE_NAMESPACES"), "{err}");
    }

    #[test]
    fn limits_name_their_variable() {
        for (name, value) in [
            ("STATE_SHARDS", "101"),
            ("STATE_SHARDS", "0"),
            ("STATE_MAX_BYTES", "200000"),
            ("STATE_PATCH_RATE", "0"),
            ("STATE_PATCH_RATE", "1000"),
            ("STATE_OP_TTL_SECONDS", "-1"),
            ("PRESENCE_MAX_MEMBERS", "0"),
        ] {
            let err = StateSettings::from(&env(&[(name, value)])).unwrap_err();
            assert!(err.to_string().contains(name), "{name}={value}: {err}");
        }
        let s = StateSettings::from(&env(&[("STATE_OP_TTL_SECONDS", "60")])).unwrap();
        assert_eq!(s.op_ttl, Some(Duration::from_secs(60)));
    }
}
