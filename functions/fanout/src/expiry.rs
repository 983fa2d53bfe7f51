//! Subscriptions whose token has expired. A token is checked at `$connect` and on every
//! action, but a subscription made while it was valid would otherwise keep receiving
//! until API Gateway closes the connection (up to 2 hours). So the fan-out skips every
//! subscription whose stored token expiry has passed and sends its connection one
//! `token_expired` error instead, telling the client to reconnect with a fresh token.
//!
//! One, not one per delta: the connection's liveness item holds a claim
//! ([`deltacast::store::Store::claim_expiry_notice`]) that only one fan-out, on any
//! instance, can make, and only the maker posts. A post that fails after its retries
//! gives the claim back, so the next delta on any of the connection's channels tries
//! again; a 410 prunes the connection as it does for deltas. The skipped deltas are not
//! failures: the batch goes on.
//!
//! Once told, the connection's items are removed, its subscriptions with them: nothing
//! will reach it any more, and otherwise every later batch on each of its channels would
//! read its subscription and pay for a refused claim until API Gateway closed it. Its
//! socket stays open until the client reconnects; every action it sends is still answered
//! `token_expired`, which the message function decides before reading the table.

use std::collections::BTreeSet;

use deltacast::protocol::{ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError, post_with_retry};
use futures::{StreamExt, stream};
use tracing::{info, warn};

use crate::handler::Fanout;

/// What telling one connection came to.
enum Notice {
    /// This fan-out told it.
    Told,
    /// Another fan-out told it (or is telling it), or its liveness item is gone.
    AlreadyTold,
    /// The post answered 410: the connection is gone.
    Gone,
    /// The claim or the post failed; a later fan-out tries again.
    Failed,
}

impl<P: Push> Fanout<P> {
    /// Tells each connection of `expired` that its token has expired, unless it was told
    /// before, and adds those that are gone to `dead`. Returns how many were told.
    pub(crate) async fn tell_expired(
        &self,
        expired: &BTreeSet<String>,
        dead: &mut Vec<String>,
    ) -> usize {
        let notices: Vec<(&String, Notice)> = stream::iter(expired)
            .map(|connection| async move { (connection, self.tell(connection).await) })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        let mut told = 0;
        for (connection, notice) in notices {
            match notice {
                Notice::Told => told += 1,
                Notice::Gone => dead.push(connection.clone()),
                Notice::AlreadyTold | Notice::Failed => {}
            }
        }
        told
    }

