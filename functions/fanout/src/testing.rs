//! Test support for the fan-out's tests: a [`Fanout`] on a fresh DynamoDB Local table,
//! with connections subscribed as the message function subscribes them, and a push that
//! records every frame.

use std::time::Duration;

use deltacast::clock;
use deltacast::protocol::Channel;
use deltacast::push::{Push, PushError, RetryPolicy};
use deltacast::store::{Store, Subscription};
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
    let subscriptions: Vec<_> = subscriptions
        .iter()
        .map(|(connection, channel, exp)| (*connection, *channel, *exp, false))
        .collect();
    subscribed(&subscriptions).await
}

/// A fan-out on a fresh table where each `(connection, channel, coalesce)` is subscribed
/// with a token valid for an hour, asking for coalesced delivery or not.
pub async fn fanout_with_delivery(subscriptions: &[(&str, &str, bool)]) -> Fanout<RecordingPush> {
    let exp = clock::now_secs() + 3600;
    let subscriptions: Vec<_> = subscriptions
        .iter()
        .map(|(connection, channel, coalesce)| (*connection, *channel, exp, *coalesce))
        .collect();
    subscribed(&subscriptions).await
}

/// A fan-out on a fresh table where each `(connection, channel, token expiry, coalesce)`
/// is subscribed.
async fn subscribed(subscriptions: &[(&str, &str, u64, bool)]) -> Fanout<RecordingPush> {
    let store = fresh_store().await;
    for (connection, channel, exp, coalesce) in subscriptions {
        let mut new = events::new_connection(connection, "user");
        new.token_exp = *exp;
        store.put_connection(&new).await.unwrap();
        let channel = Channel::parse(channel).unwrap();
        let subscription = Subscription {
            channel: &channel,
            coalesce: *coalesce,
            presence: false,
        };
        store
            .subscribe_with(connection, "user", *exp, subscription, clock::now_ms(), 100)
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

/// A push that answers a post with the error `fail(connection, frame)` gives, and records
/// every other post on the recording push.
pub struct FailingWhen<'a, F> {
    /// Where the posts that go through are recorded.
    pub push: &'a RecordingPush,
    /// The error for a post, if it fails.
    pub fail: F,
}

impl<F> Push for FailingWhen<'_, F>
where
    F: Fn(&str, &str) -> Option<PushError> + Send + Sync,
{
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        match (self.fail)(connection_id, frame) {
            Some(error) => Err(error),
            None => self.push.post(connection_id, frame).await,
        }
    }
}

/// A fan-out on `fanout`'s table and settings, posting through `push`.
pub fn with_push<P>(fanout: &Fanout<RecordingPush>, push: P) -> Fanout<P> {
    Fanout {
        store: fanout.store.clone(),
        push,
        concurrency: fanout.concurrency,
        retry: fanout.retry,
    }
}
