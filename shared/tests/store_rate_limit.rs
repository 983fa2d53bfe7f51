//! The rate-limit buckets against DynamoDB Local: a frame from a connection that is gone
//! takes no token, writes nothing and is refused, so closing right after a flood does not
//! get around the limit; a user's bucket is shared by all their connections; a read's
//! charge puts a bucket in debt; concurrent requests take exactly the burst.

mod support;

use deltacast::clock;
use deltacast::config::RateLimit;
use deltacast::store::{BucketOf, StoreError};
use deltacast_tests::events;
use support::{items, store};

fn conn(id: &str) -> BucketOf<'_> {
    BucketOf::Connection(id)
}

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
        assert!(
            store
                .take_tokens(conn("c1"), now, LIMIT, 1.0)
                .await
                .unwrap()
        );
    }
    let before = items(&store).await;
    assert!(
        !store
            .take_tokens(conn("c1"), now, LIMIT, 1.0)
            .await
            .unwrap()
    );
    assert_eq!(items(&store).await, before, "a refusal writes nothing");
    assert!(
        store
            .take_tokens(conn("c1"), now + 1000, LIMIT, 1.0)
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
            .take_tokens(conn("c1"), clock::now_ms(), LIMIT, 1.0)
            .await
            .unwrap()
    );
    store.remove_connection("c1").await.unwrap();
    let before = items(&store).await;
    // WHEN a frame it sent before closing asks for a token
    let result = store
        .take_tokens(conn("c1"), clock::now_ms(), LIMIT, 1.0)
        .await;
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
        .take_tokens(conn("never-was"), clock::now_ms(), LIMIT, 1.0)
        .await;
    assert!(
        matches!(result, Err(StoreError::ConnectionGone { .. })),
        "{result:?}"
    );
    assert!(items(&store).await.is_empty());
}

#[tokio::test]
async fn a_users_bucket_is_shared_by_its_connections_and_expires() {
    let store = store().await;
    let now = clock::now_ms();
    for _ in 0..3 {
        assert!(
            store
                .take_tokens(BucketOf::User("alice"), now, LIMIT, 1.0)
                .await
                .unwrap()
        );
    }
    let before = items(&store).await;
    assert!(
        !store
            .take_tokens(BucketOf::User("alice"), now, LIMIT, 1.0)
            .await
            .unwrap(),
        "the burst is spent, whichever connection asks"
    );
    assert_eq!(items(&store).await, before, "a refusal writes nothing");
    assert!(
        store
            .take_tokens(BucketOf::User("bob"), now, LIMIT, 1.0)
            .await
            .unwrap(),
        "another user has a bucket of their own"
    );
    let alice = before
        .iter()
        .find(|item| item["pk"].as_s().unwrap() == "u#alice")
        .expect("alice's bucket item");
    assert_eq!(alice["sk"].as_s().unwrap(), "rate");
    let ttl: u64 = alice["ttl"].as_n().unwrap().parse().unwrap();
    // Refilled after 2 × burst / rate = 6 s, kept an hour longer at most.
    assert!(ttl > now / 1000 && ttl <= now / 1000 + 6 + 3600, "{ttl}");
}

#[tokio::test]
async fn a_charged_read_leaves_the_bucket_in_debt_until_refilled() {
    let store = store().await;
    store
        .put_connection(&events::new_connection("c1", "alice"))
        .await
        .unwrap();
    let now = clock::now_ms();
    assert!(
        store
            .take_tokens(conn("c1"), now, LIMIT, 1.0)
            .await
            .unwrap()
    );
    store
        .charge_tokens(conn("c1"), now, LIMIT, 4.0)
        .await
        .unwrap();
    // 3 - 1 - 4 = -2: three seconds at 1/s before a whole token is back.
    assert!(
        !store
            .take_tokens(conn("c1"), now + 2_999, LIMIT, 1.0)
            .await
            .unwrap()
    );
    assert!(
        store
            .take_tokens(conn("c1"), now + 3_000, LIMIT, 1.0)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn concurrent_requests_on_one_bucket_take_exactly_the_burst() {
    let store = store().await;
    let limit = RateLimit {
        per_second: 0.001,
        burst: 5.0,
    };
    let now = clock::now_ms();
    let takes = (0..12).map(|_| store.take_tokens(BucketOf::User("alice"), now, limit, 1.0));
    let admitted = futures::future::join_all(takes)
        .await
        .into_iter()
        .filter(|taken| *taken.as_ref().unwrap())
        .count();
    // Each take is an atomic addition on the bucket: no request loses a race, so exactly
    // the burst is admitted, however many arrive at once.
    assert_eq!(admitted, 5, "admitted with a burst of 5");
    let mut more = 0;
    while more < 10
        && store
            .take_tokens(BucketOf::User("alice"), now, limit, 1.0)
            .await
            .unwrap()
    {
        more += 1;
    }
    assert_eq!(admitted + more, 5, "the burst, and not one more");
}
