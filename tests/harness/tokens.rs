//! Signed test tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

/// The HS256 secret tests sign with.
pub const TEST_SECRET: &str = "deltacast-test-secret-at-least-32-bytes";

/// Signs `claims` with [`TEST_SECRET`], adding an `exp` one hour ahead if it has none.
pub fn sign(claims: Value) -> String {
    sign_with(claims, TEST_SECRET)
}

/// Signs `claims` with `secret`, adding an `exp` one hour ahead if it has none.
pub fn sign_with(mut claims: Value, secret: &str) -> String {
    if claims.get("exp").is_none() {
        claims["exp"] = Value::from(jsonwebtoken::get_current_timestamp() + 3600);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("claims serialise")
}
