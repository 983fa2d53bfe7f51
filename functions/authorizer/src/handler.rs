//! Turns a `$connect` authorizer request into an Allow policy carrying the caller's
//! identity, a Deny (HTTP 403), or `Unauthorized` (HTTP 401).

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerPolicy, ApiGatewayCustomAuthorizerRequestTypeRequest,
    ApiGatewayCustomAuthorizerResponse,
};
use aws_lambda_events::iam::{IamPolicyEffect, IamPolicyStatement};
use deltacast::auth::{AuthError, JwtVerifier};
use lambda_runtime::Diagnostic;
use serde_json::Value;
use tracing::{info, warn};

/// The query-string parameter that carries the token.
pub const TOKEN_PARAMETER: &str = "token";

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
pub fn handle(
    request: ApiGatewayCustomAuthorizerRequestTypeRequest,
    verifier: &JwtVerifier,
) -> Result<ApiGatewayCustomAuthorizerResponse, Unauthorized> {
    let method_arn = request.method_arn.clone().unwrap_or_default();
    let token = request
        .query_string_parameters
        .first(TOKEN_PARAMETER)
        .unwrap_or_default();
    match verifier.verify(token) {
        Ok(identity) => {
            info!(sub = %identity.sub, "connection allowed");
            let mut response = policy(&identity.sub, IamPolicyEffect::Allow, &method_arn);
            response.context = Value::Object(identity.to_context().into_iter().collect());
            Ok(response)
        }
        Err(AuthError::Denied(reason)) => {
            warn!(%reason, "connection denied");
            Ok(policy("denied", IamPolicyEffect::Deny, &method_arn))
        }
        Err(err) => {
            info!(reason = %err, "connection unauthorized");
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
    use deltacast::auth::{Identity, JwtConfig};
    use deltacast::config::Env;
    use deltacast_tests::tokens::{TEST_SECRET, sign};
    use serde_json::json;

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(
            &JwtConfig::from_env(&Env::from_pairs([("JWT_SECRET", TEST_SECRET.to_owned())]))
                .unwrap(),
        )
    }

    /// The fixture is the request API Gateway sends for `$connect`, with `token` set.
    fn request(token: Option<&str>) -> ApiGatewayCustomAuthorizerRequestTypeRequest {
        let mut event: Value = serde_json::from_slice(include_bytes!(
            "../../../tests/fixtures/authorizer-connect.json"
        ))
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

    #[test]
    fn allows_a_valid_token_and_passes_the_identity_on() {
        let token = sign(json!({"sub": "alice", "channels": {"chat:*": ["subscribe"]}}));
        let response = handle(request(Some(&token)), &verifier()).unwrap();
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

    #[test]
    fn refuses_missing_and_invalid_tokens_with_unauthorized() {
        assert!(handle(request(None), &verifier()).is_err());
        assert!(handle(request(Some("garbage")), &verifier()).is_err());
        let expired = sign(json!({"sub": "alice", "exp": 1_000_000}));
        assert!(handle(request(Some(&expired)), &verifier()).is_err());
        let diagnostic = Diagnostic::from(Unauthorized);
        assert_eq!(diagnostic.error_message, "Unauthorized");
    }

    #[test]
    fn denies_genuine_tokens_with_bad_claims() {
        let token = sign(json!({"sub": "alice", "channels": {"chat:*": ["launch"]}}));
        let response = handle(request(Some(&token)), &verifier()).unwrap();
        assert_eq!(
            response.policy_document.statement[0].effect,
            IamPolicyEffect::Deny
        );
        assert_eq!(response.context, Value::Null);
    }
}
