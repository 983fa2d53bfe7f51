//! Batch requests: `BatchWriteItem` takes 25 requests at a time, `BatchGetItem` 100 keys,
//! and either may leave some unprocessed when the table is throttled. Those are sent again
//! with backoff, and after [`MAX_BATCH_ATTEMPTS`] sends the request fails with
//! [`StoreError::Unprocessed`] rather than pretending it took effect.

use aws_sdk_dynamodb::types::{KeysAndAttributes, WriteRequest};
use tracing::warn;

use super::attributes::{Item, dynamo};
use super::{Store, StoreError, backoff};

/// Times a batch is sent before its unprocessed items are given up on (under 3 s of
/// backoff in all).
pub const MAX_BATCH_ATTEMPTS: u32 = 10;

/// Requests per `BatchWriteItem`, DynamoDB's limit.
const BATCH_SIZE: usize = 25;

/// Keys per `BatchGetItem`, DynamoDB's limit.
const BATCH_GET_KEYS: usize = 100;

impl Store {
    /// Writes requests in batches of 25, retrying unprocessed items with backoff, and
    /// fails with [`StoreError::Unprocessed`] when some stay unprocessed after
    /// [`MAX_BATCH_ATTEMPTS`] sends.
    pub(crate) async fn write_batch(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(BATCH_SIZE) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == MAX_BATCH_ATTEMPTS {
                    warn!(
                        unprocessed = pending.len(),
                        attempts = attempt,
                        "batch write given up"
                    );
                    return Err(StoreError::Unprocessed {
                        items: pending.len(),
                        attempts: attempt,
                    });
                }
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let out = self
                    .send(
                        self.client
                            .batch_write_item()
                            .request_items(&self.table, pending),
                    )
                    .await
                    .map_err(dynamo)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                attempt += 1;
            }
        }
        Ok(())
    }

    /// Reads the items at `keys` (distinct), projected to `projection`, with strongly
    /// consistent reads, 100 keys at a time, retrying unprocessed keys with backoff like
    /// [`Store::write_batch`]. Items that do not exist are simply absent.
    pub(crate) async fn read_batch(
        &self,
        keys: Vec<Item>,
        projection: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == MAX_BATCH_ATTEMPTS {
                    warn!(
                        unprocessed = pending.len(),
                        attempts = attempt,
                        "batch read given up"
                    );
                    return Err(StoreError::Unprocessed {
                        items: pending.len(),
                        attempts: attempt,
                    });
                }
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let wanted = KeysAndAttributes::builder()
                    .set_keys(Some(pending))
                    .projection_expression(projection)
                    .consistent_read(true)
                    .build()
                    .expect("keys are set, the only required field");
                let mut out = self
                    .send(
                        self.client
                            .batch_get_item()
                            .request_items(&self.table, wanted),
                    )
                    .await
                    .map_err(dynamo)?;
                found.extend(
                    out.responses
                        .as_mut()
                        .and_then(|tables| tables.remove(&self.table))
                        .unwrap_or_default(),
                );
                pending = out
                    .unprocessed_keys
                    .and_then(|mut tables| tables.remove(&self.table))
                    .map(|left| left.keys)
                    .unwrap_or_default();
                attempt += 1;
            }
        }
        Ok(found)
    }
}
