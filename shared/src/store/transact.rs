//! Writing several new items at once, all or none: one `TransactWriteItems` of
//! conditional puts (`attribute_not_exists`), and the sequencer's plan for a batch
//! carried out that way ([`Store::write_together`]): its deltas in one round trip
//! instead of one `PutItem` after another (see `sequence`). DynamoDB bills a transaction 2 write units per KB of each item; DynamoDB
//! Local reports a flat 2 per transaction, so the meter prices it by the rule instead.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use tracing::debug;

use super::attributes::{Item, dynamo};
use super::capacity::trace_request;
use super::inbox::Published;
use super::item_size::{item_bytes, write_units};
use super::items::{DeltaItem, InboxItem};
use super::plan::{Sequenced, Step};
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
        trace_request("TransactWriteItems", result.is_ok(), started);
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

    /// Adds a transaction's write units to the meter (DynamoDB Local reports a flat 2 per
    /// transaction, so transactions are priced by the rule: 2 per KB per item).
    pub(super) fn meter_units(&self, units: f64, refused: bool) {
        if let Some(meter) = &self.meter {
            meter.add_write_units(units, refused);
        }
    }
}

impl Store {
    /// The sequencer's way to carry out a plan (its deltas recording the door's share
    /// `admit`): its deltas in one transaction per 100, in order, so a batch costs one
    /// round trip instead of one per delta; then its
    /// refusals (their ids freed). What was stored, and, once a transaction finds a seq
    /// taken (another writer on the channel; nothing of it was written), the plan's
    /// messages not stored yet, in stream order, to plan again against a fresh head.
    pub(super) async fn write_together(
        &self,
        channel: &str,
        epoch: &str,
        plan: Vec<(InboxItem, Step)>,
        admit: Option<u16>,
    ) -> Result<(Vec<(InboxItem, Sequenced)>, Vec<InboxItem>), StoreError> {
        let mut done = Vec::with_capacity(plan.len());
        let (writes, refusals): (Vec<_>, Vec<_>) = plan
            .into_iter()
            .enumerate()
            .partition(|(_, (_, step))| step.writes());
        let mut writes = writes.into_iter();
        loop {
            let chunk: Vec<_> = writes.by_ref().take(MAX_TRANSACTION_ITEMS).collect();
            if chunk.is_empty() {
                break;
            }
            let mut deltas = Vec::with_capacity(chunk.len());
            for (_, (item, step)) in &chunk {
                if let Step::Write { seq, tat } = step {
                    deltas.push(self.delta_item(channel, item, epoch, *seq, *tat, admit));
                }
            }
            if !self.put_deltas(deltas).await? {
                let mut left: Vec<_> = chunk.into_iter().chain(writes).chain(refusals).collect();
                left.sort_by_key(|(place, _)| *place);
                return Ok((done, left.into_iter().map(|(_, (item, _))| item).collect()));
            }
            for (_, (item, step)) in chunk {
                if let Step::Write { seq, .. } = step {
                    let published = Published {
                        seq,
                        epoch: epoch.to_owned(),
                        duplicate: false,
                    };
                    done.push((item, Sequenced::Published(published)));
                }
            }
        }
        // Freed at once: under a channel limit most of a batch may be refused.
        let refused: Vec<(InboxItem, Sequenced)> = refusals
            .into_iter()
            .filter_map(|(_, (item, step))| match step {
                Step::Refuse(refusal) => Some((item, refusal)),
                Step::Write { .. } => None,
            })
            .collect();
        futures::future::try_join_all(refused.iter().map(|(item, _)| self.release(item))).await?;
        done.extend(refused);
        Ok((done, Vec::new()))
    }

    /// Writes `deltas` (at most [`MAX_TRANSACTION_ITEMS`]) all or none: one `PutItem` for
    /// one (a transaction would bill it twice), else one transaction. `false` when a seq
    /// was taken (nothing written).
    async fn put_deltas(&self, mut deltas: Vec<DeltaItem>) -> Result<bool, StoreError> {
        if deltas.len() == 1 {
            let delta = deltas.pop().expect("one delta");
            // A delta of this very message found there is the SDK's retry of this write.
            return Ok(self.put_delta(delta).await? == Some(true));
        }
        let items = deltas
            .into_iter()
            .map(serde_dynamo::to_item)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.put_new_items(items).await? == Transacted::Written)
    }
}
