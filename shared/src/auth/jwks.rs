//! Signing keys from a JWKS endpoint (Cognito, Auth0, Firebase Auth, ...), cached for the
//! life of the process: fetched on first use, refreshed when older than the configured
//! age, and refreshed early when a token names a key id the cache does not know (key
//! rotation), at most once every [`MIN_REFRESH_INTERVAL`] so forged key ids cannot turn
//! the authorizer into a JWKS flooder. Only keys usable with the pinned algorithm are
//! kept; any other key in the set is ignored.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};
use tracing::{info, warn};

use super::AuthError;
use super::jwt::JwtAlgorithm;

/// Shortest time between two refreshes caused by unknown key ids.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Shortest time between two attempts while the key server fails, so an outage costs one
/// slow connect per interval rather than every connect waiting for [`FETCH_TIMEOUT`].
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// Longest a JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

struct State {
    keys: Vec<(Option<String>, DecodingKey)>,
    fetched: Option<Instant>,
    /// Last fetch that failed.
    failed: Option<Instant>,
    /// Last refresh caused by an unknown key id.
    unknown_kid_refresh: Option<Instant>,
}

/// The cached keys of one JWKS URL.
pub(super) struct JwksCache {
    url: String,
    algorithm: JwtAlgorithm,
    max_age: Duration,
    client: OnceCell<crate::aws::HyperClient<Empty<Bytes>>>,
    state: Mutex<State>,
}

impl JwksCache {
    /// A cache for `url`; nothing is fetched (or loaded) yet.
    pub(super) fn new(url: String, algorithm: JwtAlgorithm, max_age: Duration) -> Self {
        Self {
            url,
            algorithm,
            max_age,
            client: OnceCell::new(),
            state: Mutex::new(State {
                keys: Vec::new(),
                fetched: None,
                failed: None,
                unknown_kid_refresh: None,
            }),
        }
    }

    /// The key for a token's `kid` (a token without `kid` is accepted only when the set
    /// has exactly one usable key).
    pub(super) async fn key(&self, kid: Option<&str>) -> Result<DecodingKey, AuthError> {
        let mut state = self.state.lock().await;
        let stale = state.fetched.is_none_or(|at| at.elapsed() >= self.max_age);
        let failing = state
            .failed
            .is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE);
        if stale && !failing {
            self.refresh(&mut state).await;
        }
        if let Some(key) = find(&state.keys, kid) {
            return Ok(key);
        }
        let may_refresh = state
            .unknown_kid_refresh
            .is_none_or(|at| at.elapsed() >= MIN_REFRESH_INTERVAL);
        if kid.is_some() && !stale && !failing && may_refresh {
            state.unknown_kid_refresh = Some(Instant::now());
            self.refresh(&mut state).await;
            if let Some(key) = find(&state.keys, kid) {
                return Ok(key);
            }
        }
        if state.keys.is_empty() {
            return Err(AuthError::Unauthorized(
                "signing keys are unavailable".into(),
            ));
        }
        Err(AuthError::Unauthorized(match kid {
            Some(_) => "unknown signing key (kid)".into(),
            None => "token has no kid and the key set has more than one key".into(),
        }))
    }

    /// Fetches the set; on failure keeps the keys it had (a JWKS outage must not lock
    /// out tokens signed with known keys).
    async fn refresh(&self, state: &mut State) {
        match self.fetch().await {
            Ok(keys) => {
                info!(url = self.url, keys = keys.len(), "fetched signing keys");
                state.keys = keys;
                state.fetched = Some(Instant::now());
                state.failed = None;
            }
            Err(reason) => {
                warn!(url = self.url, %reason, "could not fetch signing keys");
                state.failed = Some(Instant::now());
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
        let uri: hyper::Uri = self.url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let client = self
            .client
            .get_or_try_init(|| async { crate::aws::hyper_client() })
            .await
            .map_err(|e| format!("no TLS root certificates: {e}"))?;
        let request = async {
            let response = client.get(uri).await.map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?;
            Ok(body.to_bytes())
        };
        let body = tokio::time::timeout(FETCH_TIMEOUT, request)
            .await
            .map_err(|_| "timed out".to_owned())??;
        usable_keys(&body, self.algorithm)
    }
}

fn find(keys: &[(Option<String>, DecodingKey)], kid: Option<&str>) -> Option<DecodingKey> {
    match kid {
        Some(kid) => keys
            .iter()
            .find(|(id, _)| id.as_deref() == Some(kid))
            .map(|(_, key)| key.clone()),
        None if keys.len() == 1 => Some(keys[0].1.clone()),
        None => None,
    }
}

/// The keys of a JWKS document that can verify `algorithm` signatures.
pub(super) fn usable_keys(
    document: &[u8],
    algorithm: JwtAlgorithm,
) -> Result<Vec<(Option<String>, DecodingKey)>, String> {
    let set: Value = serde_json::from_slice(document).map_err(|e| format!("not JSON: {e}"))?;
    let entries = set
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no `keys` array")?;
    let wanted = algorithm.jsonwebtoken();
    let mut keys = Vec::new();
    for entry in entries {
        // Keys of other kinds (encryption keys, other curves) are skipped one by one.
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{wanted:?}")
        {
            continue;
        }
        let fits = match (&jwk.algorithm, algorithm) {
            (AlgorithmParameters::RSA(_), JwtAlgorithm::Rs256) => true,
            (AlgorithmParameters::EllipticCurve(ec), JwtAlgorithm::Es256) => {
                ec.curve == EllipticCurve::P256
            }
            _ => false,
        };
        if !fits {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.push((jwk.common.key_id.clone(), key));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{JwtConfig, JwtVerifier};
    use crate::config::Env;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys/");

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{KEYS}{name}")).unwrap()
    }

    fn rsa(name: &str) -> EncodingKey {
        EncodingKey::from_rsa_pem(&pem(name)).unwrap()
    }

    fn ec() -> EncodingKey {
        EncodingKey::from_ec_pem(&pem("ec-test-key.pem")).unwrap()
    }

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk
    }

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
        let (url, hits) = serve(vec![json!({"keys": [jwk(&key, Algorithm::RS256, "k1")]})]).await;
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

    #[test]
    fn keeps_only_keys_for_the_pinned_algorithm() {
        let rsa_key = rsa("rsa-test-key.pem");
        let ec_key = ec();
        let mut encryption = jwk(&rsa_key, Algorithm::RS256, "enc");
        encryption["use"] = json!("enc");
        let mut other_alg = jwk(&rsa_key, Algorithm::RS256, "ps");
        other_alg["alg"] = json!("PS256");
        let document = json!({"keys": [
            jwk(&rsa_key, Algorithm::RS256, "rsa"),
            jwk(&ec_key, Algorithm::ES256, "ec"),
            encryption,
            other_alg,
            {"kty": "OKP", "crv": "X25519", "x": "abc", "kid": "weird"},
            {"kty": "unknown"},
        ]});
        let bytes = serde_json::to_vec(&document).unwrap();
        let ids = |alg| {
            usable_keys(&bytes, alg)
                .unwrap()
                .into_iter()
                .map(|(kid, _)| kid.unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(JwtAlgorithm::Rs256), ["rsa"]);
        assert_eq!(ids(JwtAlgorithm::Es256), ["ec"]);
        assert!(usable_keys(b"[]", JwtAlgorithm::Rs256).is_err());
    }
}