    /// Tells one connection, if no one has.
    async fn tell(&self, connection: &str) -> Notice {
        let tag = match self.store.claim_expiry_notice(connection).await {
            Ok(Some(tag)) => tag,
            Ok(None) => return Notice::AlreadyTold,
            Err(error) => {
                warn!(connection_id = connection, %error, "could not claim the token-expired notice");
                return Notice::Failed;
            }
        };
        let frame = ServerMessage::Error(&ErrorFrame::token_expired()).to_json();
        match post_with_retry(&self.push, connection, &frame, self.retry).await {
            Ok(()) => {
                match self.store.remove_connection(connection).await {
                    Ok(removed) => info!(
                        connection_id = connection,
                        removed, "told the connection its token expired; removed its items"
                    ),
                    // The claim stays, so later batches skip it without telling it again.
                    Err(error) => warn!(
                        connection_id = connection,
                        %error, "told the connection its token expired; could not remove its items"
                    ),
                }
                Notice::Told
            }
            Err(PushError::Gone) => Notice::Gone,
            Err(error) => {
                warn!(connection_id = connection, %error, "could not tell the connection its token expired; a later delta will");
                if let Err(error) = self.store.release_expiry_notice(connection, &tag).await {
                    warn!(connection_id = connection, %error, "could not give back the token-expired notice");
                }
                Notice::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fanout_on, fanout_with_expiry};
    use aws_sdk_dynamodb::types::AttributeValue;
    use deltacast::clock;
    use deltacast::store::Store;
    use deltacast_tests::{events, items_naming};
    use serde_json::{Value, json};

    /// The one frame an expired connection gets.
    fn notice() -> Value {
        json!({"type": "error", "code": "token_expired", "message": "token expired; reconnect with a fresh token"})
    }

    fn deltas(frames: &[Value]) -> usize {
        frames.iter().filter(|f| f["type"] == "delta").count()
    }

    /// Makes `connection`'s subscription to `channel` look as it did before subscriptions
    /// carried the token's expiry.
    async fn forget_expiry(store: &Store, channel: &str, connection: &str) {
        store
            .client()
            .update_item()
            .table_name(store.table())
            .key("pk", AttributeValue::S(format!("h#{channel}")))
            .key("sk", AttributeValue::S(format!("s#{connection}")))
            .update_expression("REMOVE #exp")
            .expression_attribute_names("#exp", "exp")
            .send()
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn an_expired_subscription_gets_no_delta_and_one_notice_across_batches_and_instances() {
        // GIVEN `fresh` and `expired` subscribed to both channels of the batch, the latter
        // with a token that expired 10 s ago, and `legacy`, whose subscription was stored
        // before subscriptions carried an expiry
        let now = clock::now_secs();
        let a = fanout_with_expiry(&[
            ("fresh", "chat:lobby", now + 3600),
            ("fresh", "news", now + 3600),
            ("expired", "chat:lobby", now - 10),
            ("expired", "news", now - 10),
            ("legacy", "chat:lobby", now - 10),
        ])
        .await;
        forget_expiry(&a.store, "chat:lobby", "legacy").await;
        let b = fanout_on(a.store.clone());
        // WHEN two instances handle a batch at once, and then one of them another
        let (first, second) = tokio::join!(
            a.handle(events::stream_batch()),
            b.handle(events::stream_batch())
        );
        let third = a.handle(events::stream_batch()).await;
        // THEN nothing failed, the expired connection got one notice and no delta, and
        // the others got everything
        for response in [first, second, third] {
            assert!(response.batch_item_failures.is_empty());
        }
        let expired = [a.push.frames("expired"), b.push.frames("expired")].concat();
        assert_eq!(
            expired,
            [notice()],
            "one notice across batches and instances"
        );
        assert_eq!(
            items_naming(&a.store, "expired").await,
            0,
            "told, then removed with its subscriptions"
        );
        assert_eq!(deltas(&a.push.frames("fresh")), 6);
        assert_eq!(deltas(&b.push.frames("fresh")), 3);
        assert!(a.push.frames("fresh").iter().all(|f| f["type"] == "delta"));
        assert_eq!(
            deltas(&a.push.frames("legacy")) + deltas(&b.push.frames("legacy")),
            6,
            "a subscription without a stored expiry does not expire"
        );
    }

    #[tokio::test]
    async fn a_connection_another_instance_is_telling_is_not_told_again() {
        // GIVEN an expired subscription whose notice another instance has claimed
        let now = clock::now_secs();
        let fanout = fanout_with_expiry(&[("expired", "chat:lobby", now - 10)]).await;
        let other = fanout.store.claim_expiry_notice("expired").await.unwrap();
        assert!(other.is_some());
        // WHEN this instance fans a batch out
        let response = fanout.handle(events::stream_batch()).await;
        // THEN it posts nothing to the connection, and leaves its removal to the teller
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(fanout.push.attempts("expired"), 0);
        assert!(items_naming(&fanout.store, "expired").await > 0);
    }

    #[tokio::test]
    async fn a_notice_that_could_not_be_posted_is_sent_with_a_later_delta() {
        // GIVEN an expired subscription whose connection is throttled for one whole post
        let now = clock::now_secs();
        let fanout = fanout_with_expiry(&[("expired", "chat:lobby", now - 10)]).await;
        fanout
            .push
            .fail_next("expired", vec![PushError::Throttled; 3]);
        // WHEN the first batch cannot tell it
        let response = fanout.handle(events::stream_batch()).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "skipped, not failed"
        );
        assert_eq!(fanout.push.attempts("expired"), 3);
        assert!(fanout.push.frames("expired").is_empty());
        assert!(
            items_naming(&fanout.store, "expired").await > 0,
            "kept until told"
        );
        // THEN the next batches tell it, once
        fanout.handle(events::stream_batch()).await;
        fanout.handle(events::stream_batch()).await;
        assert_eq!(fanout.push.frames("expired"), [notice()]);
        assert_eq!(fanout.push.attempts("expired"), 4);
    }

    #[tokio::test]
    async fn an_expired_connection_that_is_gone_is_pruned() {
        // GIVEN an expired subscription whose connection answers 410
        let now = clock::now_secs();
        let fanout = fanout_with_expiry(&[
            ("expired", "chat:lobby", now - 10),
            ("fresh", "chat:lobby", now + 3600),
        ])
        .await;
        fanout.push.set_gone("expired");
        // WHEN a batch is fanned out
        let response = fanout.handle(events::stream_batch()).await;
        // THEN the connection is removed with everything naming it, and the rest delivered
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(items_naming(&fanout.store, "expired").await, 0);
        assert_eq!(deltas(&fanout.push.frames("fresh")), 2);
    }
}
