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

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{ConfigError, Env};
use crate::protocol::{Channel, MAX_CHANNEL_LEN, is_channel_char};

/// Longest accepted `sub` claim (it travels in every delta's `from`).
pub const MAX_SUB_LEN: usize = 128;
/// Shortest accepted HS256 secret.
pub const MIN_SECRET_BYTES: usize = 32;

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

/// The claims deltacast reads from a token. `sub` and `exp` are required; they are
/// optional here so that their absence is reported as such.
#[derive(Debug, Deserialize, Serialize)]
pub struct Claims {
    /// The user.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Capabilities: channel pattern → actions.
    #[serde(default)]
    pub channels: BTreeMap<String, Vec<String>>,
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

/// How tokens are verified; read from the environment.
#[derive(Clone)]
pub struct JwtConfig {
    secret: Vec<u8>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl JwtConfig {
    /// Reads `JWT_SECRET` (at least 32 bytes), `JWT_ISSUER`, `JWT_AUDIENCE` and
    /// `JWT_LEEWAY_SECONDS` (default 30).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let secret = env.required("JWT_SECRET")?;
        if secret.len() < MIN_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                reason: format!(
                    "must be at least {MIN_SECRET_BYTES} bytes, got {}",
                    secret.len()
                ),
            });
        }
        Ok(Self {
            secret: secret.into_bytes(),
            issuer: env.optional("JWT_ISSUER"),
            audience: env.optional("JWT_AUDIENCE"),
            leeway_seconds: env.number("JWT_LEEWAY_SECONDS", 30)?,
        })
    }
}

