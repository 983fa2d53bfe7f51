//! Signed test tokens. The tests' stacks verify with the same secret as every other local
//! tool: `JWT_SECRET` when it is set, else the development secret ([`secret`]).

use deltacast::auth::{JwtConfig, JwtVerifier};
use deltacast::config::Env;
use deltacast_local::stack::{DEV_JWT_SECRET, jwt_secret_from_env};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::Value;

/// The default HS256 secret: the development secret. Unit tests that build their own
/// verifier sign with it; tests against a stack use [`secret`].
pub const TEST_SECRET: &str = DEV_JWT_SECRET;

/// The secret the tests' stacks verify with: `JWT_SECRET`, else [`TEST_SECRET`].
pub fn secret() -> String {
    jwt_secret_from_env()
}

/// A verifier of HS256 tokens signed with [`secret`], as the functions build it.
pub fn verifier() -> JwtVerifier {
    JwtVerifier::new(&JwtConfig::from_env(&Env::from_pairs([("JWT_SECRET", secret())])).unwrap())
        .unwrap()
}

/// Signs `claims` with [`secret`], adding an `exp` one hour ahead if it has none.
pub fn sign(claims: Value) -> String {
    sign_with(claims, &secret())
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
