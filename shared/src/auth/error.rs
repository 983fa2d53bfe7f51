//! Why a token was refused, in the two kinds the handshake must tell apart: not a
//! valid token at all (401) and a genuine token whose claims are not acceptable (403).

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
