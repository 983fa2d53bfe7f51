//! Signing keys for the auth tests (the checked-in fixtures under `tests/fixtures/keys/`)
//! and their public JWKs, shared by the key-set and the verifier tests.

use jsonwebtoken::Algorithm;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::{Value, json};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/keys/");

/// A fixture file's bytes.
fn pem(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}{name}")).unwrap()
}

/// An RSA fixture key.
pub fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem(name)).unwrap()
}

/// The P-256 fixture key.
pub fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(&pem("ec-test-key.pem")).unwrap()
}

/// `key`'s public JWK for signing with `alg`, named `kid`.
pub fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut jwk = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk
}
