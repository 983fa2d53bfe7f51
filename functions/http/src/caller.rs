//! Who sent a request. Two ways in:
//! - a JWT, verified as the `$connect` authorizer verifies it (same issuer, keys and
//!   capability claims), from `Authorization: Bearer <token>`, or from the `token` query
//!   parameter for clients that cannot set headers (a browser's `EventSource`);
//! - AWS credentials: a request signed with SigV4 through the function's IAM URL, where
//!   Lambda checks the signature and the caller's `lambda:InvokeFunctionUrl` permission
//!   before the function runs. Such a caller is a backend: it may do everything on every
//!   channel, as `iam:<principal ARN>` (its rate-limit bucket is that user's).
//!
//! A request with neither is refused with 401; a token whose claims are not acceptable
//! with 403. Nothing is read or written before.

use std::sync::LazyLock;

use deltacast::auth::{AuthError, Capabilities, Identity, JwtVerifier};
use lambda_http::http::StatusCode;
use tracing::debug;

use crate::incoming::Incoming;
use crate::problem::Problem;

/// The query parameter that may carry the token, as on the WebSocket handshake.
pub const TOKEN_PARAMETER: &str = "token";

/// The identity behind `request`.
pub async fn identify(request: &Incoming, verifier: &JwtVerifier) -> Result<Identity, Problem> {
    if let Some(principal) = &request.iam {
        return Ok(backend(principal));
    }
    let token =
        bearer(request).or_else(|| request.param(TOKEN_PARAMETER).filter(|t| !t.is_empty()));
    let Some(token) = token else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no token: send `Authorization: Bearer <JWT>` (or `?token=` where headers cannot be set), or sign the request with AWS credentials through the IAM URL",
        ));
    };
    verifier.verify(token).await.map_err(|error| {
        debug!(%error, "token refused");
        match error {
            AuthError::Missing => {
                Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "no token")
            }
            AuthError::Unauthorized(reason) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("invalid token: {reason}"),
            ),
            AuthError::Denied(reason) => Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("token refused: {reason}"),
            ),
        }
    })
}

/// An assumed role's ARN without its session name; any other ARN as it is.
fn without_session(principal: &str) -> &str {
    match principal.split_once(":assumed-role/") {
        Some((_, role_and_session)) => match role_and_session.split_once('/') {
            Some((_, session)) => &principal[..principal.len() - session.len() - 1],
            None => principal,
        },
        None => principal,
    }
}

/// The token of an `Authorization: Bearer` header.
fn bearer(request: &Incoming) -> Option<&str> {
    let value = request.header("authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// A backend AWS authenticated: every action on every channel, never expiring. A role's
/// sessions are one backend (its workers' retries are one publisher's, and share one
/// rate limit): `arn:aws:sts::<account>:assumed-role/<role>/<session>` counts as
/// `arn:aws:sts::<account>:assumed-role/<role>`.
fn backend(principal: &str) -> Identity {
    static EVERYTHING: LazyLock<Capabilities> = LazyLock::new(|| {
        Capabilities::from_json(r#"{"*":["subscribe","publish","history","presence"]}"#)
            .expect("a valid grant")
    });
    Identity {
        sub: format!("iam:{}", without_session(principal)),
        capabilities: EVERYTHING.clone(),
        exp: u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::auth::Action;
    use deltacast::protocol::Channel;
    use deltacast_tests::tokens::{sign, verifier};
    use lambda_http::http::{HeaderMap, HeaderValue, Method};
    use serde_json::json;

    fn request(authorization: Option<&str>, query: &[(&str, &str)]) -> Incoming {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert("authorization", HeaderValue::from_str(value).unwrap());
        }
        Incoming {
            method: Method::GET,
            path: "/v1/channels/chat:a/messages".into(),
            query: query
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            headers,
            body: Default::default(),
            iam: None,
            deadline_ms: u64::MAX,
        }
    }

    #[tokio::test]
    async fn a_bearer_token_or_the_token_parameter_identifies_the_caller() {
        let token = sign(json!({"sub": "svc", "channels": {"chat:*": ["publish"]}}));
        for request in [
            request(Some(&format!("Bearer {token}")), &[]),
            request(Some(&format!("bearer  {token}")), &[]),
            request(None, &[("token", &token)]),
        ] {
            let identity = identify(&request, &verifier()).await.unwrap();
            assert_eq!(identity.sub, "svc");
            let channel = Channel::parse("chat:a").unwrap();
            assert!(identity.may(Action::Publish, &channel));
            assert!(!identity.may(Action::History, &channel));
        }
    }

    #[tokio::test]
    async fn no_token_or_a_bad_one_is_401_and_unacceptable_claims_are_403() {
        let none = identify(&request(None, &[]), &verifier())
            .await
            .unwrap_err();
        assert_eq!(none.status, StatusCode::UNAUTHORIZED);
        assert!(none.detail.starts_with("no token"), "{}", none.detail);
        let bad = identify(&request(Some("Bearer not.a.jwt"), &[]), &verifier())
            .await
            .unwrap_err();
        assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
        assert_eq!(bad.code, "unauthorized");
        let denied = sign(json!({"sub": "svc", "channels": {"chat:*": ["fly"]}}));
        let denied = identify(
            &request(Some(&format!("Bearer {denied}")), &[]),
            &verifier(),
        )
        .await
        .unwrap_err();
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
        assert_eq!(denied.code, "forbidden");
    }

    #[tokio::test]
    async fn a_caller_aws_authenticated_is_a_backend_allowed_everything() {
        let mut request = request(None, &[]);
        request.iam = Some("arn:aws:iam::123456789012:role/orders".into());
        let identity = identify(&request, &verifier()).await.unwrap();
        assert_eq!(identity.sub, "iam:arn:aws:iam::123456789012:role/orders");
        let channel = Channel::parse("orders:42").unwrap();
        assert!(identity.may(Action::Publish, &channel));
        assert!(identity.may(Action::History, &channel));
    }

    #[tokio::test]
    async fn every_session_of_a_role_is_one_backend() {
        let mut request = request(None, &[]);
        for session in ["i-0abc", "ecs-task-7"] {
            request.iam = Some(format!(
                "arn:aws:sts::123456789012:assumed-role/orders/{session}"
            ));
            let identity = identify(&request, &verifier()).await.unwrap();
            assert_eq!(
                identity.sub,
                "iam:arn:aws:sts::123456789012:assumed-role/orders"
            );
        }
        assert_eq!(
            without_session("arn:aws:iam::123456789012:user/deploy"),
            "arn:aws:iam::123456789012:user/deploy"
        );
    }
}
