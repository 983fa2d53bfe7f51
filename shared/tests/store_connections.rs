//! Connections against DynamoDB Local: stored in one batch that is given up on (not
//! pretended) when DynamoDB keeps throttling it.

mod support;

use std::sync::atomic::Ordering;

use deltacast::clock;
use deltacast::store::{MAX_BATCH_ATTEMPTS, NewConnection, StoreError};
use support::{Throttle, intercepted, store_with};

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
                    "batch write left 2 item(s) unprocessed after {MAX_BATCH_ATTEMPTS} attempts"
                )
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(throttle.calls.load(Ordering::SeqCst), MAX_BATCH_ATTEMPTS);
}
