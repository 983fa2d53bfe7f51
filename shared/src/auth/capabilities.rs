//! What a token allows. A token's `channels` claim maps channel patterns to actions,
//! e.g. `{"chat:*": ["subscribe", "publish"], "news": ["subscribe", "history"]}`.
//! A pattern is an exact channel name, a prefix ending in `*`, or `*` alone. An action is
//! allowed on a channel when **any** matching pattern grants it (the grants are a union;
//! nothing subtracts), so a reader of a token can tell what it allows without knowing
//! the order of its patterns.

use std::collections::BTreeMap;
use std::fmt;

use crate::protocol::{MAX_CHANNEL_LEN, is_channel_char};

/// Something a token can allow on a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Receive the channel's deltas (and catch up on `subscribe`).
    Subscribe,
    /// Append deltas.
    Publish,
    /// Page through retained deltas.
    History,
    /// Reserved for presence; accepted in tokens.
    Presence,
}

impl Action {
    const ALL: [Action; 4] = [
        Action::Subscribe,
        Action::Publish,
        Action::History,
        Action::Presence,
    ];

    /// The action's name in tokens.
    pub fn name(self) -> &'static str {
        match self {
            Action::Subscribe => "subscribe",
            Action::Publish => "publish",
            Action::History => "history",
            Action::Presence => "presence",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A channel pattern from a token: exact name, `prefix*`, or `*`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn parse(text: &str) -> Result<Self, String> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.len() > MAX_CHANNEL_LEN || (!prefix && body.is_empty()) {
            return Err(format!("channel pattern {text:?} has an invalid length"));
        }
        if let Some(bad) = body.chars().find(|c| !is_channel_char(*c)) {
            return Err(format!(
                "channel pattern {text:?} has invalid character {bad:?} (`*` may only end a pattern)"
            ));
        }
        Ok(if prefix {
            Pattern::Prefix(body.to_owned())
        } else {
            Pattern::Exact(body.to_owned())
        })
    }

    fn matches(&self, channel: &str) -> bool {
        match self {
            Pattern::Exact(name) => name == channel,
            Pattern::Prefix(prefix) => channel.starts_with(prefix.as_str()),
        }
    }
}

/// What a token allows, parsed from its `channels` claim.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    grants: Vec<(Pattern, u8)>,
    /// The claim as given, for the authorizer context and the connection item.
    source: BTreeMap<String, Vec<String>>,
}

impl Capabilities {
    /// Parses and validates a `channels` claim.
    pub fn from_claim(claim: BTreeMap<String, Vec<String>>) -> Result<Self, String> {
        let mut grants = Vec::with_capacity(claim.len());
        for (pattern, actions) in &claim {
            let mut bits = 0u8;
            for name in actions {
                let action = Action::from_name(name).ok_or_else(|| {
                    format!(
                        "unknown capability {name:?} for {pattern:?}; expected subscribe, publish, history or presence"
                    )
                })?;
                bits |= action.bit();
            }
            grants.push((Pattern::parse(pattern)?, bits));
        }
        Ok(Self {
            grants,
            source: claim,
        })
    }

    /// Parses the JSON text form used in the authorizer context.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let claim: BTreeMap<String, Vec<String>> =
            serde_json::from_str(text).map_err(|e| format!("capabilities are not valid: {e}"))?;
        Self::from_claim(claim)
    }

    /// The JSON text form used in the authorizer context.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.source).expect("a string map always serialises")
    }

    /// Whether some pattern grants `action` on `channel`.
    pub fn grants(&self, channel: &str, action: Action) -> bool {
        self.grants
            .iter()
            .any(|(pattern, bits)| bits & action.bit() != 0 && pattern.matches(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_patterns_match_exact_prefix_and_star() {
        let caps = Capabilities::from_claim(BTreeMap::from([
            ("news".to_owned(), vec!["subscribe".to_owned()]),
            ("chat:*".to_owned(), vec!["publish".to_owned()]),
            ("*".to_owned(), vec!["history".to_owned()]),
        ]))
        .unwrap();
        assert!(caps.grants("news", Action::Subscribe));
        assert!(
            !caps.grants("news:sport", Action::Subscribe),
            "exact means exact"
        );
        assert!(caps.grants("chat:", Action::Publish));
        assert!(caps.grants("chat:lobby", Action::Publish));
        assert!(!caps.grants("chatty", Action::Publish));
        assert!(!caps.grants("news", Action::Publish));
        assert!(caps.grants("anything", Action::History));
        assert!(!caps.grants("anything", Action::Presence));
    }

    #[test]
    fn grants_are_a_union_of_matching_patterns() {
        let caps = Capabilities::from_claim(BTreeMap::from([
            ("*".to_owned(), vec!["subscribe".to_owned()]),
            ("chat:*".to_owned(), vec![]),
            ("chat:lobby".to_owned(), vec!["publish".to_owned()]),
        ]))
        .unwrap();
        assert!(
            caps.grants("chat:lobby", Action::Subscribe),
            "an empty grant takes nothing away"
        );
        assert!(caps.grants("chat:lobby", Action::Publish));
        assert!(!caps.grants("chat:other", Action::Publish));
    }

    /// The checked-in fuzz corpus (`tests/corpus/capabilities/`: a claim, a NUL byte, a
    /// channel), replayed on every run: each file has its expected outcome, the actions
    /// granted on the channel or `None` for a claim that is refused. A new corpus file
    /// needs its line here.
    #[test]
    fn the_fuzz_corpus_gives_each_file_its_expected_outcome() {
        use Action::*;
        let expected: &[(&str, Option<&[Action]>)] = &[
            // JSON objects keep the last of duplicate keys: `"*": []` grants nothing.
            ("duplicate-key.bin", Some(&[])),
            ("empty-claim.bin", Some(&[])),
            ("escaped-star.bin", Some(&[Publish, History])),
            ("exact-miss.bin", Some(&[])),
            ("exact.bin", Some(&[Subscribe, History])),
            ("invalid-channel.bin", None),
            // A 128-character prefix and its star: the longest pattern allowed.
            ("long-pattern.bin", Some(&[Publish])),
            // `*` matches even the empty string; channels are validated before this.
            ("no-channel.bin", Some(&[Subscribe])),
            ("not-a-map.bin", None),
            // A prefix pattern matches the bare prefix too.
            ("prefix-empty-rest.bin", Some(&[Publish])),
            ("prefix.bin", Some(&[Subscribe, Publish])),
            (
                "star-every-action.bin",
                Some(&[Subscribe, Publish, History, Presence]),
            ),
            ("star-in-middle.bin", None),
            ("star.bin", Some(&[History])),
            ("too-long-pattern.bin", None),
            ("unicode.bin", None),
            ("union.bin", Some(&[Subscribe, Publish, Presence])),
            ("unknown-action.bin", None),
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/capabilities");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .expect("the corpus exists")
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let named: Vec<&str> = expected.iter().map(|(name, _)| *name).collect();
        assert_eq!(files, named, "every corpus file has its expected outcome");
        for (name, outcome) in expected {
            let bytes = std::fs::read(format!("{dir}/{name}")).unwrap();
            let mut parts = bytes.splitn(2, |b| *b == 0);
            let claim = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let channel = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let granted = Capabilities::from_json(&claim).ok().map(|capabilities| {
                Action::ALL
                    .into_iter()
                    .filter(|action| capabilities.grants(&channel, *action))
                    .collect::<Vec<_>>()
            });
            assert_eq!(granted.as_deref(), *outcome, "{name}");
        }
    }
}
