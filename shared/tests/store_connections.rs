//! Connections against DynamoDB Local: stored in one batch that is given up on (not
//! pretended) when DynamoDB keeps throttling it; touched without being brought back once
//! removed.

mod support;

use std::sync::atomic::Ordering;

use deltacast::clock;
use deltacast::store::{MAX_BATCH_ATTEMPTS, NewConnection, StoreError};
use deltacast_tests::events;
use support::{Throttle, intercepted, item, items, store, store_with};

#[tokio::test]
async fn a_batch_that_stays_unprocessed_is_given_up() {
    let throttle = Throttle::default();
    let store = store_with(vec![intercepted(throttle.clone())]).await;
    let result = store
        .put_connection(&NewConnection {
            connection_id: "c1",
            sub: "alice",
            capabilities: "{}",
            token_exp: clock::now_secs() + 3600,
            connected_at: clock::now_ms(),
            source_ip: None,
        })
        .await;
    match result {
        Err(err @ StoreError::Unprocessed { items: 2, attempts }) => {
            assert_eq!(attempts, MAX_BATCH_ATTEMPTS);
            assert_eq!(
                err.to_string(),
                format!(
                    "batch request left 2 item(s) unprocessed after {MAX_BATCH_ATTEMPTS} attempts"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(throttle.calls.load(Ordering::SeqCst), MAX_BATCH_ATTEMPTS);
}

#[tokio::test]
async fn a_touch_refreshes_a_live_connection_and_never_brings_a_removed_one_back() {
    let store = store().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    store.touch("c1", 42).await.unwrap();
    let live = item(&store, "c#c1", "live")
        .await
        .expect("the liveness item");
    assert_eq!(live["seen"].as_n().unwrap(), "42");

    store.remove_connection("c1").await.unwrap();
    let before = items(&store).await;
    store
        .touch("c1", 43)
        .await
        .expect("a touch of a gone connection is no error");
    assert_eq!(items(&store).await, before, "nothing was written");
}
