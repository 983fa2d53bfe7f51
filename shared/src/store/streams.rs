//! A user's open event streams (the HTTP API's server-sent events), counted so that one
//! user cannot hold more than a few: each stream holds a Lambda execution environment for
//! minutes, so a user opening hundreds would take the account's concurrency from every
//! function. One item per stream under the user (`u#<sub>` / `sse#<stream id>`), expiring
//! when the stream must have ended; the count is one Query. Two streams opened at the
//! same moment may both pass a count one below the limit: the limit is soft by that much.

use super::attributes::{dynamo, n, s};
use super::items::user_pk;
use super::{Store, StoreError};
use crate::clock;

/// The sort key prefix of a user's open streams.
const STREAM_PREFIX: &str = "sse#";

impl Store {
    /// Records stream `id` of `sub`, open until `until_secs` (Unix seconds), unless `sub`
    /// already has `max` open; returns whether it was recorded.
    pub async fn open_stream(
        &self,
        sub: &str,
        id: &str,
        until_secs: u64,
        max: u32,
    ) -> Result<bool, StoreError> {
        let now = clock::now_secs();
        let count = self
            .send(
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                    .filter_expression("#ttl > :now")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_values(":pk", s(user_pk(sub)))
                    .expression_attribute_values(":prefix", s(STREAM_PREFIX))
                    .expression_attribute_values(":now", n(now))
                    .select(aws_sdk_dynamodb::types::Select::Count)
                    .consistent_read(true),
            )
            .await
            .map_err(dynamo)?
            .count;
        if u32::try_from(count).unwrap_or(u32::MAX) >= max {
            return Ok(false);
        }
        self.send(
            self.client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(user_pk(sub)))
                .item("sk", s(format!("{STREAM_PREFIX}{id}")))
                .item("ttl", n(until_secs)),
        )
        .await
        .map_err(dynamo)?;
        Ok(true)
    }

    /// Forgets stream `id` of `sub`: it has ended.
    pub async fn close_stream(&self, sub: &str, id: &str) -> Result<(), StoreError> {
        self.send(
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(user_pk(sub)))
                .key("sk", s(format!("{STREAM_PREFIX}{id}"))),
        )
        .await
        .map_err(dynamo)?;
        Ok(())
    }
}
