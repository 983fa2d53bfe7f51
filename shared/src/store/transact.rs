//! Writing several new items at once, all or none: one `TransactWriteItems` of
//! conditional puts (`attribute_not_exists`), what lets the sequencer store a whole
//! batch's deltas in one round trip instead of one `PutItem` after another (see
//! `sequence`). DynamoDB bills a transaction 2 write units per KB of each item; DynamoDB
//! Local reports a flat 2 per transaction, so the meter prices it by the rule instead.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use tracing::debug;

use super::attributes::{Item, dynamo};
use super::item_size::{item_bytes, write_units};
use super::{Store, StoreError};

/// Items per `TransactWriteItems`, DynamoDB's limit.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// What [`Store::put_new_items`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Transacted {
    /// Every item was written.
    Written,
    /// Nothing was written: an item's key was taken already, another request wrote one of
    /// the items meanwhile (a transaction conflict), or DynamoDB throttled it.
    Refused,
}

impl Store {
    /// Puts `items` (at most [`MAX_TRANSACTION_ITEMS`]) in one transaction, each only if
    /// its key is free: all of them, or none. The SDK retries a transaction whose response
    /// was lost with the same client token, which DynamoDB answers as the first time.
    pub(crate) async fn put_new_items(&self, items: Vec<Item>) -> Result<Transacted, StoreError> {
        debug_assert!(items.len() <= MAX_TRANSACTION_ITEMS);
        let units: f64 = items
            .iter()
            .map(|item| 2.0 * write_units(item_bytes(item)))
            .sum();
        let mut request = self.client.transact_write_items();
        for item in items {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .expect("a put with its table and item");
            request = request.transact_items(TransactWriteItem::builder().put(put).build());
        }
        let started = std::time::Instant::now();
        // Boxed, as every request of the store is (see `capacity`): nested into the
        // handlers' futures, the SDK's future takes them past the layout depth limit.
        let result = Box::pin(request.send()).await;
        tracing::trace!(
            target: "deltacast::dynamodb",
            op = "TransactWriteItems",
            ok = result.is_ok(),
            ms = started.elapsed().as_millis() as u64,
            "request"
        );
        match result {
            Ok(_) => {
                self.meter_units(units, false);
                Ok(Transacted::Written)
            }
            Err(err) => match err.as_service_error() {
                // Cancelled wrote nothing, whatever the reason (a key taken, another
                // request on an item, throttling, which the SDK does not retry for
                // transactions): the caller plans again after a backoff.
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    let reasons: Vec<&str> = cancelled
                        .cancellation_reasons()
                        .iter()
                        .filter_map(|reason| reason.code())
                        .filter(|code| *code != "None")
                        .collect();
                    debug!(?reasons, "transaction cancelled; nothing written");
                    self.meter_units(units, true);
                    Ok(Transacted::Refused)
                }
                _ => Err(dynamo(err)),
            },
        }
    }

    fn meter_units(&self, units: f64, refused: bool) {
        if let Some(meter) = &self.meter {
            meter.add_write_units(units, refused);
        }
    }
}
