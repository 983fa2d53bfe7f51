//! What the store's requests cost, as DynamoDB reports it. Every request asks for
//! `ReturnConsumedCapacity: TOTAL` and goes through [`Store::send`], which adds the
//! reported units to the store's [`CapacityMeter`] when it has one, so the cost figures of
//! `make bench` and the capacity tests count every request in one place. Failed
//! conditional writes are not reported by DynamoDB, so they are not counted.

use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::{
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

/// Adds up the capacity DynamoDB reports for a store's requests, for the cost figures of
/// `make bench`. Clones share one total.
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(Arc<Mutex<Capacity>>);

/// Capacity units consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Read capacity units.
    pub read_units: f64,
    /// Write capacity units.
    pub write_units: f64,
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

macro_rules! measured {
    ($($builder:ty => $output:ty, $error:ty, $writes:expr);* $(;)?) => {$(
        impl Measured for $builder {
            type Output = $output;
            type Error = $error;
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

measured!(
    GetItemFluentBuilder => GetItemOutput, GetItemError, false;
    QueryFluentBuilder => QueryOutput, QueryError, false;
    PutItemFluentBuilder => PutItemOutput, PutItemError, true;
    UpdateItemFluentBuilder => UpdateItemOutput, UpdateItemError, true;
    DeleteItemFluentBuilder => DeleteItemOutput, DeleteItemError, true;
    BatchWriteItemFluentBuilder => BatchWriteItemOutput, BatchWriteItemError, true;
);

impl Store {
    /// Sends `request`, adding the capacity it consumed to the meter (if any). Errors are
    /// returned as the SDK reports them, so that callers can tell a refused condition
    /// (see [`super::attributes::conditional`]) from a failure.
    pub(crate) async fn send<R: Measured>(
        &self,
        request: R,
    ) -> Result<R::Output, SdkError<R::Error>> {
        let out = request.send_reporting().await?;
        if let Some(meter) = &self.meter {
            meter.add(&out.consumed(), R::Output::WRITES);
        }
        Ok(out)
    }
}
