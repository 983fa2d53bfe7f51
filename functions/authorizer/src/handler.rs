//! Turns a `$connect` authorizer request into an Allow policy carrying the caller's
//! identity, a Deny (HTTP 403), or `Unauthorized` (HTTP 401).
//!
//! The token is read from the `token` query parameter, or, for browsers (which cannot set
//! headers on a WebSocket), from the `Sec-WebSocket-Protocol` header as
//! `deltacast.v1, bearer.<JWT>`. The query parameter wins when both are present.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use deltacast::auth::{AuthError, BEARER_PROTOCOL_PREFIX, JwtVerifier, offered_subprotocols};
use deltacast::metrics::{self, Refusal};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use tracing::{info, warn};

/// The query-string parameter that carries the token.
pub const TOKEN_PARAMETER: &str = "token";

/// The token of a handshake: the query parameter, else a `bearer.` subprotocol entry.
fn token_of(request: &ApiGatewayCustomAuthorizerRequestTypeRequest) -> &str {
    if let Some(token) = request.query_string_parameters.first(TOKEN_PARAMETER)
        && !token.is_empty()
    {
        return token;
    }
    offered_subprotocols(&request.headers)
        .find_map(|entry| entry.strip_prefix(BEARER_PROTOCOL_PREFIX))
        .unwrap_or_default()
}

/// The handshake is refused with HTTP 401: API Gateway answers 401 when the authorizer
/// fails with exactly the message `Unauthorized`.
#[derive(Debug, thiserror::Error)]
#[error("Unauthorized")]
pub struct Unauthorized;

impl From<Unauthorized> for Diagnostic {
    fn from(_: Unauthorized) -> Self {
        Diagnostic {
            error_type: "Unauthorized".into(),
            error_message: "Unauthorized".into(),
        }
    }
}

/// Verifies the request's token.
pub async fn handle(
    request: ApiGatewayCustomAuthorizerRequestTypeRequest,
    verifier: &JwtVerifier,
) -> Result<ApiGatewayCustomAuthorizerResponse, Unauthorized> {
    let method_arn = request.method_arn.clone().unwrap_or_default();
    match verifier.verify(token_of(&request)).await {
        Ok(identity) => {
            info!(sub = %identity.sub, "connection allowed");
            let mut response = policy(&identity.sub, IamPolicyEffect::Allow, &method_arn);
            response.context = Value::Object(identity.to_context().into_iter().collect());
            Ok(response)
        }
        Err(AuthError::Denied(reason)) => {
            warn!(%reason, "connection denied");
            metrics::handshake_refused(Refusal::Denied);
            Ok(policy("denied", IamPolicyEffect::Deny, &method_arn))
        }
        Err(err) => {
            info!(reason = %err, "connection unauthorized");
            metrics::handshake_refused(match err {
                AuthError::Missing => Refusal::MissingToken,
                _ => Refusal::InvalidToken,
            });
            Err(Unauthorized)
        }
    }
}

fn policy(
    principal: &str,
    effect: IamPolicyEffect,
    method_arn: &str,
) -> ApiGatewayCustomAuthorizerResponse {
    let mut statement = IamPolicyStatement::default();
    statement.action = vec!["execute-api:Invoke".into()];
    statement.effect = effect;
    statement.resource = vec![method_arn.to_owned()];
    let mut document = ApiGatewayCustomAuthorizerPolicy::default();
    document.version = Some("2012-10-17".into());
    document.statement = vec![statement];
    let mut response = ApiGatewayCustomAuthorizerResponse::default();
    response.principal_id = Some(principal.to_owned());
    response.policy_document = document;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::auth::Identity;
    use deltacast_tests::tokens::{sign, verifier};
    use serde_json::json;

    /// `events/authorizer-connect.json`, the request API Gateway sends for `$connect`,
    /// with its token replaced by `token` (or removed).
    fn request(token: Option<&str>) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
        let mut event: Value =
            serde_json::from_slice(include_bytes!("../../../events/authorizer-connect.json"))
                .unwrap();
        match token {
            Some(t) => event["queryStringParameters"]["token"] = json!(t),
            None => {
                event["queryStringParameters"]
                    .as_object_mut()
                    .unwrap()
                    .remove("token");
            }
        }
        serde_json::from_value(event).unwrap()
    }

    #[tokio::test]
    async fn allows_a_valid_token_and_passes_the_identity_on() {
        let token = sign(json!({"sub": "alice", "channels": {"chat:*": ["subscribe"]}}));
        let response = handle(request(Some(&token)), &verifier()).await.unwrap();
        assert_eq!(response.principal_id.as_deref(), Some("alice"));
        let statement = &response.policy_document.statement[0];
        assert_eq!(statement.effect, IamPolicyEffect::Allow);
        assert_eq!(
            statement.resource,
            ["arn:aws:execute-api:us-east-1:123456789012:abcdef1234/prod/$connect"]
        );
        let context = response.context.as_object().unwrap();
        assert!(
            context
                .values()
                .all(|v| v.is_string() || v.is_number() || v.is_boolean())
        );
        let identity = Identity::from_context(&context.clone().into_iter().collect()).unwrap();
        assert_eq!(identity.sub, "alice");
    }

    #[tokio::test]
    async fn refuses_missing_and_invalid_tokens_with_unauthorized() {
        assert!(handle(request(None), &verifier()).await.is_err());
        assert!(handle(request(Some("garbage")), &verifier()).await.is_err());
        let expired = sign(json!({"sub": "alice", "exp": 1_000_000}));
        assert!(handle(request(Some(&expired)), &verifier()).await.is_err());
        let diagnostic = Diagnostic::from(Unauthorized);
        assert_eq!(diagnostic.error_message, "Unauthorized");
    }

    #[tokio::test]
    async fn denies_genuine_tokens_with_bad_claims() {
        let token = sign(json!({"sub": "alice", "channels": {"chat:*": ["launch"]}}));
        let response = handle(request(Some(&token)), &verifier()).await.unwrap();
        assert_eq!(
            response.policy_document.statement[0].effect,
            IamPolicyEffect::Deny
        );
        assert_eq!(response.context, Value::Null);
    }

    #[tokio::test]
    async fn reads_the_token_from_the_subprotocol_header() {
        let token = sign(json!({"sub": "bob"}));
        let mut event = request(None);
        event.headers.insert(
            "sec-websocket-protocol",
            format!("deltacast.v1, bearer.{token}").parse().unwrap(),
        );
        let response = handle(event.clone(), &verifier()).await.unwrap();
        assert_eq!(response.principal_id.as_deref(), Some("bob"));
        event
            .headers
            .insert("sec-websocket-protocol", "deltacast.v1".parse().unwrap());
        assert!(
            handle(event, &verifier()).await.is_err(),
            "no bearer entry, no token"
        );
    }

    #[tokio::test]
    async fn never_logs_the_token() {
        let capture = deltacast_tests::logs::capture();
        let good = sign(json!({"sub": "alice"}));
        let expired = sign(json!({"sub": "alice", "exp": 1_000_000}));
        let denied = sign(json!({"sub": "alice", "channels": {"x": ["nope"]}}));
        for token in [&good, &expired, &denied] {
            let _ = handle(request(Some(token)), &verifier()).await;
        }
        let logged = capture.logs.text();
        assert!(
            logged.contains("connection allowed"),
            "the capture works: {logged}"
        );
        for token in [&good, &expired, &denied] {
            let signature = token.rsplit('.').next().unwrap();
            assert!(!logged.contains(signature), "a token reached the logs");
        }
    }
}
