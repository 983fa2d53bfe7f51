//! The event payloads API Gateway sends to WebSocket integrations and to a REQUEST
//! authorizer, built field for field as AWS sends them, so the functions cannot tell the
//! local gateway from API Gateway.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value, json};

/// What API Gateway knows about a connection when it builds an event.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The connection id.
    pub connection_id: String,
    /// The stage from the URL path.
    pub stage: String,
    /// `host:port` the client connected to.
    pub domain_name: String,
    /// When the connection opened, Unix ms.
    pub connected_at: u64,
    /// The client's address.
    pub source_ip: String,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// The handshake request: headers and query string, each possibly repeated.
#[derive(Clone, Debug, Default)]
pub struct Handshake {
    /// Header name → values, in order.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Query parameter → values, in order.
    pub query: BTreeMap<String, Vec<String>>,
}

/// The local API id, in ARNs and `requestContext.apiId`.
pub const API_ID: &str = "local";

/// A request id in API Gateway's shape: 16 characters of base64.
pub fn request_id() -> String {
    let bytes: [u8; 12] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A connection id in API Gateway's shape: 16 characters of URL-safe base64.
pub fn connection_id() -> String {
    let bytes: [u8; 11] = rand::random();
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

/// `epoch_ms` as API Gateway writes request times (`02/Dec/2026:06:30:00 +0000`).
pub(crate) fn request_time(epoch_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms as i64)
        .unwrap_or_default()
        .format("%d/%b/%Y:%H:%M:%S +0000")
        .to_string()
}

fn single_and_multi(values: &BTreeMap<String, Vec<String>>) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi = Map::new();
    for (name, list) in values {
        if let Some(last) = list.last() {
            single.insert(name.clone(), Value::from(last.clone()));
        }
        multi.insert(name.clone(), Value::from(list.clone()));
    }
    (Value::Object(single), Value::Object(multi))
}

fn request_context(
    info: &ConnectionInfo,
    route_key: &str,
    event_type: &str,
    received_at: u64,
) -> Map<String, Value> {
    let id = request_id();
    let mut identity = Map::new();
    identity.insert("sourceIp".into(), Value::from(info.source_ip.clone()));
    if let Some(agent) = &info.user_agent {
        identity.insert("userAgent".into(), Value::from(agent.clone()));
    }
    let context = json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": id,
        "requestTime": request_time(received_at),
        "messageDirection": "IN",
        "stage": info.stage,
        "connectedAt": info.connected_at,
        "requestTimeEpoch": received_at,
        "identity": identity,
        "requestId": id,
        "domainName": info.domain_name,
        "connectionId": info.connection_id,
        "apiId": API_ID,
    });
    match context {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}

/// The `methodArn` of a `$connect` on this stage.
pub fn connect_method_arn(stage: &str) -> String {
    format!("arn:aws:execute-api:us-east-1:000000000000:{API_ID}/{stage}/$connect")
}

/// The REQUEST authorizer event for a handshake.
pub fn authorizer_request(info: &ConnectionInfo, handshake: &Handshake, received_at: u64) -> Value {
    let (headers, multi_headers) = single_and_multi(&handshake.headers);
    let (query, multi_query) = single_and_multi(&handshake.query);
    json!({
        "type": "REQUEST",
        "methodArn": connect_method_arn(&info.stage),
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "stageVariables": {},
        "requestContext": request_context(info, "$connect", "CONNECT", received_at),
    })
}

/// The authorizer block later events carry: the authorizer's context plus `principalId`.
/// API Gateway hands context numbers and booleans on as strings (`1` arrives as `"1"`,
/// `true` as `"true"`), so functions must not rely on their JSON types.
pub fn authorizer_block(
    principal_id: &str,
    context: &Map<String, Value>,
    latency_ms: u64,
) -> Map<String, Value> {
    let mut block: Map<String, Value> = context
        .iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            (key.clone(), Value::String(text))
        })
        .collect();
    block.insert("principalId".into(), Value::from(principal_id));
    block.insert("integrationLatency".into(), Value::from(latency_ms));
    block
}

fn with_authorizer(
    mut context: Map<String, Value>,
    authorizer: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    if let Some(block) = authorizer {
        context.insert("authorizer".into(), Value::Object(block.clone()));
    }
    context
}

