//! What deltacast's requests cost, as DynamoDB reports it (`ReturnConsumedCapacity`),
//! checked against the pricing rule: 1 write unit per started KB written, 1 read unit per
//! started 4 KB read with strong consistency. deltacast uses no transactions (which bill
//! double, and which DynamoDB Local under-reports).

use deltacast::config::RateLimit;
use deltacast::protocol::{Channel, MessageId, Payload};
use deltacast::store::{BucketOf, CapacityMeter, NewDelta, Store};
use deltacast_tests::{events, fresh_store};

const RATE: RateLimit = RateLimit {
    per_second: 1000.0,
    burst: 1000.0,
};

async fn metered() -> (Store, CapacityMeter) {
    let meter = CapacityMeter::default();
    (fresh_store().await.with_meter(meter.clone()), meter)
}

async fn publish(
    store: &Store,
    connection: &str,
    channel: &Channel,
    id: &str,
    data: &Payload,
) -> u64 {
    // What the message function does first: a token from the connection's bucket and
    // from the user's.
    for bucket in [BucketOf::Connection(connection), BucketOf::User("alice")] {
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
            from: "alice",
            data,
            expect_seq: None,
        })
        .await
        .unwrap()
        .seq
}

#[tokio::test]
async fn a_publish_of_a_small_delta_writes_four_units() {
    let (store, meter) = metered().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    let channel = Channel::parse("chat:cost").unwrap();
    let data = Payload::from_json(format!("\"{}\"", "x".repeat(700))).unwrap();

    meter.reset();
    publish(&store, "c1", &channel, "m1", &data).await;
    let first = meter.total();
    assert_eq!(
        first.write_units, 5.0,
        "two buckets + claim + delta + the new epoch item"
    );

    meter.reset();
    publish(&store, "c1", &channel, "m2", &data).await;
    let steady = meter.total();
    assert_eq!(steady.write_units, 4.0, "two buckets + claim + delta");
    assert_eq!(
        steady.read_units, 5.0,
        "two buckets, claim, epoch and newest delta, strongly consistent"
    );

    let big = Payload::from_json(format!("\"{}\"", "x".repeat(2500))).unwrap();
    meter.reset();
    publish(&store, "c1", &channel, "m3", &big).await;
    assert_eq!(
        meter.total().write_units,
        6.0,
        "a ~2.6 KB delta bills 3 units"
    );
}

#[tokio::test]
async fn a_duplicate_publish_writes_nothing() {
    let (store, meter) = metered().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    let channel = Channel::parse("chat:dup").unwrap();
    let data = Payload::from_json("1".into()).unwrap();
    let id = MessageId::parse("same").unwrap();
    let new = NewDelta {
        channel: &channel,
        id: &id,
        from: "alice",
        data: &data,
        expect_seq: None,
    };
    store.publish(new).await.unwrap();
    meter.reset();
    assert!(store.publish(new).await.unwrap().duplicate);
    assert_eq!(meter.total().write_units, 0.0);
}

#[tokio::test]
async fn reading_a_channels_subscribers_costs_little_per_delivery() {
    let (store, meter) = metered().await;
    let channel = Channel::parse("chat:fan").unwrap();
    for i in 0..100 {
        let connection = format!("conn-{i:04}");
        store
            .put_connection(&events::new_connection(&connection, "user"))
            .await
            .unwrap();
        store
            .subscribe(
                &connection,
                "user",
                deltacast::clock::now_secs() + 3600,
                &channel,
                deltacast::clock::now_ms(),
                100,
            )
            .await
            .unwrap();
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
