//! The small vocabulary every store file speaks: attribute values, reading numbers back,
//! batch write requests, and the one way to ask whether a conditional write was refused.
//!
//! DynamoDB reports a failed condition as a service error of each operation's own error
//! type (`PutItemError`, `UpdateItemError`, `DeleteItemError`). Refused writes are a normal
//! outcome here (a seq taken, a connection gone, a bucket raced), so [`conditional`] turns
//! them into a value, [`Conditional::Refused`], carrying the item that was in the way when
//! the request asked for it; every other failure stays a [`StoreError`].

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, PutRequest, ReturnValuesOnConditionCheckFailure, WriteRequest,
};

use super::items::MalformedItem;
use super::{Store, StoreError};

/// An item as the SDK holds it.
pub(crate) type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub(crate) fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A number attribute read back, `None` when it is missing or not a `T`.
pub(crate) fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// A string attribute read back, `None` when it is missing or not a string.
pub(crate) fn text<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

/// A number attribute the item cannot do without; `pk` names the item in the error.
pub(crate) fn required_number(item: &Item, pk: &str, name: &str) -> Result<u64, MalformedItem> {
    number(item, name).ok_or_else(|| MalformedItem {
        key: format!("{pk}/{}", text(item, "sk").unwrap_or("?")),
        reason: format!("`{name}` is missing or not a whole number"),
    })
}

/// A random tag that tells one write from another, so that the SDK's retry of a write
/// that took effect recognises it as its own.
pub(crate) fn new_tag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A batch request that writes `item`.
pub(crate) fn put_request(item: Item) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("item is set"),
        )
        .build()
}

/// A batch request that deletes the item at `pk`/`sk`.
pub(crate) fn delete_request(pk: &str, sk: &str) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .key("pk", s(pk))
                .key("sk", s(sk))
                .build()
                .expect("key is set"),
        )
        .build()
}

/// Turns any SDK failure of a DynamoDB call into a [`StoreError`].
pub(crate) fn dynamo<E, R>(err: SdkError<E, R>) -> StoreError
where
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    StoreError::Dynamo(Box::new(err.into()))
}

/// What a conditional write did.
#[derive(Debug)]
pub(crate) enum Conditional<T> {
    /// The condition held and the write took effect; the operation's output.
    Written(T),
    /// The condition failed and nothing was written; the item in the way, when the request
    /// asked for it (`ReturnValuesOnConditionCheckFailure: ALL_OLD`) and there was one.
    Refused(Option<Item>),
}

/// The error types of operations that take a condition.
pub(crate) trait ConditionError {
    /// `Some` (with the item in the way, if returned) when the condition failed.
    fn refused(&self) -> Option<Option<&Item>>;
}

macro_rules! condition_error {
    ($($error:ty),*) => {$(
        impl ConditionError for $error {
            fn refused(&self) -> Option<Option<&Item>> {
                match self {
                    Self::ConditionalCheckFailedException(failed) => Some(failed.item()),
                    // The item is being written by a transaction (a sequencer's batch):
                    // refused like a taken key, with nothing to show.
                    Self::TransactionConflictException(_) => Some(None),
                    _ => None,
                }
            }
        }
    )*};
}

condition_error!(PutItemError, UpdateItemError, DeleteItemError);

/// The outcome of a conditional write: written, refused, or a [`StoreError`].
pub(crate) fn conditional<T, E, R>(
    result: Result<T, SdkError<E, R>>,
) -> Result<Conditional<T>, StoreError>
where
    E: ConditionError,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    match result {
        Ok(out) => Ok(Conditional::Written(out)),
        Err(err) => match err.as_service_error().and_then(ConditionError::refused) {
            Some(found) => Ok(Conditional::Refused(found.cloned())),
            None => Err(dynamo(err)),
        },
    }
}

impl Store {
    /// Sends a conditional put that, when refused, returns the item in its place.
    pub(crate) async fn put_or_find(
        &self,
        request: PutItemFluentBuilder,
    ) -> Result<Conditional<()>, StoreError> {
        let request = request
            .table_name(&self.table)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(match conditional(self.send(request).await)? {
            Conditional::Written(_) => Conditional::Written(()),
            Conditional::Refused(found) => Conditional::Refused(found),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::error::{
        ConditionalCheckFailedException, TransactionConflictException,
    };

    #[test]
    fn a_write_onto_an_item_a_transaction_holds_is_refused_not_failed() {
        // A fast path's delta put that meets the sequencer's transaction on that seq: the
        // seq is taken, as with a failed condition (the claim then goes to the sequencer).
        let conflict = PutItemError::TransactionConflictException(
            TransactionConflictException::builder().build(),
        );
        assert_eq!(conflict.refused(), Some(None));
        let failed = PutItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder().build(),
        );
        assert_eq!(failed.refused(), Some(None));
    }
}
