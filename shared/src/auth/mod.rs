//! Who a connection is and what it may do: JWT verification for the `$connect`
//! authorizer, the capability rules checked on every action, and the [`Identity`] that
//! travels from the authorizer to every later route in API Gateway's authorizer context.
//!
//! ## Capability rules
//! A token's `channels` claim maps channel patterns to actions, e.g.
//! `{"chat:*": ["subscribe", "publish"], "news": ["subscribe", "history"]}`.
//! A pattern is an exact channel name, a prefix ending in `*`, or `*` alone. An action is
//! allowed on a channel when **any** matching pattern grants it (the grants are a union;
//! nothing subtracts). Besides, the owner of `user:<sub>` may always `subscribe` to it and
//! read its `history`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use crate::protocol::{Channel, MAX_CHANNEL_LEN, is_channel_char};

mod jwks;
mod jwt;

/// The subprotocol deltacast speaks; `$connect` answers with it when the client offers it.
pub const SUBPROTOCOL: &str = "deltacast.v1";
/// The prefix of the subprotocol entry that carries a browser's token: `bearer.<JWT>`.
pub const BEARER_PROTOCOL_PREFIX: &str = "bearer.";

/// The entries a handshake offers in its `Sec-WebSocket-Protocol` headers, in order
/// (a header may list several, comma-separated).
pub fn offered_subprotocols(
    headers: &aws_lambda_events::http::HeaderMap,
) -> impl Iterator<Item = &str> {
    headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
}

pub use jwt::{Claims, JwtAlgorithm, JwtConfig, JwtVerifier, MAX_SUB_LEN, MIN_SECRET_BYTES};

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

/// An authenticated connection's user and capabilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user (`sub` claim).
    pub sub: String,
    /// What the token allows.
    pub capabilities: Capabilities,
    /// The token's expiry, Unix seconds.
    pub exp: u64,
}

impl Identity {
    /// Whether this identity may do `action` on `channel`: a grant in the token, or the
    /// owner reading their personal `user:<sub>` channel.
    pub fn may(&self, action: Action, channel: &Channel) -> bool {
        if matches!(action, Action::Subscribe | Action::History)
            && channel
                .as_str()
                .strip_prefix("user:")
                .is_some_and(|owner| owner == self.sub)
        {
            return true;
        }
        self.capabilities.grants(channel.as_str(), action)
    }

    /// The authorizer context API Gateway passes to every later route. Values must be
    /// strings, numbers or booleans, so the capabilities travel as JSON text.
    pub fn to_context(&self) -> HashMap<String, Value> {
        HashMap::from([
            ("sub".to_owned(), Value::from(self.sub.clone())),
            ("caps".to_owned(), Value::from(self.capabilities.to_json())),
            ("exp".to_owned(), Value::from(self.exp)),
        ])
    }

    /// Reads the identity back from `requestContext.authorizer`.
    pub fn from_context(fields: &HashMap<String, Value>) -> Result<Self, String> {
        let sub = fields
            .get("sub")
            .and_then(Value::as_str)
            .ok_or("authorizer context has no `sub`")?
            .to_owned();
        let caps = fields
            .get("caps")
            .and_then(Value::as_str)
            .ok_or("authorizer context has no `caps`")?;
        // API Gateway may hand numbers on as strings.
        let exp = match fields.get("exp") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .ok_or("authorizer context has no numeric `exp`")?;
        Ok(Self {
            sub,
            capabilities: Capabilities::from_json(caps)?,
            exp,
        })
    }
}

/// Why a token was refused. `Unauthorized` becomes HTTP 401 at the handshake, `Denied`
/// becomes 403.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was presented.
    #[error("no token")]
    Missing,
    /// The token is not a valid, current token from the configured issuer.
    #[error("invalid token: {0}")]
    Unauthorized(String),
    /// The token is genuine but its claims are not acceptable.
    #[error("token refused: {0}")]
    Denied(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

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

    #[test]
    fn owners_may_read_their_personal_channel() {
        let identity = Identity {
            sub: "alice".into(),
            capabilities: Capabilities::default(),
            exp: 0,
        };
        assert!(identity.may(Action::Subscribe, &channel("user:alice")));
        assert!(identity.may(Action::History, &channel("user:alice")));
        assert!(!identity.may(Action::Publish, &channel("user:alice")));
        assert!(!identity.may(Action::Subscribe, &channel("user:alice2")));
        assert!(!identity.may(Action::Subscribe, &channel("user:bob")));
    }

    #[test]
    fn identity_survives_the_authorizer_context() {
        let identity = Identity {
            sub: "alice".into(),
            capabilities: Capabilities::from_claim(BTreeMap::from([(
                "chat:*".to_owned(),
                vec!["subscribe".to_owned()],
            )]))
            .unwrap(),
            exp: 1_900_000_000,
        };
        let context = identity.to_context();
        assert!(context.values().all(|v| v.is_string() || v.is_number()));
        assert_eq!(Identity::from_context(&context).unwrap(), identity);
        let mut stringly = context.clone();
        stringly.insert("exp".into(), Value::from("1900000000"));
        assert_eq!(Identity::from_context(&stringly).unwrap(), identity);
        stringly.remove("caps");
        assert!(Identity::from_context(&stringly).is_err());
    }

    /// The checked-in fuzz corpus (`tests/corpus/capabilities/`: a claim, a NUL byte, a
    /// channel), replayed on every run.
    #[test]
    fn the_fuzz_corpus_evaluates_without_panicking() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/capabilities");
        let mut replayed = 0;
        for entry in std::fs::read_dir(dir).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let mut parts = bytes.splitn(2, |b| *b == 0);
            let claim = String::from_utf8_lossy(parts.next().unwrap_or_default());
            let channel = String::from_utf8_lossy(parts.next().unwrap_or_default());
            if let Ok(capabilities) = Capabilities::from_json(&claim) {
                for action in Action::ALL {
                    capabilities.grants(&channel, action);
                }
            }
            replayed += 1;
        }
        assert!(replayed >= 10, "only {replayed} corpus files");
    }
}
