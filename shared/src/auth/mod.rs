//! Who a connection is and what it may do: JWT verification for the `$connect`
//! authorizer, the capability rules checked on every action, and the [`Identity`] that
//! travels from the authorizer to every later route in API Gateway's authorizer context.
//!
//! ## Layout
//! - `subprotocol`: the `deltacast.v1` subprotocol and tokens offered as `bearer.<JWT>`.
//! - `jwt`: [`JwtConfig`] from the environment and [`JwtVerifier`], which turns a token
//!   into an [`Identity`].
//! - `algorithm`: the one pinned [`JwtAlgorithm`].
//! - `jwks`: signing keys fetched from a JWKS endpoint and cached (RS256, ES256).
//! - `capabilities`: [`Capabilities`] and [`Action`], what a token's `channels` claim
//!   allows; the rules are documented there.
//! - `identity`: [`Identity`], and its trip through the authorizer context; the one
//!   expiry rule, [`token_expired`].
//! - `error`: [`AuthError`], why a token was refused.

mod algorithm;
mod capabilities;
mod error;
mod identity;
mod jwks;
mod jwt;
mod subprotocol;
#[cfg(test)]
mod test_keys;

pub use algorithm::JwtAlgorithm;
pub use capabilities::{Action, Capabilities};
pub use error::AuthError;
pub use identity::{Identity, token_expired};
pub use jwt::{Claims, JwtConfig, JwtVerifier, MAX_SUB_LEN, MIN_SECRET_BYTES};
pub use subprotocol::{BEARER_PROTOCOL_PREFIX, SUBPROTOCOL, offered_subprotocols};
