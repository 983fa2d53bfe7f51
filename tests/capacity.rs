//! What deltacast's requests cost, as the store's meter counts it: DynamoDB Local's
//! `ReturnConsumedCapacity`, plus the refused conditional writes DynamoDB bills without
//! reporting them, checked against the table in docs/data-model.md ("Write and read
//! units"): 1 write unit per started KB written, 1 read unit per started 4 KB read with
//! strong consistency. deltacast uses no transactions (which bill double, and which
//! DynamoDB Local under-reports). The rows for client frames are measured through the
//! message function's handler (`functions/message/src/capacity.rs`); here are
//! `$connect`, `$disconnect` (each one store call, made here as the handler makes it), a
//! publish contended by concurrent sequencing, a sequenced batch, and the fan-out's read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeDeserializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use deltacast::config::RateLimit;
use deltacast::protocol::{Channel, MessageId, Payload};
use deltacast::store::{BucketOf, CapacityMeter, Enqueued, NewDelta, Store, items};
use deltacast_tests::{events, fresh_store, fresh_table, lifetimes, sdk_config};
use futures::future::join_all;

const RATE: RateLimit = RateLimit {
    per_second: 1000.0,
    burst: 1000.0,
};

async fn metered(store: Store) -> (Store, CapacityMeter) {
    let meter = CapacityMeter::default();
    (store.with_meter(meter.clone()), meter)
}

/// A store on a fresh table whose client carries `interceptor`.
async fn store_with(interceptor: impl Intercept + 'static) -> Store {
    let (_, table) = fresh_table().await;
    let config = aws_sdk_dynamodb::config::Builder::from(&sdk_config().await)
        .interceptor(interceptor)
        .build();
    Store::new(Client::from_conf(config), table, lifetimes())
}

/// Counts, on the wire, the responses that refuse a conditional write: an account of the
/// refusals that does not go through the meter.
#[derive(Clone, Debug, Default)]
struct Refusals {
    puts: Arc<AtomicU32>,
    others: Arc<AtomicU32>,
}

impl Intercept for Refusals {
    fn name(&self) -> &'static str {
        "Refusals"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(error) = context
            .output_or_error()
            .err()
            .and_then(|e| e.as_operation_error())
        else {
            return Ok(());
        };
        let put = error
            .downcast_ref::<PutItemError>()
            .is_some_and(PutItemError::is_conditional_check_failed_exception);
        let other = error
            .downcast_ref::<UpdateItemError>()
            .is_some_and(UpdateItemError::is_conditional_check_failed_exception)
            || error
                .downcast_ref::<DeleteItemError>()
                .is_some_and(DeleteItemError::is_conditional_check_failed_exception);
        if put {
            self.puts.fetch_add(1, Ordering::SeqCst);
        }
        if other {
            self.others.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// What the message function does for a publish: a token from the connection's bucket
/// and from the user's, then the publish. Returns the seq.
async fn publish(store: &Store, connection: &str, user: &str, channel: &Channel, id: &str) -> u64 {
    for bucket in [BucketOf::Connection(connection), BucketOf::User(user)] {
        assert!(
            store
                .take_tokens(bucket, deltacast::clock::now_ms(), RATE, 1.0)
                .await
                .unwrap()
        );
    }
    let id = MessageId::parse(id).unwrap();
    store
        .publish(NewDelta {
            channel,
            id: &id,
            from: user,
            data: &Payload::from_json("\"a small delta\"".into()).unwrap(),
            expect_seq: None,
        })
        .await
        .unwrap()
        .seq
}

#[tokio::test]
async fn contended_publishes_pay_for_the_writes_they_lost() {
    // GIVEN publishers on one channel, each on its own connection and user (so only the
    // channel is contended), and a channel that already has its epoch
    const PUBLISHERS: usize = 8;
    let refusals = Refusals::default();
    let (store, meter) = metered(store_with(refusals.clone()).await).await;
    let channel = Channel::parse("chat:busy").unwrap();
    for i in 0..PUBLISHERS {
        store
            .put_connection(&events::new_connection(&format!("c{i}"), &format!("u{i}")))
            .await
            .unwrap();
    }
    publish(&store, "c0", "u0", &channel, "first").await;
    let mut head = 1;
    for round in 0..3 {
        meter.reset();
        refusals.puts.store(0, Ordering::SeqCst);
        // WHEN they all publish at once
        let seqs = join_all((0..PUBLISHERS).map(|i| {
            let (store, channel) = (&store, &channel);
            async move {
                let id = format!("r{round}-p{i}");
                publish(store, &format!("c{i}"), &format!("u{i}"), channel, &id).await
            }
        }))
        .await;
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (head + 1..=head + PUBLISHERS as u64).collect::<Vec<_>>()
        );
        head += PUBLISHERS as u64;
        // THEN each seq lost to another writer cost a refused delta write (1 unit: the
        // delta in the way is small), on top of the four units of each publish (the inbox
        // item stays where it is: nothing else moves)
        let lost = f64::from(refusals.puts.load(Ordering::SeqCst));
        assert_eq!(
            refusals.others.load(Ordering::SeqCst),
            0,
            "no bucket was contended"
        );
        let total = meter.total();
        assert_eq!(total.write_units, 4.0 * PUBLISHERS as f64 + lost);
        assert_eq!(total.refused_write_units, lost);
        if lost > 0.0 {
            return;
        }
    }
    panic!("three rounds of {PUBLISHERS} concurrent publishes never raced");
}

#[tokio::test]
async fn a_sequenced_batch_reads_the_head_once_and_writes_its_deltas_in_one_transaction() {
    // GIVEN 20 small publishes queued on a channel that has its epoch
    let (store, meter) = metered(fresh_store().await).await;
    let channel = Channel::parse("chat:batch").unwrap();
    let data = Payload::from_json("\"a small delta\"".into()).unwrap();
    fn new<'a>(channel: &'a Channel, id: &'a MessageId, data: &'a Payload) -> NewDelta<'a> {
        NewDelta {
            channel,
            id,
            from: "u",
            data,
            expect_seq: None,
        }
    }
    let first = MessageId::parse("first").unwrap();
    store.publish(new(&channel, &first, &data)).await.unwrap();
    let mut batch = Vec::new();
    for n in 0..20 {
        let id = MessageId::parse(&format!("m{n}")).unwrap();
        match store
            .enqueue(new(&channel, &id, &data), "c", None)
            .await
            .unwrap()
        {
            Enqueued::Claimed(claim) => batch.push(claim.item),
            other => panic!("{other:?}"),
        }
    }
    // WHEN the sequencer takes them as one batch
    meter.reset();
    let outcomes = store.sequence("chat:batch", batch, None).await.unwrap();
    assert_eq!(outcomes.len(), 20);
    // THEN it read each inbox item (1 unit each), the head once (epoch item and newest
    // delta: 2 units), and wrote the 20 deltas in one transaction (2 units each, as
    // DynamoDB bills transactions) and the busy mark on the epoch item (1)
    let total = meter.total();
    assert_eq!((total.read_units, total.write_units), (22.0, 41.0));
}

