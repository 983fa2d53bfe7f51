//! JWT verification. The algorithm is fixed by configuration (`JWT_ALGORITHM`); a token's
//! own `alg` header never chooses how it is verified, so `none`, and HMAC tokens made
//! with an RSA public key as the secret, are refused.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use super::algorithm::JwtAlgorithm;
use super::capabilities::Capabilities;
use super::error::AuthError;
use super::identity::Identity;
use super::jwks::JwksCache;
use crate::config::{ConfigError, Env};

/// Longest accepted `sub` claim (it travels in every delta's `from`).
pub const MAX_SUB_LEN: usize = 128;
/// Shortest accepted HS256 secret.
pub const MIN_SECRET_BYTES: usize = 32;

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

/// Where verification keys come from.
#[derive(Clone)]
enum KeyConfig {
    Secret(Vec<u8>),
    Jwks { url: String, max_age: Duration },
}

/// How tokens are verified; read from the environment.
#[derive(Clone)]
pub struct JwtConfig {
    algorithm: JwtAlgorithm,
    keys: KeyConfig,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_seconds: u64,
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = match &self.keys {
            KeyConfig::Secret(_) => "secret <redacted>".to_owned(),
            KeyConfig::Jwks { url, .. } => format!("jwks {url}"),
        };
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm)
            .field("keys", &keys)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .finish()
    }
}

impl JwtConfig {
    /// Reads `JWT_ALGORITHM` (HS256, RS256 or ES256; default HS256), `JWT_SECRET` (HS256,
    /// at least 32 bytes), `JWT_JWKS_URL` and `JWT_JWKS_CACHE_SECONDS` (RS256/ES256,
    /// default 3600), `JWT_ISSUER`, `JWT_AUDIENCE` and `JWT_LEEWAY_SECONDS` (default 30).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let name = env
            .optional("JWT_ALGORITHM")
            .unwrap_or_else(|| "HS256".into());
        let algorithm = JwtAlgorithm::parse(&name).ok_or_else(|| ConfigError::Invalid {
            name: "JWT_ALGORITHM",
            reason: format!("{name:?} is not one of HS256, RS256, ES256"),
        })?;
        let keys = match algorithm {
            JwtAlgorithm::Hs256 => {
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
                KeyConfig::Secret(secret.into_bytes())
            }
            JwtAlgorithm::Rs256 | JwtAlgorithm::Es256 => {
                let url = env.required("JWT_JWKS_URL")?;
                if !is_acceptable_jwks_url(&url) {
                    return Err(ConfigError::Invalid {
                        name: "JWT_JWKS_URL",
                        reason: "must be an https:// URL (http:// only for a loopback host \
                                 such as 127.0.0.1, as the local stack uses)"
                            .into(),
                    });
                }
                KeyConfig::Jwks {
                    url,
                    max_age: Duration::from_secs(env.number("JWT_JWKS_CACHE_SECONDS", 3600)?),
                }
            }
        };
        let issuer = env.optional("JWT_ISSUER");
        let audience = env.optional("JWT_AUDIENCE");
        if matches!(keys, KeyConfig::Jwks { .. }) && (issuer.is_none() || audience.is_none()) {
            return Err(ConfigError::Invalid {
                name: KEY_SET_CLAIMS,
                reason: format!(
                    "both are required with JWT_ALGORITHM={}: an identity provider's key set \
                     signs tokens for every app it serves (every Firebase project, every \
                     Cognito app client), so only iss and aud tell yours apart",
                    name
                ),
            });
        }
        Ok(Self {
            algorithm,
            keys,
            issuer,
            audience,
            leeway_seconds: env.number("JWT_LEEWAY_SECONDS", 30)?,
        })
    }
}

/// The variables key-set mode requires together; named as one in the init error.
pub const KEY_SET_CLAIMS: &str = "JWT_ISSUER and JWT_AUDIENCE";

/// `https://` anywhere; `http://` only for a loopback host (the local stack's key server),
/// because keys fetched in the clear could be swapped on the way.
fn is_acceptable_jwks_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

enum Keys {
    Secret(DecodingKey),
    Jwks(Box<JwksCache>),
}

