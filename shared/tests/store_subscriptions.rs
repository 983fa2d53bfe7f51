//! Subscriptions against DynamoDB Local: the per-connection limit holds under concurrency,
//! a channel counts once however often (and however concurrently) it is subscribed, and
//! a connection that is gone subscribes to nothing.

mod support;

use deltacast::clock;
use deltacast::protocol::Channel;
use deltacast::store::{
    CapacityMeter, Store, StoreError, SubscribeError, Subscriber, Subscription,
};
use deltacast_tests::events;
use futures::future::join_all;
use support::{ReplaceResponse, connected, intercepted, item, items, store, store_with};

/// Subscribes connection `c1` to `channel` with a limit of `max`.
async fn subscribe(store: &Store, channel: &str, max: u32) -> Result<bool, SubscribeError> {
    let channel = Channel::parse(channel).unwrap();
    store
        .subscribe(
            "c1",
            "alice",
            clock::now_secs() + 3600,
            &channel,
            clock::now_ms(),
            max,
        )
        .await
}

async fn unsubscribe(store: &Store, channel: &str) {
    let channel = Channel::parse(channel).unwrap();
    store.unsubscribe("c1", &channel).await.unwrap();
}

/// The connection-side and channel-side subscription items of `c1`.
async fn subscription_items(store: &Store) -> (usize, usize) {
    let items = items(store).await;
    let count = |pk_prefix: &str, sk: &dyn Fn(&str) -> bool| {
        items
            .iter()
            .filter(|item| {
                item["pk"].as_s().unwrap().starts_with(pk_prefix) && sk(item["sk"].as_s().unwrap())
            })
            .count()
    };
    (
        count("c#c1", &|sk| sk.starts_with("s#")),
        count("h#", &|sk| sk == "s#c1"),
    )
}

fn too_many(result: &Result<bool, SubscribeError>) -> bool {
    matches!(result, Err(SubscribeError::TooMany(_)))
}

#[tokio::test]
async fn a_subscribe_from_a_removed_connection_is_refused_and_writes_nothing() {
    // GIVEN a connection with a subscription, removed by $disconnect
    let store = connected(store().await).await;
    store
        .put_connection(&events::new_connection("c2", "bob"))
        .await
        .unwrap();
    subscribe(&store, "chat:a", 10).await.unwrap();
    store.remove_connection("c1").await.unwrap();
    let before = items(&store).await;
    // WHEN a subscribe it sent before closing is processed
    let result = subscribe(&store, "chat:b", 10).await;
    // THEN it is refused as gone, and nothing was written on either side
    assert!(
        matches!(
            result,
            Err(SubscribeError::Store(StoreError::ConnectionGone { .. }))
        ),
        "{result:?}"
    );
    let again = subscribe(&store, "chat:a", 10).await;
    assert!(
        matches!(
            again,
            Err(SubscribeError::Store(StoreError::ConnectionGone { .. }))
        ),
        "{again:?}"
    );
    assert_eq!(items(&store).await, before);
}

#[tokio::test]
async fn concurrent_subscribes_never_exceed_the_limit() {
    // GIVEN a connection allowed 40 subscriptions (60 writers racing on one liveness item
    // is what a shared DynamoDB Local sustains without timing out on its own item lock)
    let store = connected(store().await).await;
    // WHEN it asks for 60 channels at once
    // (a request DynamoDB Local fails, timing out on its own item lock, is retried as the
    // client would retry an `internal` answer)
    let results = join_all((0..60).map(|i| {
        let store = &store;
        async move {
            let channel = format!("chat:{i}");
            let mut result = subscribe(store, &channel, 40).await;
            for _ in 0..5 {
                if !matches!(result, Err(SubscribeError::Store(StoreError::Dynamo(_)))) {
                    break;
                }
                result = subscribe(store, &channel, 40).await;
            }
            result
        }
    }))
    .await;
    // THEN exactly 40 are subscribed, and the other 20 refused as too many
    let made = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let refused = results.into_iter().filter(too_many).count();
    assert_eq!((made, refused), (40, 20));
    assert_eq!(subscription_items(&store).await, (40, 40));
    assert!(too_many(&subscribe(&store, "chat:late", 40).await));
}