/// Answers DynamoDB's refusal of a conditional write with the same refusal carrying
/// `ConsumedCapacity`, as DynamoDB might one day.
#[derive(Debug)]
struct ReportCapacityWithRefusals;

impl Intercept for ReportCapacityWithRefusals {
    fn name(&self) -> &'static str {
        "ReportCapacityWithRefusals"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // The only request the test sends is a write that DynamoDB refuses (400).
        let response = context.response_mut();
        if response.status().as_u16() == 400 {
            let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ConditionalCheckFailedException","message":"The conditional request failed","ConsumedCapacity":{"TableName":"t","CapacityUnits":3.0}}"#;
            *response.body_mut() = body.into();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_refusal_that_reports_its_capacity_is_counted_once() {
    // GIVEN DynamoDB answering refusals with their consumed capacity
    let (store, meter) = metered(store_with(ReportCapacityWithRefusals).await).await;
    // WHEN a write is refused (touching a connection that is gone)
    store
        .touch("gone", deltacast::clock::now_ms())
        .await
        .unwrap();
    // THEN the reported figure counts, instead of the meter's own estimate (1), not as
    // well as it
    let total = meter.total();
    assert_eq!((total.write_units, total.refused_write_units), (3.0, 3.0));
}

#[tokio::test]
async fn connecting_writes_two_items_and_disconnecting_two_per_subscription_more() {
    let (store, meter) = metered(fresh_store().await).await;
    meter.reset();
    // What `$connect` does.
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    assert_eq!(
        meter.total().write_units,
        2.0,
        "the connection and its liveness item"
    );

    for n in [0, 3] {
        let connection = format!("d{n}");
        store
            .put_connection(&events::new_connection(&connection, "alice"))
            .await
            .unwrap();
        join_all((0..n).map(|i| {
            let (store, connection) = (&store, &connection);
            async move {
                let channel = Channel::parse(&format!("chat:{i}")).unwrap();
                store
                    .subscribe(
                        connection,
                        "alice",
                        deltacast::clock::now_secs() + 3600,
                        &channel,
                        deltacast::clock::now_ms(),
                        100,
                    )
                    .await
                    .unwrap()
            }
        }))
        .await;
        meter.reset();
        // What `$disconnect` does.
        let removed = store.remove_connection(&connection).await.unwrap();
        assert_eq!(removed, 2 + 2 * n);
        assert_eq!(
            meter.total().write_units,
            (2 + 2 * n) as f64,
            "{n} subscriptions: 2 + 2n"
        );
    }
}

#[tokio::test]
async fn reading_a_channels_subscribers_costs_little_per_delivery() {
    let (store, meter) = metered(fresh_store().await).await;
    // A channel's subscription items as `subscribe` writes them, written in batches
    // (subscribing 100 connections one by one is slow on a shared DynamoDB Local).
    let ttl = (deltacast::clock::now_secs() + 3600).to_string();
    for batch in (0..100).collect::<Vec<_>>().chunks(25) {
        let requests = batch.iter().map(|i| {
            let item = PutRequest::builder()
                .item("pk", AttributeValue::S(items::channel_pk("chat:fan")))
                .item(
                    "sk",
                    AttributeValue::S(items::subscription_sk(&format!("conn-{i:04}"))),
                )
                .item("sub", AttributeValue::S("user".into()))
                .item("ttl", AttributeValue::N(ttl.clone()))
                .build()
                .unwrap();
            WriteRequest::builder().put_request(item).build()
        });
        let out = store
            .client()
            .batch_write_item()
            .request_items(store.table(), requests.collect())
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items.unwrap_or_default().is_empty());
    }
    meter.reset();
    let (ids, next) = store.subscribers_page("chat:fan", None).await.unwrap();
    assert_eq!((ids.len(), next), (100, None));
    let per_delivery = meter.total().read_units / 100.0;
    assert!(
        per_delivery <= 0.05,
        "{per_delivery} read units per delivery"
    );
}
