//! Removes a closed connection. `$disconnect` is best-effort in AWS, so everything it
//! removes also expires by TTL and is pruned by the fan-out on HTTP 410.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use deltacast::store::{Store, StoreError};
use tracing::info;

/// Removes the connection's items and its subscriptions.
pub async fn handle(
    request: ApiGatewayWebsocketProxyRequest,
    store: &Store,
) -> Result<ApiGatewayProxyResponse, StoreError> {
    let context = &request.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    let removed = store.remove_connection(connection_id).await?;
    deltacast::metrics::connection_closed();
    info!(
        connection_id,
        removed,
        status = context.disconnect_status_code,
        reason = context.disconnect_reason.as_deref().unwrap_or(""),
        "disconnected"
    );
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = 200;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::protocol::Channel;
    use deltacast_tests::{events, fresh_store, items_naming};

    #[tokio::test]
    async fn leaves_no_item_naming_the_connection() {
        let store = fresh_store().await;
        store
            .put_connection(&events::new_connection("conn-1", "alice"))
            .await
            .unwrap();
        store
            .put_connection(&events::new_connection("conn-2", "bob"))
            .await
            .unwrap();
        let exp = deltacast::clock::now_secs() + 3600;
        for name in ["a", "b", "c"] {
            let channel = Channel::parse(name).unwrap();
            store
                .subscribe(
                    "conn-1",
                    "alice",
                    exp,
                    &channel,
                    deltacast::clock::now_ms(),
                    100,
                )
                .await
                .unwrap();
            store
                .subscribe(
                    "conn-2",
                    "bob",
                    exp,
                    &channel,
                    deltacast::clock::now_ms(),
                    100,
                )
                .await
                .unwrap();
        }
        assert_eq!(
            items_naming(&store, "conn-1").await,
            8,
            "meta, live, 3 markers, 3 channel-side"
        );

        let response = handle(events::disconnect("conn-1"), &store).await.unwrap();
        assert_eq!(response.status_code, 200);
        assert_eq!(items_naming(&store, "conn-1").await, 0);
        assert_eq!(
            items_naming(&store, "conn-2").await,
            8,
            "other connections are untouched"
        );
        let (subscribers, _) = store.subscribers_page("a", None).await.unwrap();
        let ids: Vec<&str> = subscribers
            .iter()
            .map(|s| s.connection_id.as_str())
            .collect();
        assert_eq!(ids, ["conn-2"]);
    }

    #[tokio::test]
    async fn disconnecting_an_unknown_connection_is_harmless() {
        let store = fresh_store().await;
        assert_eq!(
            handle(events::disconnect("never-was"), &store)
                .await
                .unwrap()
                .status_code,
            200
        );
    }
}
