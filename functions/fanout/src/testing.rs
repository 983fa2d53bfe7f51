//! Test support for the fan-out's tests: a [`Fanout`] on a fresh DynamoDB Local table,
//! with connections subscribed as the message function subscribes them, and a push that
//! records every frame.

use std::time::Duration;

use deltacast::clock;
use deltacast::protocol::Channel;
use deltacast::push::RetryPolicy;
use deltacast::store::Store;
use deltacast_tests::push::RecordingPush;
use deltacast_tests::{events, fresh_store};

use crate::handler::Fanout;

/// A fan-out on a fresh table where each `(connection, channel)` is subscribed with a
/// token valid for an hour.
pub async fn fanout_with(subscriptions: &[(&str, &str)]) -> Fanout<RecordingPush> {
    let exp = clock::now_secs() + 3600;
    let subscriptions: Vec<_> = subscriptions
        .iter()
        .map(|(connection, channel)| (*connection, *channel, exp))
        .collect();
    fanout_with_expiry(&subscriptions).await
}

/// A fan-out on a fresh table where each `(connection, channel, token expiry)` is
/// subscribed.
pub async fn fanout_with_expiry(subscriptions: &[(&str, &str, u64)]) -> Fanout<RecordingPush> {
    let store = fresh_store().await;
    for (connection, channel, exp) in subscriptions {
        let mut new = events::new_connection(connection, "user");
        new.token_exp = *exp;
        store.put_connection(&new).await.unwrap();
        store
            .subscribe(
                connection,
                "user",
                *exp,
                &Channel::parse(channel).unwrap(),
                clock::now_ms(),
                100,
            )
            .await
            .unwrap();
    }
    fanout_on(store)
}

/// Another fan-out instance on `store`'s table, with its own recording push.
pub fn fanout_on(store: Store) -> Fanout<RecordingPush> {
    Fanout {
        store,
        push: RecordingPush::new(),
        concurrency: 8,
        retry: RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
        },
    }
}
