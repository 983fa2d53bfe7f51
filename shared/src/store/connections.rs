//! Connections: `$connect` stores one (its main item and its liveness item), every frame
//! may read it, `ping` touches it, and `$disconnect` removes it with everything that names
//! it. The liveness item is the connection's presence: the rate-limit bucket and the
//! subscription counter live on it, and its absence means the connection is gone.

use std::collections::HashMap;

use super::attributes::{Item, conditional, delete_request, dynamo, n, put_request, s, text};
use super::items::{
    ConnectionItem, LIVE_SK, META_SK, SUBSCRIPTION_PREFIX, channel_pk, connection_pk,
    subscription_sk,
};
use super::state_items::{MEMBER_PREFIX, members_pk};
use super::{Store, StoreError};

/// A new connection, as the `$connect` route stores it.
#[derive(Clone, Debug)]
pub struct NewConnection<'a> {
    /// API Gateway's connection id.
    pub connection_id: &'a str,
    /// The user.
    pub sub: &'a str,
    /// Capabilities, as JSON text.
    pub capabilities: &'a str,
    /// Token expiry, Unix seconds.
    pub token_exp: u64,
    /// When the connection opened, Unix milliseconds.
    pub connected_at: u64,
    /// The client's address.
    pub source_ip: Option<&'a str>,
}

impl Store {
    /// Stores a new connection and its liveness item.
    pub async fn put_connection(&self, new: &NewConnection<'_>) -> Result<(), StoreError> {
        let ttl = self.connection_expiry(new.connected_at);
        let meta = ConnectionItem {
            pk: connection_pk(new.connection_id),
            sk: META_SK.into(),
            sub: new.sub.into(),
            caps: new.capabilities.into(),
            exp: new.token_exp,
            at: new.connected_at,
            ip: new.source_ip.map(str::to_owned),
            ttl,
        };
        let live = HashMap::from([
            ("pk".to_owned(), s(connection_pk(new.connection_id))),
            ("sk".to_owned(), s(LIVE_SK)),
            ("seen".to_owned(), n(new.connected_at)),
            ("ttl".to_owned(), n(ttl)),
        ]);
        self.write_batch(vec![
            put_request(serde_dynamo::to_item(meta)?),
            put_request(live),
        ])
        .await
    }

    /// Reads a connection's main item.
    pub async fn connection(
        &self,
        connection_id: &str,
    ) -> Result<Option<ConnectionItem>, StoreError> {
        let out = self
            .send(self.read_item(connection_pk(connection_id), META_SK))
            .await
            .map_err(dynamo)?;
        out.item
            .map(serde_dynamo::from_item)
            .transpose()
            .map_err(StoreError::from)
    }

    /// Records traffic on a connection (`seen`), without resurrecting a removed one.
    pub async fn touch(&self, connection_id: &str, now_ms: u64) -> Result<(), StoreError> {
        let request = self
            .update_liveness(connection_id)
            .update_expression("SET seen = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now_ms));
        // Refused: the connection is gone, and stays gone.
        conditional(self.send(request).await)?;
        Ok(())
    }

    /// Removes a connection and every item that names it: its own items, its
    /// subscriptions' channel-side items and its presence members. Returns how many items
    /// were deleted. Once a round has deleted the liveness item, no frame of the
    /// connection writes anything more; what one wrote between the round's read and that
    /// delete (a presence `enter`'s transaction, a subscribe) is found by the next round.
    pub async fn remove_connection(&self, connection_id: &str) -> Result<usize, StoreError> {
        let mut removed = 0;
        for _ in 0..REMOVAL_ROUNDS {
            let requests = self.removal_requests(connection_id).await?;
            if requests.is_empty() {
                break;
            }
            removed += requests.len();
            self.write_batch(requests).await?;
        }
        Ok(removed)
    }

    /// The deletes that remove what names the connection now.
    async fn removal_requests(
        &self,
        connection_id: &str,
    ) -> Result<Vec<aws_sdk_dynamodb::types::WriteRequest>, StoreError> {
        let pk = connection_pk(connection_id);
        let mut requests = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .send(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(&pk))
                        .projection_expression("pk, sk")
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take()),
                )
                .await
                .map_err(dynamo)?;
            for item in out.items() {
                let Some(sk) = text(item, "sk") else {
                    continue;
                };
                requests.push(delete_request(&pk, sk));
                if let Some(channel) = sk.strip_prefix(SUBSCRIPTION_PREFIX) {
                    requests.push(delete_request(
                        &channel_pk(channel),
                        &subscription_sk(connection_id),
                    ));
                }
                // A presence membership: the member leaves with its connection.
                if let Some(channel) = sk.strip_prefix(MEMBER_PREFIX) {
                    requests.push(delete_request(&members_pk(channel), connection_id));
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(requests),
            }
        }
    }
}

/// Rounds of reading and deleting a connection's items: the second finds what a frame
/// wrote while the first was under way (the first deletes the liveness item, so there is
/// nothing after the second); the third only looks.
const REMOVAL_ROUNDS: usize = 3;
