//! What the store's requests cost. Every request asks for `ReturnConsumedCapacity: TOTAL`
//! and goes through [`Store::send`], which adds the units to the store's
//! [`CapacityMeter`] when it has one, so the cost figures of `make bench` and the
//! capacity tests count every request in one place.
//!
//! ## Refused conditional writes
//! DynamoDB bills a write whose condition fails: by the larger of the existing item and
//! the new one, in 1 KB units, at least 1. It reports nothing about it, though: the
//! `ConditionalCheckFailedException` carries no `ConsumedCapacity` (DynamoDB Local's
//! error body holds only `__type`, `Message` and the item asked for; the SDK's error type
//! keeps only `message` and `item`). Contended publishes and racing buckets refuse writes
//! routinely, so the meter prices those itself, by the rule, from what the request knows
//! ([`super::item_size`]):
//! - the new item of a `PutItem` (known before sending);
//! - the item in the way, when the request asked for it
//!   (`ReturnValuesOnConditionCheckFailure: ALL_OLD`);
//! - otherwise 1 unit.
//!
//! Where the item in the way is not returned (an `UpdateItem` or `DeleteItem` without
//! `ALL_OLD`, or a `PutItem` onto a larger item) the figure is a lower bound; deltacast's
//! refused writes of that kind are on items under 1 KB (buckets, claims, epochs,
//! subscription items), where it is exact. Should an error response ever carry
//! `ConsumedCapacity` after all, that figure is taken instead of the estimate, never
//! both. Attempts the SDK retried (after a timeout or a 5xx) are billed by DynamoDB but
//! not seen here: only the last response of a request is.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::{
    batch_get_item::{BatchGetItemError, BatchGetItemOutput, builders::BatchGetItemFluentBuilder},
    batch_write_item::{
        BatchWriteItemError, BatchWriteItemOutput, builders::BatchWriteItemFluentBuilder,
    },
    delete_item::{DeleteItemError, DeleteItemOutput, builders::DeleteItemFluentBuilder},
    get_item::{GetItemError, GetItemOutput, builders::GetItemFluentBuilder},
    put_item::{PutItemError, PutItemOutput, builders::PutItemFluentBuilder},
    query::{QueryError, QueryOutput, builders::QueryFluentBuilder},
    update_item::{UpdateItemError, UpdateItemOutput, builders::UpdateItemFluentBuilder},
};
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use futures::future::BoxFuture;

use super::Store;
use super::attributes::{ConditionError, Item};
use super::item_size::{item_bytes, write_units};

/// Adds up the capacity a store's requests consume (as DynamoDB reports it, and refused
/// conditional writes as the pricing rule bills them), for the cost figures of
/// `make bench` and the capacity tests. Clones share one total.
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(Arc<Mutex<Capacity>>);

/// Capacity units consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Read capacity units.
    pub read_units: f64,
    /// Write capacity units, refused conditional writes included.
    pub write_units: f64,
    /// Of the write units, those of refused conditional writes.
    pub refused_write_units: f64,
}

impl CapacityMeter {
    /// The units consumed so far.
    pub fn total(&self) -> Capacity {
        *self.0.lock().expect("meter lock")
    }

    /// Starts again from zero.
    pub fn reset(&self) {
        *self.0.lock().expect("meter lock") = Capacity::default();
    }

    /// Adds write units priced by the rule (a transaction's), refused ones apart.
    pub(crate) fn add_write_units(&self, units: f64, refused: bool) {
        let mut total = self.0.lock().expect("meter lock");
        total.write_units += units;
        if refused {
            total.refused_write_units += units;
        }
    }

    fn add_refused(&self, units: f64) {
        let mut total = self.0.lock().expect("meter lock");
        total.write_units += units;
        total.refused_write_units += units;
    }

    fn add(&self, consumed: &[&ConsumedCapacity], write: bool) {
        let mut total = self.0.lock().expect("meter lock");
        for c in consumed {
            let units = c.capacity_units().unwrap_or(0.0);
            if write {
                total.write_units += units;
            } else {
                total.read_units += units;
            }
        }
    }
}

/// A request the store sends: it asks for the consumed capacity and reports it.
pub(crate) trait Measured {
    /// The operation's output.
    type Output: Consumed;
    /// The operation's error.
    type Error;
    /// What a refusal of the request's condition would bill, as far as the request itself
    /// tells (`None`: the operation takes no condition).
    fn refusal(&self) -> Option<Refusal>;
    /// When `error` is a refused condition: the item in the way, if it was returned.
    fn refused(error: &Self::Error) -> Option<Option<&Item>>;
    /// Sends the request with `ReturnConsumedCapacity: TOTAL`. The SDK's future is boxed:
    /// nested as it is into every store future, and those into the handlers', it took the
    /// functions' `main` futures past the compiler's layout depth limit.
    fn send_reporting(self) -> BoxFuture<'static, Result<Self::Output, SdkError<Self::Error>>>;
}

/// An output that reports consumed capacity, and whether its operation writes.
pub(crate) trait Consumed {
    /// Whether the units are write units.
    const WRITES: bool;
    /// The capacity the output reports.
    fn consumed(&self) -> Vec<&ConsumedCapacity>;
}

/// The size of the item a refused write would have written (0 when unknown), known
/// before sending.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal {
    new_item_bytes: usize,
}

impl Refusal {
    /// The units a refusal bills: by the larger of the new item and the one in the way.
    fn units(self, found: Option<&Item>) -> f64 {
        write_units(self.new_item_bytes.max(found.map_or(0, item_bytes)))
    }
}