#[tokio::test]
async fn concurrent_subscribes_to_one_channel_count_once() {
    // GIVEN a connection allowed 21 subscriptions
    let store = connected(store().await).await;
    // WHEN it subscribes to one channel 20 times at once
    let results = join_all((0..20).map(|_| {
        let store = &store;
        async move { subscribe(store, "chat:same", 21).await.unwrap() }
    }))
    .await;
    // THEN one of them made the subscription, and it counts once: 20 more fit, not 1
    assert_eq!(results.iter().filter(|new| **new).count(), 1, "{results:?}");
    assert_eq!(subscription_items(&store).await, (1, 1));
    for i in 0..20 {
        assert!(subscribe(&store, &format!("chat:{i}"), 21).await.unwrap());
    }
    assert!(too_many(&subscribe(&store, "chat:late", 21).await));
}

#[tokio::test]
async fn concurrent_subscribes_to_one_channel_at_the_limit_are_re_subscribes() {
    // GIVEN a connection with one place left
    let store = connected(store().await).await;
    assert!(subscribe(&store, "chat:a", 2).await.unwrap());
    // WHEN it subscribes to another channel 10 times at once
    let results = join_all((0..10).map(|_| subscribe(&store, "chat:b", 2))).await;
    // THEN the places the duplicates held for a moment do not refuse them: one made the
    // subscription, the others found it, and the connection is full
    let made = results.iter().filter(|r| matches!(r, Ok(true))).count();
    assert_eq!(made, 1, "{results:?}");
    assert_eq!(subscription_items(&store).await, (2, 2));
    assert!(too_many(&subscribe(&store, "chat:c", 2).await));
}

#[tokio::test]
async fn unsubscribing_and_resubscribing_keeps_the_count_exact() {
    let store = connected(store().await).await;
    assert!(subscribe(&store, "chat:a", 2).await.unwrap());
    assert!(subscribe(&store, "chat:b", 2).await.unwrap());
    assert!(
        !subscribe(&store, "chat:b", 2).await.unwrap(),
        "re-subscribing at the limit is not a new subscription"
    );
    assert!(too_many(&subscribe(&store, "chat:c", 2).await));
    // Unsubscribing twice (the second a no-op) frees one place.
    unsubscribe(&store, "chat:a").await;
    unsubscribe(&store, "chat:a").await;
    unsubscribe(&store, "chat:never").await;
    assert!(subscribe(&store, "chat:a", 2).await.unwrap());
    assert!(too_many(&subscribe(&store, "chat:c", 2).await));
    // Concurrent unsubscribes of one channel free one place, not ten.
    join_all((0..10).map(|_| unsubscribe(&store, "chat:a"))).await;
    assert!(subscribe(&store, "chat:c", 2).await.unwrap());
    assert!(too_many(&subscribe(&store, "chat:d", 2).await));
    assert_eq!(subscription_items(&store).await, (2, 2));
}

#[tokio::test]
async fn a_lost_response_to_the_counter_update_counts_once() {
    // GIVEN a client whose first update of the liveness item (the subscription counter)
    // takes effect but loses its response, so the SDK sends it again
    let lose = ReplaceResponse::lose_update("live");
    let store = connected(store_with(vec![intercepted(lose.clone())]).await).await;
    // WHEN the connection subscribes
    assert!(subscribe(&store, "chat:a", 2).await.unwrap());
    // THEN the retry was recognised as the same update: one more channel still fits
    assert!(lose.fired(), "no response was lost");
    assert!(subscribe(&store, "chat:b", 2).await.unwrap());
    assert!(too_many(&subscribe(&store, "chat:c", 2).await));
}

#[tokio::test]
async fn a_lost_response_to_the_subscription_write_is_still_a_new_subscription() {
    // GIVEN a client whose first subscription item write takes effect but loses its
    // response, so the SDK's retry finds the item it wrote
    let lose = ReplaceResponse::lose_put("s#");
    let store = connected(store_with(vec![intercepted(lose.clone())]).await).await;
    // WHEN the connection subscribes
    assert!(subscribe(&store, "chat:a", 1).await.unwrap());
    // THEN it counts once, and is not mistaken for a duplicate (which would uncount it)
    assert!(lose.fired(), "no response was lost");
    assert!(too_many(&subscribe(&store, "chat:b", 1).await));
    unsubscribe(&store, "chat:a").await;
    assert!(subscribe(&store, "chat:b", 1).await.unwrap());
    assert_eq!(subscription_items(&store).await, (1, 1));
}

