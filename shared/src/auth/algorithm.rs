//! The one signing algorithm tokens must use, fixed by configuration. It is shared by
//! token verification (`jwt`) and the JWKS key cache (`jwks`), which keeps only keys
//! usable with it; it lives apart so neither of the two depends on the other's internals.

use jsonwebtoken::Algorithm;

/// The one algorithm tokens must be signed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`JWT_SECRET`).
    Hs256,
    /// RSA PKCS#1 v1.5 with SHA-256, keys from a JWKS (`JWT_JWKS_URL`).
    Rs256,
    /// ECDSA P-256 with SHA-256, keys from a JWKS (`JWT_JWKS_URL`).
    Es256,
}

impl JwtAlgorithm {
    /// The algorithm named by `JWT_ALGORITHM` (`HS256`, `RS256` or `ES256`).
    pub(super) fn parse(text: &str) -> Option<Self> {
        match text {
            "HS256" => Some(Self::Hs256),
            "RS256" => Some(Self::Rs256),
            "ES256" => Some(Self::Es256),
            _ => None,
        }
    }

    /// The same algorithm, as `jsonwebtoken` names it.
    pub(super) fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}
