//! The publish token bucket against DynamoDB Local: a frame from a connection that is
//! gone takes no token, writes nothing and is refused, so closing right after a flood
//! does not get around the limit.

mod support;

use deltacast::clock;
use deltacast::config::RateLimit;
use deltacast::store::StoreError;
use deltacast_tests::events;
use support::{items, store};

const LIMIT: RateLimit = RateLimit {
    per_second: 1.0,
    burst: 3.0,
};

#[tokio::test]
async fn a_connection_takes_its_burst_of_tokens_then_is_refused() {
    let store = store().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    let now = clock::now_ms();
    for _ in 0..3 {
        assert!(store.take_publish_token("c1", now, LIMIT).await.unwrap());
    }
    let before = items(&store).await;
    assert!(!store.take_publish_token("c1", now, LIMIT).await.unwrap());
    assert_eq!(items(&store).await, before, "a refusal writes nothing");
    assert!(
        store
            .take_publish_token("c1", now + 1000, LIMIT)
            .await
            .unwrap(),
        "a token back after a second"
    );
}

#[tokio::test]
async fn a_publish_token_for_a_removed_connection_is_refused_and_writes_nothing() {
    // GIVEN a connection that published, then closed ($disconnect removed it)
    let store = store().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    store
        .put_connection(&events::new_connection("c2", "bob"))
        .await
        .unwrap();
    assert!(
        store
            .take_publish_token("c1", clock::now_ms(), LIMIT)
            .await
            .unwrap()
    );
    store.remove_connection("c1").await.unwrap();
    let before = items(&store).await;
    // WHEN a frame it sent before closing asks for a token
    let result = store.take_publish_token("c1", clock::now_ms(), LIMIT).await;
    // THEN it is refused as gone, and the table is as it was: no bucket, no liveness item
    match result {
        Err(err @ StoreError::ConnectionGone { .. }) => {
            assert!(err.is_connection_gone());
            assert!(err.to_string().contains("c1"), "{err}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(items(&store).await, before);
}

#[tokio::test]
async fn a_publish_token_for_a_connection_never_stored_is_refused() {
    let store = store().await;
    let result = store
        .take_publish_token("never-was", clock::now_ms(), LIMIT)
        .await;
    assert!(
        matches!(result, Err(StoreError::ConnectionGone { .. })),
        "{result:?}"
    );
    assert!(items(&store).await.is_empty());
}