/// Verifies tokens; built once per process.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for HS256 tokens signed with the configured secret.
    pub fn new(config: &JwtConfig) -> Self {
        // The algorithm is fixed here; the token's own `alg` header never chooses it.
        let mut validation = Validation::new(Algorithm::HS256);
        let mut required = vec!["exp", "sub"];
        required.extend(config.issuer.as_ref().map(|_| "iss"));
        required.extend(config.audience.as_ref().map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        validation.leeway = config.leeway_seconds;
        validation.validate_nbf = true;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Self {
            key: DecodingKey::from_secret(&config.secret),
            validation,
        }
    }

    /// Verifies `token` and returns who it identifies.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| AuthError::Unauthorized(describe(e.kind())))?;
        let claims = data.claims;
        let (Some(sub), Some(exp)) = (claims.sub, claims.exp) else {
            return Err(AuthError::Unauthorized(
                "missing claim `sub` or `exp`".into(),
            ));
        };
        if sub.is_empty() || sub.len() > MAX_SUB_LEN {
            return Err(AuthError::Denied(format!(
                "`sub` must be 1 to {MAX_SUB_LEN} characters"
            )));
        }
        let capabilities = Capabilities::from_claim(claims.channels).map_err(AuthError::Denied)?;
        Ok(Identity {
            sub,
            capabilities,
            exp,
        })
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "expired".into(),
        ErrorKind::ImmatureSignature => "not yet valid (nbf)".into(),
        ErrorKind::InvalidSignature => "bad signature".into(),
        ErrorKind::InvalidAlgorithm => "algorithm not accepted".into(),
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim `{claim}`"),
        ErrorKind::Json(e) => format!("malformed claims: {e}"),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &str = "a-test-secret-that-is-long-enough-32";

    fn config(issuer: Option<&str>, audience: Option<&str>) -> JwtConfig {
        let mut vars = vec![("JWT_SECRET", SECRET.to_owned())];
        if let Some(iss) = issuer {
            vars.push(("JWT_ISSUER", iss.to_owned()));
        }
        if let Some(aud) = audience {
            vars.push(("JWT_AUDIENCE", aud.to_owned()));
        }
        JwtConfig::from_env(&Env::from_pairs(vars)).unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn sign(claims: Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn accepts_a_valid_token() {
        let verifier = JwtVerifier::new(&config(None, None));
        let token = sign(
            json!({"sub": "alice", "exp": now() + 60, "channels": {"chat:*": ["subscribe", "publish"]}}),
        );
        let identity = verifier.verify(&token).unwrap();
        assert_eq!(identity.sub, "alice");
        assert!(identity.may(Action::Publish, &channel("chat:lobby")));
        assert!(!identity.may(Action::History, &channel("chat:lobby")));
    }

    #[test]
    fn refuses_expired_forged_and_incomplete_tokens() {
        let verifier = JwtVerifier::new(&config(None, None));
        let expired = sign(json!({"sub": "a", "exp": now() - 3600}));
        assert_eq!(
            verifier.verify(&expired),
            Err(AuthError::Unauthorized("expired".into()))
        );

        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-that-is-long-enough-too"),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&forged),
            Err(AuthError::Unauthorized("bad signature".into()))
        );

        let no_sub = sign(json!({"exp": now() + 60}));
        assert_eq!(
            verifier.verify(&no_sub),
            Err(AuthError::Unauthorized("missing claim `sub`".into()))
        );
        let no_exp = sign(json!({"sub": "a"}));
        assert_eq!(
            verifier.verify(&no_exp),
            Err(AuthError::Unauthorized("missing claim `exp`".into()))
        );
        assert_eq!(verifier.verify(""), Err(AuthError::Missing));
        assert!(matches!(
            verifier.verify("not.a.jwt"),
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[test]
    fn refuses_alg_none_and_other_algorithms() {
        let verifier = JwtVerifier::new(&config(None, None));
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = b64.encode(json!({"sub": "a", "exp": now() + 60}).to_string());
        for alg in ["none", "None", "RS256", "HS512"] {
            let header = b64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{claims}.{signature}");
                assert!(
                    matches!(verifier.verify(&token), Err(AuthError::Unauthorized(_))),
                    "alg {alg} with signature {signature:?} was accepted"
                );
            }
        }
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let verifier = JwtVerifier::new(&config(Some("https://issuer"), Some("deltacast")));
        let good = sign(
            json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer", "aud": "deltacast"}),
        );
        verifier.verify(&good).unwrap();
        let wrong_iss = sign(
            json!({"sub": "a", "exp": now() + 60, "iss": "https://other", "aud": "deltacast"}),
        );
        assert_eq!(
            verifier.verify(&wrong_iss),
            Err(AuthError::Unauthorized("wrong issuer".into()))
        );
        let wrong_aud =
            sign(json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer", "aud": "x"}));
        assert_eq!(
            verifier.verify(&wrong_aud),
            Err(AuthError::Unauthorized("wrong audience".into()))
        );
        let missing_iss = sign(json!({"sub": "a", "exp": now() + 60, "aud": "deltacast"}));
        assert!(verifier.verify(&missing_iss).is_err());
    }

    #[test]
    fn denies_genuine_tokens_with_unacceptable_claims() {
        let verifier = JwtVerifier::new(&config(None, None));
        let bad_cap = sign(json!({"sub": "a", "exp": now() + 60, "channels": {"chat": ["write"]}}));
        assert!(matches!(
            verifier.verify(&bad_cap),
            Err(AuthError::Denied(_))
        ));
        let bad_pattern =
            sign(json!({"sub": "a", "exp": now() + 60, "channels": {"a*b": ["subscribe"]}}));
        assert!(matches!(
            verifier.verify(&bad_pattern),
            Err(AuthError::Denied(_))
        ));
        let long_sub = sign(json!({"sub": "x".repeat(129), "exp": now() + 60}));
        assert!(matches!(
            verifier.verify(&long_sub),
            Err(AuthError::Denied(_))
        ));
    }

    #[test]
    fn refuses_short_secrets() {
        let env = Env::from_pairs([("JWT_SECRET", "short".to_owned())]);
        assert!(matches!(
            JwtConfig::from_env(&env),
            Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                ..
            })
        ));
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
}