/// The `$connect` event.
pub fn connect(
    info: &ConnectionInfo,
    handshake: &Handshake,
    authorizer: Option<&Map<String, Value>>,
    received_at: u64,
) -> Value {
    let (headers, multi_headers) = single_and_multi(&handshake.headers);
    let mut event = json!({
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "requestContext": with_authorizer(request_context(info, "$connect", "CONNECT", received_at), authorizer),
        "isBase64Encoded": false,
    });
    if !handshake.query.is_empty() {
        let (query, multi_query) = single_and_multi(&handshake.query);
        event["queryStringParameters"] = query;
        event["multiValueQueryStringParameters"] = multi_query;
    }
    event
}

/// A message event for `route_key`; binary frames travel base64-encoded.
pub fn message(
    info: &ConnectionInfo,
    route_key: &str,
    body: &[u8],
    binary: bool,
    authorizer: Option<&Map<String, Value>>,
    received_at: u64,
) -> Value {
    let mut context = with_authorizer(
        request_context(info, route_key, "MESSAGE", received_at),
        authorizer,
    );
    context.insert("messageId".into(), Value::from(request_id()));
    let body = if binary {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    json!({
        "requestContext": context,
        "body": body,
        "isBase64Encoded": binary,
    })
}

/// The `$disconnect` event.
pub fn disconnect(
    info: &ConnectionInfo,
    status_code: u16,
    reason: &str,
    authorizer: Option<&Map<String, Value>>,
    received_at: u64,
) -> Value {
    let mut context = with_authorizer(
        request_context(info, "$disconnect", "DISCONNECT", received_at),
        authorizer,
    );
    context.insert("disconnectStatusCode".into(), Value::from(status_code));
    context.insert("disconnectReason".into(), Value::from(reason));
    json!({
        "headers": {"Host": info.domain_name},
        "multiValueHeaders": {"Host": [info.domain_name]},
        "requestContext": context,
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::apigw::{
        ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayWebsocketProxyRequest,
    };

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            connection_id: connection_id(),
            stage: "local".into(),
            domain_name: "127.0.0.1:3001".into(),
            connected_at: 1_794_384_930_412,
            source_ip: "127.0.0.1".into(),
            user_agent: Some("test".into()),
        }
    }

    #[test]
    fn connection_ids_look_like_api_gateways() {
        let id = connection_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
    }

    #[test]
    fn events_parse_as_the_lambda_event_types() {
        let info = info();
        let handshake = Handshake {
            headers: BTreeMap::from([("Host".into(), vec!["127.0.0.1:3001".into()])]),
            query: BTreeMap::from([("token".into(), vec!["t".into()])]),
        };
        let auth: ApiGatewayCustomAuthorizerRequestTypeRequest =
            serde_json::from_value(authorizer_request(&info, &handshake, 1)).unwrap();
        assert_eq!(auth.query_string_parameters.first("token"), Some("t"));
        assert_eq!(
            auth.method_arn.unwrap(),
            "arn:aws:execute-api:us-east-1:000000000000:local/local/$connect"
        );

        let context = Map::from_iter([
            ("sub".to_owned(), Value::from("alice")),
            ("exp".to_owned(), Value::from(1794388530u64)),
            ("admin".to_owned(), Value::from(false)),
        ]);
        let block = authorizer_block("alice", &context, 3);
        assert_eq!(block["exp"], "1794388530", "numbers arrive as strings");
        assert_eq!(block["admin"], "false", "so do booleans");
        let connect: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(self::connect(&info, &handshake, Some(&block), 2)).unwrap();
        assert_eq!(connect.request_context.authorizer.fields["sub"], "alice");
        assert_eq!(
            connect.request_context.connection_id.as_deref(),
            Some(info.connection_id.as_str())
        );
        assert_eq!(
            connect.request_context.event_type.as_deref(),
            Some("CONNECT")
        );

        let message: ApiGatewayWebsocketProxyRequest = serde_json::from_value(self::message(
            &info,
            "$default",
            b"{}",
            false,
            Some(&block),
            5,
        ))
        .unwrap();
        assert_eq!(message.body.as_deref(), Some("{}"));
        assert_eq!(message.request_context.request_time_epoch, 5);
        assert_eq!(message.request_context.connected_at, 1_794_384_930_412);

        let disconnect: ApiGatewayWebsocketProxyRequest =
            serde_json::from_value(self::disconnect(&info, 1001, "Going away", None, 6)).unwrap();
        assert_eq!(
            disconnect.request_context.disconnect_status_code,
            Some(1001)
        );
    }
}
