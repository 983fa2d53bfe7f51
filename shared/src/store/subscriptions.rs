//! Subscriptions, stored on both sides: `c#<connection>/s#<channel>` lists a connection's
//! channels (so `$disconnect` finds them in its own partition) and
//! `h#<channel>/s#<connection>` lists a channel's subscribers (so the fan-out reads one
//! partition per delta).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::Select;

use super::attributes::{Item, delete_request, dynamo, n, number, put_request, s, text};
use super::items::{SUBSCRIPTION_PREFIX, channel_pk, connection_pk, subscription_sk};
use super::{Store, StoreError};
use crate::clock;
use crate::protocol::Channel;

/// Why a subscription was not made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already has the maximum number of subscriptions.
    #[error("a connection may subscribe to at most {0} channels")]
    TooMany(u32),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Subscribes a connection to a channel (both sides of the subscription). Returns
    /// `false` when it was already subscribed.
    pub async fn subscribe(
        &self,
        connection_id: &str,
        sub: &str,
        channel: &Channel,
        connected_at_ms: u64,
        max_subscriptions: u32,
    ) -> Result<bool, SubscribeError> {
        let conn_pk = connection_pk(connection_id);
        let marker_sk = subscription_sk(channel.as_str());
        let existing = self
            .send(
                self.client
                    .get_item()
                    .table_name(&self.table)
                    .key("pk", s(&conn_pk))
                    .key("sk", s(&marker_sk))
                    .projection_expression("pk")
                    .consistent_read(true),
            )
            .await
            .map_err(dynamo)?;
        let already = existing.item.is_some();
        if !already {
            let count = self
                .send(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
                        .expression_attribute_values(":pk", s(&conn_pk))
                        .expression_attribute_values(":s", s(SUBSCRIPTION_PREFIX))
                        .select(Select::Count)
                        .consistent_read(true),
                )
                .await
                .map_err(dynamo)?
                .count;
            if count >= max_subscriptions as i32 {
                return Err(SubscribeError::TooMany(max_subscriptions));
            }
        }
        let ttl = n(self.connection_expiry(connected_at_ms));
        let by_channel = HashMap::from([
            ("pk".to_owned(), s(channel_pk(channel.as_str()))),
            ("sk".to_owned(), s(subscription_sk(connection_id))),
            ("sub".to_owned(), s(sub)),
            ("ttl".to_owned(), ttl.clone()),
        ]);
        let by_connection = HashMap::from([
            ("pk".to_owned(), s(conn_pk)),
            ("sk".to_owned(), s(marker_sk)),
            ("ttl".to_owned(), ttl),
        ]);
        self.write_batch(vec![put_request(by_channel), put_request(by_connection)])
            .await?;
        Ok(!already)
    }

    /// Removes a subscription (both sides); a no-op when there is none.
    pub async fn unsubscribe(
        &self,
        connection_id: &str,
        channel: &Channel,
    ) -> Result<(), StoreError> {
        self.write_batch(vec![
            delete_request(
                &channel_pk(channel.as_str()),
                &subscription_sk(connection_id),
            ),
            delete_request(
                &connection_pk(connection_id),
                &subscription_sk(channel.as_str()),
            ),
        ])
        .await
    }

    /// The connection ids subscribed to a channel, one Query page at a time.
    pub async fn subscribers_page(
        &self,
        channel: &str,
        start: Option<Item>,
    ) -> Result<(Vec<String>, Option<Item>), StoreError> {
        let now = clock::now_secs();
        let out = self
            .send(
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
                    .expression_attribute_values(":pk", s(channel_pk(channel)))
                    .expression_attribute_values(":s", s(SUBSCRIPTION_PREFIX))
                    .projection_expression("sk, #ttl")
                    .expression_attribute_names("#ttl", "ttl")
                    .consistent_read(true)
                    .set_exclusive_start_key(start),
            )
            .await
            .map_err(dynamo)?;
        let ids = out
            .items()
            .iter()
            .filter(|item| number::<u64>(item, "ttl").is_none_or(|ttl| ttl > now))
            .filter_map(|item| {
                text(item, "sk")
                    .and_then(|sk| sk.strip_prefix(SUBSCRIPTION_PREFIX))
                    .map(str::to_owned)
            })
            .collect();
        let next = out.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((ids, next))
    }
}