macro_rules! measured {
    ($($builder:ty => $output:ty, $error:ty, $writes:expr, $refusal:expr, $refused:expr);* $(;)?) => {$(
        impl Measured for $builder {
            type Output = $output;
            type Error = $error;
            fn refusal(&self) -> Option<Refusal> {
                ($refusal)(self)
            }
            fn refused(error: &$error) -> Option<Option<&Item>> {
                ($refused)(error)
            }
            fn send_reporting(self) -> BoxFuture<'static, Result<$output, SdkError<$error>>> {
                Box::pin(self.return_consumed_capacity(ReturnConsumedCapacity::Total).send())
            }
        }

        impl Consumed for $output {
            const WRITES: bool = $writes;
            fn consumed(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().into_iter().collect()
            }
        }
    )*};
}

/// Traces one DynamoDB request (operation, outcome, milliseconds) under
/// `deltacast::dynamodb`, to count requests by kind under load.
pub(crate) fn trace_request(op: &str, ok: bool, started: std::time::Instant) {
    tracing::trace!(
        target: "deltacast::dynamodb",
        op,
        ok,
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
}

/// For operations that take no condition.
fn unconditional<T>(_: &T) -> Option<Refusal> {
    None
}

/// For operations that take no condition.
fn never_refused<E>(_: &E) -> Option<Option<&Item>> {
    None
}

/// For conditional writes whose new item is not known before sending.
fn unknown_item<T>(_: &T) -> Option<Refusal> {
    Some(Refusal { new_item_bytes: 0 })
}

/// For a put: the item it writes.
fn new_item(put: &PutItemFluentBuilder) -> Option<Refusal> {
    Some(Refusal {
        new_item_bytes: put.get_item().as_ref().map_or(0, item_bytes),
    })
}

measured!(
    GetItemFluentBuilder => GetItemOutput, GetItemError, false, unconditional, never_refused;
    QueryFluentBuilder => QueryOutput, QueryError, false, unconditional, never_refused;
    PutItemFluentBuilder => PutItemOutput, PutItemError, true, new_item, PutItemError::refused;
    UpdateItemFluentBuilder => UpdateItemOutput, UpdateItemError, true, unknown_item,
        UpdateItemError::refused;
    DeleteItemFluentBuilder => DeleteItemOutput, DeleteItemError, true, unknown_item,
        DeleteItemError::refused;
    BatchWriteItemFluentBuilder => BatchWriteItemOutput, BatchWriteItemError, true,
        unconditional, never_refused;
    BatchGetItemFluentBuilder => BatchGetItemOutput, BatchGetItemError, false,
        unconditional, never_refused;
);

/// `ConsumedCapacity.CapacityUnits` in an error response's body, should it carry one.
fn reported_units(body: &[u8]) -> Option<f64> {
    let body: serde_json::Value = serde_json::from_slice(body).ok()?;
    body.get("ConsumedCapacity")?.get("CapacityUnits")?.as_f64()
}

impl Store {
    /// Sends `request`, adding the capacity it consumed to the meter (if any), a refused
    /// condition's included (see the module docs). Errors are returned as the SDK reports
    /// them, so that callers can tell a refused condition (see
    /// [`super::attributes::conditional`]) from a failure.
    pub(crate) async fn send<R: Measured>(
        &self,
        request: R,
    ) -> Result<R::Output, SdkError<R::Error>> {
        let started = std::time::Instant::now();
        let result = self.send_metered(request).await;
        let op = std::any::type_name::<R>()
            .rsplit("::")
            .next()
            .unwrap_or_default();
        trace_request(op, result.is_ok(), started);
        result
    }

    async fn send_metered<R: Measured>(&self, request: R) -> Result<R::Output, SdkError<R::Error>> {
        let Some(meter) = &self.meter else {
            return request.send_reporting().await;
        };
        let refusal = request.refusal();
        match request.send_reporting().await {
            Ok(out) => {
                meter.add(&out.consumed(), R::Output::WRITES);
                Ok(out)
            }
            Err(err) => {
                if let Some(refusal) = refusal
                    && let Some(found) = err.as_service_error().and_then(R::refused)
                {
                    let reported = err
                        .raw_response()
                        .and_then(|response| response.body().bytes())
                        .and_then(reported_units);
                    meter.add_refused(reported.unwrap_or_else(|| refusal.units(found)));
                }
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    #[test]
    fn a_refusal_bills_the_larger_of_the_new_item_and_the_one_in_the_way() {
        let found = Item::from([("d".to_string(), AttributeValue::S("x".repeat(1500)))]);
        let small = Refusal {
            new_item_bytes: 100,
        };
        assert_eq!(small.units(None), 1.0);
        assert_eq!(small.units(Some(&found)), 2.0);
        let big = Refusal {
            new_item_bytes: 3000,
        };
        assert_eq!(big.units(Some(&found)), 3.0);
        assert_eq!(Refusal { new_item_bytes: 0 }.units(None), 1.0);
    }

    #[test]
    fn capacity_reported_with_an_error_is_read_from_its_body() {
        let reported = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","ConsumedCapacity":{"TableName":"t","CapacityUnits":2.0}}"#;
        assert_eq!(reported_units(reported), Some(2.0));
        let plain = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","Message":"The conditional request failed"}"#;
        assert_eq!(reported_units(plain), None);
        assert_eq!(reported_units(b"not json"), None);
    }
}