/// Verifies tokens; built once per process, so JWKS keys are cached across invocations.
pub struct JwtVerifier {
    algorithm: Algorithm,
    keys: Keys,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for `config`.
    pub fn new(config: &JwtConfig) -> Result<Self, ConfigError> {
        let algorithm = config.algorithm.jsonwebtoken();
        let mut validation = Validation::new(algorithm);
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
        let keys = match &config.keys {
            KeyConfig::Secret(secret) => Keys::Secret(DecodingKey::from_secret(secret)),
            KeyConfig::Jwks { url, max_age } => Keys::Jwks(Box::new(JwksCache::new(
                url.clone(),
                config.algorithm,
                *max_age,
            ))),
        };
        Ok(Self {
            algorithm,
            keys,
            validation,
        })
    }

    /// Verifies `token` and returns who it identifies.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Unauthorized(describe(e.kind())))?;
        if header.alg != self.algorithm {
            return Err(AuthError::Unauthorized("algorithm not accepted".into()));
        }
        let jwks_key;
        let key = match &self.keys {
            Keys::Secret(key) => key,
            Keys::Jwks(cache) => {
                jwks_key = cache.key(header.kid.as_deref()).await?;
                &jwks_key
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
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
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "algorithm not accepted".into()
        }
        ErrorKind::InvalidIssuer => "wrong issuer".into(),
        ErrorKind::InvalidAudience => "wrong audience".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("missing claim `{claim}`"),
        ErrorKind::InvalidClaimFormat(claim) => format!("malformed claim `{claim}`"),
        ErrorKind::Json(_) => "malformed claims".into(),
        _ => "malformed token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    const SECRET: &str = "a-test-secret-that-is-long-enough-32";

    fn config(pairs: &[(&str, &str)]) -> JwtConfig {
        JwtConfig::from_env(&Env::from_pairs(
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        ))
        .unwrap()
    }

    fn hs256() -> JwtVerifier {
        JwtVerifier::new(&config(&[("JWT_SECRET", SECRET)])).unwrap()
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

    #[tokio::test]
    async fn accepts_a_valid_token() {
        let token = sign(
            json!({"sub": "alice", "exp": now() + 60, "channels": {"chat:*": ["subscribe", "publish"]}}),
        );
        let identity = hs256().verify(&token).await.unwrap();
        assert_eq!(identity.sub, "alice");
        assert!(
            identity
                .capabilities
                .grants("chat:lobby", crate::auth::Action::Publish)
        );
    }

    #[tokio::test]
    async fn refuses_expired_forged_and_incomplete_tokens() {
        let verifier = hs256();
        let expired = sign(json!({"sub": "a", "exp": now() - 3600}));
        assert_eq!(
            verifier.verify(&expired).await,
            Err(AuthError::Unauthorized("expired".into()))
        );
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "a", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another-secret-that-is-long-enough-too"),
        )
        .unwrap();
        assert_eq!(
            verifier.verify(&forged).await,
            Err(AuthError::Unauthorized("bad signature".into()))
        );
        let no_sub = sign(json!({"exp": now() + 60}));
        assert_eq!(
            verifier.verify(&no_sub).await,
            Err(AuthError::Unauthorized("missing claim `sub`".into()))
        );
        let no_exp = sign(json!({"sub": "a"}));
        assert_eq!(
            verifier.verify(&no_exp).await,
            Err(AuthError::Unauthorized("missing claim `exp`".into()))
        );
        let early = sign(json!({"sub": "a", "exp": now() + 600, "nbf": now() + 300}));
        assert_eq!(
            verifier.verify(&early).await,
            Err(AuthError::Unauthorized("not yet valid (nbf)".into()))
        );
        assert_eq!(verifier.verify("").await, Err(AuthError::Missing));
        assert!(matches!(
            verifier.verify("not.a.jwt").await,
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn tolerates_small_clock_skew() {
        let verifier = JwtVerifier::new(&config(&[
            ("JWT_SECRET", SECRET),
            ("JWT_LEEWAY_SECONDS", "60"),
        ]))
        .unwrap();
        let just_expired = sign(json!({"sub": "a", "exp": now() - 20}));
        verifier.verify(&just_expired).await.unwrap();
        let strict = JwtVerifier::new(&config(&[
            ("JWT_SECRET", SECRET),
            ("JWT_LEEWAY_SECONDS", "0"),
        ]))
        .unwrap();
        assert!(strict.verify(&just_expired).await.is_err());
    }

    #[tokio::test]
    async fn refuses_alg_none_and_other_algorithms() {
        let verifier = hs256();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = b64.encode(json!({"sub": "a", "exp": now() + 60}).to_string());
        for alg in ["none", "None", "RS256", "HS512", "ES256"] {
            let header = b64.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
            for signature in ["", "c2ln"] {
                let token = format!("{header}.{claims}.{signature}");
                assert!(
                    matches!(
                        verifier.verify(&token).await,
                        Err(AuthError::Unauthorized(_))
                    ),
                    "alg {alg} with signature {signature:?} was accepted"
                );
            }
        }
    }

    #[tokio::test]
    async fn checks_issuer_and_audience_when_configured() {
        let verifier = JwtVerifier::new(&config(&[
            ("JWT_SECRET", SECRET),
            ("JWT_ISSUER", "https://issuer"),
            ("JWT_AUDIENCE", "deltacast"),
        ]))
        .unwrap();
        let good = sign(
            json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer", "aud": "deltacast"}),
        );
        verifier.verify(&good).await.unwrap();
        let wrong_iss = sign(
            json!({"sub": "a", "exp": now() + 60, "iss": "https://other", "aud": "deltacast"}),
        );
        assert_eq!(
            verifier.verify(&wrong_iss).await,
            Err(AuthError::Unauthorized("wrong issuer".into()))
        );
        let wrong_aud =
            sign(json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer", "aud": "x"}));
        assert_eq!(
            verifier.verify(&wrong_aud).await,
            Err(AuthError::Unauthorized("wrong audience".into()))
        );
        let missing_iss = sign(json!({"sub": "a", "exp": now() + 60, "aud": "deltacast"}));
        assert!(verifier.verify(&missing_iss).await.is_err());
        let missing_aud = sign(json!({"sub": "a", "exp": now() + 60, "iss": "https://issuer"}));
        assert!(verifier.verify(&missing_aud).await.is_err());
    }

    #[tokio::test]
    async fn denies_genuine_tokens_with_unacceptable_claims() {
        let verifier = hs256();
        let bad_cap = sign(json!({"sub": "a", "exp": now() + 60, "channels": {"chat": ["write"]}}));
        assert!(matches!(
            verifier.verify(&bad_cap).await,
            Err(AuthError::Denied(_))
        ));
        let bad_pattern =
            sign(json!({"sub": "a", "exp": now() + 60, "channels": {"a*b": ["subscribe"]}}));
        assert!(matches!(
            verifier.verify(&bad_pattern).await,
            Err(AuthError::Denied(_))
        ));
        let long_sub = sign(json!({"sub": "x".repeat(129), "exp": now() + 60}));
        assert!(matches!(
            verifier.verify(&long_sub).await,
            Err(AuthError::Denied(_))
        ));
    }

    #[test]
    fn key_set_mode_refuses_to_start_without_issuer_and_audience() {
        let from = |pairs: &[(&str, &str)]| {
            JwtConfig::from_env(&Env::from_pairs(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ))
        };
        let url = ("JWT_JWKS_URL", "https://idp.example/.well-known/jwks.json");
        for algorithm in ["RS256", "ES256"] {
            let alg = ("JWT_ALGORITHM", algorithm);
            for pairs in [
                vec![alg, url],
                vec![alg, url, ("JWT_ISSUER", "https://idp.example")],
                vec![alg, url, ("JWT_AUDIENCE", "my-app")],
            ] {
                let err = from(&pairs).unwrap_err();
                assert!(
                    matches!(&err, ConfigError::Invalid { name: KEY_SET_CLAIMS, reason }
                        if reason.contains(algorithm)),
                    "{pairs:?} gave {err:?}"
                );
                assert!(err.to_string().contains("JWT_ISSUER and JWT_AUDIENCE"));
            }
            let both = [
                alg,
                url,
                ("JWT_ISSUER", "https://idp.example"),
                ("JWT_AUDIENCE", "my-app"),
            ];
            from(&both).unwrap();
        }
        // The local stack's key server on loopback may be plain http.
        for local in [
            "http://127.0.0.1:9000/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:80/jwks.json",
        ] {
            from(&[
                ("JWT_ALGORITHM", "RS256"),
                ("JWT_JWKS_URL", local),
                ("JWT_ISSUER", "i"),
                ("JWT_AUDIENCE", "a"),
            ])
            .unwrap();
        }
        // HS256 tokens are signed with our own secret: iss and aud stay optional.
        from(&[("JWT_SECRET", SECRET)]).unwrap();
    }

    #[test]
    fn configuration_is_checked() {
        let err = |pairs: &[(&str, &str)]| {
            JwtConfig::from_env(&Env::from_pairs(
                pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            ))
            .unwrap_err()
        };
        assert!(matches!(
            err(&[("JWT_SECRET", "short")]),
            ConfigError::Invalid {
                name: "JWT_SECRET",
                ..
            }
        ));
        assert_eq!(err(&[]), ConfigError::Missing("JWT_SECRET"));
        assert!(matches!(
            err(&[("JWT_ALGORITHM", "none")]),
            ConfigError::Invalid {
                name: "JWT_ALGORITHM",
                ..
            }
        ));
        assert_eq!(
            err(&[("JWT_ALGORITHM", "RS256")]),
            ConfigError::Missing("JWT_JWKS_URL")
        );
        for url in [
            "http://keys.example.com/jwks.json",
            "http://10.0.0.1/jwks.json",
            "http://127.0.0.1.evil.example/jwks.json",
        ] {
            assert!(
                matches!(
                    err(&[("JWT_ALGORITHM", "RS256"), ("JWT_JWKS_URL", url)]),
                    ConfigError::Invalid {
                        name: "JWT_JWKS_URL",
                        ..
                    }
                ),
                "{url} accepted"
            );
        }
        assert!(matches!(
            err(&[
                ("JWT_ALGORITHM", "ES256"),
                ("JWT_JWKS_URL", "file:///etc/passwd")
            ]),
            ConfigError::Invalid {
                name: "JWT_JWKS_URL",
                ..
            }
        ));
    }

    /// Tokens verified with keys from a JWKS endpoint (RS256, ES256), served locally.
    mod with_jwks {
        use super::super::*;
        use jsonwebtoken::{Algorithm, EncodingKey, Header};
        use serde_json::{Value, json};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use crate::auth::test_keys::{ec, jwk, rsa};

        fn token(key: &EncodingKey, alg: Algorithm, kid: Option<&str>, claims: Value) -> String {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, &claims, key).unwrap()
        }

        fn claims() -> Value {
            json!({"sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 60,
                   "iss": "https://idp", "aud": "my-app"})
        }

        /// Serves `documents` in turn (the last one forever) on 127.0.0.1 and counts requests.
        async fn serve(documents: Vec<Value>) -> (String, Arc<AtomicUsize>) {
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = hits.clone();
            let documents = Arc::new(documents);
            let app = axum::Router::new().route(
                "/jwks.json",
                axum::routing::get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    let documents = documents.clone();
                    async move { axum::Json(documents[n.min(documents.len() - 1)].clone()) }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (url, hits)
        }

        fn verifier(algorithm: &str, url: &str) -> JwtVerifier {
            let env = Env::from_pairs([
                ("JWT_ALGORITHM", algorithm.to_owned()),
                ("JWT_JWKS_URL", url.to_owned()),
                ("JWT_ISSUER", "https://idp".to_owned()),
                ("JWT_AUDIENCE", "my-app".to_owned()),
            ]);
            JwtVerifier::new(&JwtConfig::from_env(&env).unwrap()).unwrap()
        }

        #[tokio::test]
        async fn verifies_rs256_with_keys_cached_across_calls() {
            let key = rsa("rsa-test-key.pem");
            let (url, hits) =
                serve(vec![json!({"keys": [jwk(&key, Algorithm::RS256, "k1")]})]).await;
            let verifier = verifier("RS256", &url);
            for _ in 0..5 {
                let identity = verifier
                    .verify(&token(&key, Algorithm::RS256, Some("k1"), claims()))
                    .await
                    .unwrap();
                assert_eq!(identity.sub, "alice");
            }
            assert_eq!(hits.load(Ordering::SeqCst), 1, "fetched once");
        }

        #[tokio::test]
        async fn verifies_es256() {
            let key = ec();
            let (url, _) = serve(vec![json!({"keys": [jwk(&key, Algorithm::ES256, "e1")]})]).await;
            let verifier = verifier("ES256", &url);
            verifier
                .verify(&token(&key, Algorithm::ES256, Some("e1"), claims()))
                .await
                .unwrap();
            let rsa_token = token(
                &rsa("rsa-test-key.pem"),
                Algorithm::RS256,
                Some("e1"),
                claims(),
            );
            assert_eq!(
                verifier.verify(&rsa_token).await,
                Err(AuthError::Unauthorized("algorithm not accepted".into()))
            );
        }

        #[tokio::test]
        async fn refreshes_on_an_unknown_kid_after_rotation() {
            let old = rsa("rsa-test-key.pem");
            let new = rsa("rsa-other-key.pem");
            let (url, hits) = serve(vec![
                json!({"keys": [jwk(&old, Algorithm::RS256, "old")]}),
                json!({"keys": [jwk(&old, Algorithm::RS256, "old"), jwk(&new, Algorithm::RS256, "new")]}),
            ])
            .await;
            let verifier = verifier("RS256", &url);
            verifier
                .verify(&token(&old, Algorithm::RS256, Some("old"), claims()))
                .await
                .unwrap();
            verifier
                .verify(&token(&new, Algorithm::RS256, Some("new"), claims()))
                .await
                .unwrap();
            assert_eq!(hits.load(Ordering::SeqCst), 2);
            // A forged kid right after cannot force another fetch.
            let forged = token(&new, Algorithm::RS256, Some("forged"), claims());
            assert_eq!(
                verifier.verify(&forged).await,
                Err(AuthError::Unauthorized("unknown signing key (kid)".into()))
            );
            assert_eq!(hits.load(Ordering::SeqCst), 2);
        }

        #[tokio::test]
        async fn refuses_wrong_keys_algorithm_confusion_and_unknown_issuers() {
            let key = rsa("rsa-test-key.pem");
            let (url, _) = serve(vec![json!({"keys": [jwk(&key, Algorithm::RS256, "k1")]})]).await;
            let verifier = verifier("RS256", &url);
            let other = token(
                &rsa("rsa-other-key.pem"),
                Algorithm::RS256,
                Some("k1"),
                claims(),
            );
            assert_eq!(
                verifier.verify(&other).await,
                Err(AuthError::Unauthorized("bad signature".into()))
            );
            // HS256 signed with the public key's bytes as the secret: the classic confusion.
            let public = serde_json::to_vec(&jwk(&key, Algorithm::RS256, "k1")).unwrap();
            let confused = token(
                &EncodingKey::from_secret(&public),
                Algorithm::HS256,
                Some("k1"),
                claims(),
            );
            assert_eq!(
                verifier.verify(&confused).await,
                Err(AuthError::Unauthorized("algorithm not accepted".into()))
            );
            let mut foreign = claims();
            foreign["iss"] = json!("https://elsewhere");
            assert_eq!(
                verifier
                    .verify(&token(&key, Algorithm::RS256, Some("k1"), foreign))
                    .await,
                Err(AuthError::Unauthorized("wrong issuer".into()))
            );
        }

        #[tokio::test]
        async fn an_unreachable_jwks_refuses_tokens() {
            // A port that was just free: nothing listens there.
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let verifier = verifier("RS256", &format!("http://127.0.0.1:{port}/jwks.json"));
            let key = rsa("rsa-test-key.pem");
            assert_eq!(
                verifier
                    .verify(&token(&key, Algorithm::RS256, Some("k1"), claims()))
                    .await,
                Err(AuthError::Unauthorized(
                    "signing keys are unavailable".into()
                ))
            );
        }

        #[tokio::test]
        async fn a_failing_key_server_is_not_asked_again_on_every_connect() {
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = hits.clone();
            let app = axum::Router::new().route(
                "/jwks.json",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async { axum::http::StatusCode::SERVICE_UNAVAILABLE }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            let verifier = verifier("RS256", &url);
            let key = rsa("rsa-test-key.pem");
            for kid in ["k1", "k2", "k3"] {
                assert_eq!(
                    verifier
                        .verify(&token(&key, Algorithm::RS256, Some(kid), claims()))
                        .await,
                    Err(AuthError::Unauthorized(
                        "signing keys are unavailable".into()
                    ))
                );
            }
            assert_eq!(
                hits.load(Ordering::SeqCst),
                1,
                "one attempt per RETRY_AFTER_FAILURE, whatever the key ids"
            );
        }
    }
}
