//! Stores a connection: id, user, capabilities, connected-at, last-seen and TTL, and
//! echoes the `deltacast.v1` subprotocol when the client offered it (browsers send their
//! token as `Sec-WebSocket-Protocol: deltacast.v1, bearer.<JWT>`, and a handshake that
//! offers subprotocols must get one of them back).

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use deltacast::auth::{Identity, SUBPROTOCOL, offered_subprotocols};
use deltacast::clock;
use deltacast::store::{NewConnection, Store, StoreError};
use tracing::{error, info};

/// Stores the connection; answers 200, or 401 when the request carries no identity (the
/// route is not behind the authorizer).
pub async fn handle(
    request: ApiGatewayWebsocketProxyRequest,
    store: &Store,
) -> Result<ApiGatewayProxyResponse, StoreError> {
    let context = &request.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    let identity = match Identity::from_context(&context.authorizer.fields) {
        Ok(identity) => identity,
        Err(reason) => {
            error!(connection_id, %reason, "$connect without a verified identity; is the authorizer attached?");
            return Ok(status(401));
        }
    };
    let connected_at = match context.connected_at {
        0 => clock::now_ms(),
        at => at as u64,
    };
    store
        .put_connection(&NewConnection {
            connection_id,
            sub: &identity.sub,
            capabilities: &identity.capabilities.to_json(),
            token_exp: identity.exp,
            connected_at,
            source_ip: context.identity.source_ip.as_deref(),
        })
        .await?;
    info!(connection_id, sub = %identity.sub, "connected");
    deltacast::metrics::connection_opened();
    let mut response = status(200);
    if offered_subprotocols(&request.headers).any(|entry| entry == SUBPROTOCOL) {
        response.headers.insert(
            "sec-websocket-protocol",
            aws_lambda_events::http::HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    Ok(response)
}

/// A response with only a status code.
pub fn status(code: i64) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast_tests::{events, fresh_store};

    #[tokio::test]
    async fn stores_the_connection_with_its_identity() {
        let store = fresh_store().await;
        let request = events::connect("conn-1", "alice", r#"{"chat:*":["subscribe"]}"#);
        let response = handle(request, &store).await.unwrap();
        assert_eq!(response.status_code, 200);
        let item = store.connection("conn-1").await.unwrap().expect("stored");
        assert_eq!(item.sub, "alice");
        assert_eq!(item.caps, r#"{"chat:*":["subscribe"]}"#);
        assert_eq!(item.ip.as_deref(), Some("203.0.113.7"));
        assert_eq!(
            item.ttl,
            item.at / 1000 + 3 * 3600,
            "expires 3 h after connecting"
        );
    }

    #[tokio::test]
    async fn refuses_a_request_without_identity_and_stores_nothing() {
        let store = fresh_store().await;
        let mut request = events::connect("conn-2", "alice", "{}");
        request.request_context.authorizer.fields.clear();
        assert_eq!(handle(request, &store).await.unwrap().status_code, 401);
        assert!(store.connection("conn-2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn echoes_the_deltacast_subprotocol_only() {
        let store = fresh_store().await;
        let mut request = events::connect("conn-3", "alice", "{}");
        request.headers.insert(
            "sec-websocket-protocol",
            "deltacast.v1, bearer.abc.def.ghi".parse().unwrap(),
        );
        let response = handle(request, &store).await.unwrap();
        assert_eq!(response.headers["sec-websocket-protocol"], "deltacast.v1");
        let plain = handle(events::connect("conn-4", "alice", "{}"), &store)
            .await
            .unwrap();
        assert!(plain.headers.get("sec-websocket-protocol").is_none());
    }
}
