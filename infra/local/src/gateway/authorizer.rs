//! Reading what a `$connect` authorizer needs and answers: whether the handshake carries
//! the identity sources, and whether the returned policy allows the connection (its
//! context must hold strings, numbers and booleans only, as API Gateway insists).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::events::Handshake;

pub(super) fn has_identity_source(source: &str, handshake: &Handshake) -> bool {
    let present = |map: &BTreeMap<String, Vec<String>>, name: &str| {
        map.iter()
            .any(|(k, v)| k.eq_ignore_ascii_case(name) && v.iter().any(|x| !x.is_empty()))
    };
    if let Some(name) = source.strip_prefix("route.request.querystring.") {
        present(&handshake.query, name)
    } else if let Some(name) = source.strip_prefix("route.request.header.") {
        present(&handshake.headers, name)
    } else {
        true
    }
}

/// Reads an authorizer response: `Ok((principal, context))` for an Allow, the status
/// to answer otherwise.
pub(super) fn read_policy(
    response: &Value,
) -> Result<(String, Map<String, Value>), (StatusCode, String)> {
    let statements: Vec<&Value> = match response.pointer("/policyDocument/Statement") {
        Some(Value::Array(list)) => list.iter().collect(),
        Some(single @ Value::Object(_)) => vec![single],
        _ => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorizer response has no policyDocument.Statement".into(),
            ));
        }
    };
    let effect = |s: &Value| {
        s.get("Effect")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    if statements.iter().any(|s| effect(s) == "Deny")
        || !statements.iter().any(|s| effect(s) == "Allow")
    {
        return Err((StatusCode::FORBIDDEN, "authorizer policy denies".into()));
    }
    let context = match response.get("context") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                "authorizer context is not an object".into(),
            ));
        }
    };
    if let Some((key, _)) = context
        .iter()
        .find(|(_, v)| !(v.is_string() || v.is_number() || v.is_boolean()))
    {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("authorizer context value {key:?} is not a string, number or boolean"),
        ));
    }
    let principal = response
        .get("principalId")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    Ok((principal, context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_allow_deny_and_check_context_values() {
        let allow = json!({"principalId": "alice", "policyDocument": {"Version": "2012-10-17", "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": ["arn"]}]}, "context": {"sub": "alice", "n": 1, "b": true}});
        let (principal, context) = read_policy(&allow).unwrap();
        assert_eq!(principal, "alice");
        assert_eq!(context.len(), 3);
        let deny = json!({"principalId": "x", "policyDocument": {"Statement": [{"Effect": "Deny", "Action": "execute-api:Invoke", "Resource": "arn"}]}});
        assert_eq!(read_policy(&deny).unwrap_err().0, StatusCode::FORBIDDEN);
        let nested = json!({"principalId": "x", "policyDocument": {"Statement": [{"Effect": "Allow"}]}, "context": {"caps": {"a": 1}}});
        assert_eq!(
            read_policy(&nested).unwrap_err().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            read_policy(&json!({})).unwrap_err().0,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn identity_sources_must_be_present() {
        let handshake = Handshake {
            headers: BTreeMap::from([("Authorization".into(), vec!["Bearer x".into()])]),
            query: BTreeMap::from([("token".into(), vec!["".into()])]),
        };
        assert!(has_identity_source(
            "route.request.header.authorization",
            &handshake
        ));
        assert!(
            !has_identity_source("route.request.querystring.token", &handshake),
            "empty"
        );
        assert!(!has_identity_source(
            "route.request.header.X-Missing",
            &handshake
        ));
    }
}
