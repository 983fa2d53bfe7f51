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

use super::algorithm::JwtAlgorithm;
use super::error::AuthError;

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
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    use crate::auth::test_keys::{ec, jwk, rsa};

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