#[tokio::test]
async fn the_fan_out_reads_each_subscription_with_its_token_expiry() {
    // GIVEN c1 subscribed with a token valid for an hour
    let store = connected(store().await).await;
    let exp = clock::now_secs() + 3600;
    let channel = Channel::parse("chat:a").unwrap();
    store
        .subscribe("c1", "alice", exp, &channel, clock::now_ms(), 10)
        .await
        .unwrap();
    // WHEN the fan-out reads the channel's subscribers
    let (subscribers, next) = store.subscribers_page("chat:a", None).await.unwrap();
    // THEN it has the expiry, which has passed one second after `exp`, not before
    let expected = Subscriber {
        connection_id: "c1".into(),
        token_exp: Some(exp),
        coalesce: false,
        presence: false,
    };
    assert_eq!((subscribers, next), (vec![expected.clone()], None));
    assert!(!expected.expired(exp) && expected.expired(exp + 1));
    let stored_before_expiry = Subscriber {
        token_exp: None,
        ..expected
    };
    assert!(!stored_before_expiry.expired(u64::MAX), "never expires");
}

#[tokio::test]
async fn a_subscribe_costs_what_the_cost_table_says_besides_the_buckets() {
    let meter = CapacityMeter::default();
    let store = connected(store().await.with_meter(meter.clone())).await;
    let cost = |meter: &CapacityMeter| {
        let total = meter.total();
        (total.read_units, total.write_units)
    };
    meter.reset();
    assert!(subscribe(&store, "chat:a", 10).await.unwrap());
    assert_eq!(cost(&meter), (1.0, 3.0), "a new subscription");
    meter.reset();
    assert!(!subscribe(&store, "chat:a", 10).await.unwrap());
    assert_eq!(cost(&meter), (2.0, 1.0), "a re-subscribe");
    meter.reset();
    unsubscribe(&store, "chat:a").await;
    assert_eq!(cost(&meter), (0.0, 3.0), "an unsubscribe");
}

/// Subscribes `c1` to `chat:a` choosing `coalesce`, and returns what the fan-out reads.
async fn subscribe_coalescing(store: &Store, coalesce: bool) -> Subscriber {
    let channel = Channel::parse("chat:a").unwrap();
    let subscription = Subscription {
        channel: &channel,
        coalesce,
        presence: false,
    };
    let exp = clock::now_secs() + 3600;
    store
        .subscribe_with("c1", "alice", exp, subscription, clock::now_ms(), 10)
        .await
        .unwrap();
    let (mut subscribers, _) = store.subscribers_page("chat:a", None).await.unwrap();
    assert_eq!(subscribers.len(), 1, "{subscribers:?}");
    subscribers.remove(0)
}

#[tokio::test]
async fn the_coalesce_choice_round_trips_and_a_resubscribe_replaces_it() {
    // GIVEN a connection on a metered store
    let meter = CapacityMeter::default();
    let store = connected(store().await.with_meter(meter.clone())).await;
    let by_channel = || item(&store, "h#chat:a", "s#c1");
    // WHEN it subscribes with coalesce, THEN the fan-out reads the choice, at the cost of
    // a v1 subscribe (the cost table's 1 RCU and 3 WCU) and the read of the choice (1 RCU)
    meter.reset();
    assert!(subscribe_coalescing(&store, true).await.coalesce);
    let total = meter.total();
    assert_eq!((total.read_units, total.write_units), (2.0, 3.0));
    assert!(by_channel().await.unwrap().contains_key("co"));
    // WHEN it subscribes again without it, THEN the item is a v1 item again: no `co`
    assert!(!subscribe_coalescing(&store, false).await.coalesce);
    assert!(!by_channel().await.unwrap().contains_key("co"));
    // AND choosing coalesce again sets it again
    assert!(subscribe_coalescing(&store, true).await.coalesce);
    // AND the plain subscribe is v1
    subscribe(&store, "chat:a", 10).await.unwrap();
    assert!(!by_channel().await.unwrap().contains_key("co"));
}
