//! Subscriptions, stored on both sides: `c#<connection>/s#<channel>` lists a connection's
//! channels (so `$disconnect` finds them in its own partition) and
//! `h#<channel>/s#<connection>` lists a channel's subscribers (so the fan-out reads one
//! partition per delta). The channel side carries the subscriber's token expiry (`exp`),
//! so the fan-out can skip a connection whose token has expired without reading anything
//! else; an item stored before subscriptions carried `exp` has none, and is treated as
//! not expiring (the connection's TTL still ends it). It also carries the subscriber's
//! delivery choice: `co` (true) when the client subscribed with `coalesce`, so the fan-out
//! may send several deltas in one `deltas` frame. `co` is written only when true, so a
//! v1 subscription's item is exactly what it was before (same bytes, same write units),
//! and an item stored before `co` existed reads as v1. `pr` (true) marks a subscription
//! made with `presence`: the fan-out sends it the channel's member changes. Every
//! subscribe rewrites the whole
//! channel-side item, so subscribing again with another choice replaces it.
//!
//! ## The limit, under concurrency
//! Counting a connection's subscriptions with a Query and then writing lets concurrent
//! subscribes all see room (150 at once against a limit of 100 stored 106). The count
//! lives instead on the connection's liveness item (`subs`) and a subscribe raises it
//! with one conditional update, `attribute_exists(pk) AND subs < :max`: DynamoDB applies
//! the updates of one item one at a time, so the limit holds, and a connection that is
//! gone is refused by the same write. Only then is the connection-side item written, with
//! `attribute_not_exists`: when another subscribe of the same channel wrote it first, this
//! one takes its count back, so a channel counts once however often it is subscribed.
//! Unsubscribe lowers the count only when it deleted the connection-side item.
//!
//! The SDK retries a write whose response was lost, and a retried count update would
//! count twice. Each update therefore stamps the item with a random tag (`sw`) and is
//! conditional on the tag not being its own; a refused retry that finds its own tag took
//! effect. The connection-side item carries its writer's tag too, so a retried write of it
//! is not mistaken for another subscribe's. Where an outcome stays unknown (an error after
//! the count was raised), the count errs high, so the limit errs on the safe side.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use tracing::debug;

use super::attributes::{Conditional, Item, conditional, dynamo, n, new_tag, number, s, text};
use super::items::{LIVE_SK, SUBSCRIPTION_PREFIX, channel_pk, connection_pk, subscription_sk};
use super::{Store, StoreError, backoff};
use crate::auth::token_expired;
use crate::clock;
use crate::protocol::Channel;

/// The channel-side attribute recording a coalescing subscription (absent: one frame per
/// delta).
const COALESCE: &str = "co";
/// The by-channel attribute that marks a subscription watching the channel's presence.
const PRESENCE: &str = "pr";

/// Why a subscription was not made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already has the maximum number of subscriptions.
    #[error("a connection may subscribe to at most {0} channels")]
    TooMany(u32),
    /// Storage failed, or the connection is gone ([`StoreError::ConnectionGone`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A connection subscribed to a channel, as the fan-out reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscriber {
    /// API Gateway's connection id.
    pub connection_id: String,
    /// The connection's token expiry, Unix seconds; `None` on a subscription stored before
    /// subscriptions carried it.
    pub token_exp: Option<u64>,
    /// Whether it subscribed with `coalesce` (several deltas per `deltas` frame).
    pub coalesce: bool,
    /// Whether it subscribed with `presence` (it gets the members' changes).
    pub presence: bool,
}

/// What a subscribe asks for: a channel, and how its deltas are to be delivered.
#[derive(Clone, Copy, Debug)]
pub struct Subscription<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// Whether the fan-out may coalesce consecutive deltas into one `deltas` frame.
    pub coalesce: bool,
    /// Whether the fan-out sends it the channel's presence changes.
    pub presence: bool,
}

impl Subscriber {
    /// Whether its token has expired at `now_secs`; never, without a stored expiry.
    pub fn expired(&self, now_secs: u64) -> bool {
        self.token_exp
            .is_some_and(|exp| token_expired(exp, now_secs))
    }
}

/// What an update of a connection's subscription count did.
#[derive(Debug, PartialEq, Eq)]
enum Counted {
    /// The count changed.
    Changed,
    /// The limit (or, going down, zero) left it as it was.
    AtBound,
    /// The connection has no liveness item.
    Gone,
}

impl Store {
    /// Subscribes a connection to a channel (both sides of the subscription), unless it
    /// already has `max_subscriptions` others; `token_exp` is its token's expiry (Unix
    /// seconds), after which the fan-out skips it. Returns `false` when it was already
    /// subscribed. A connection whose liveness item is gone is refused with
    /// [`StoreError::ConnectionGone`] and nothing is written. Deltas are delivered one
    /// frame each; [`Store::subscribe_with`] chooses.
    pub async fn subscribe(
        &self,
        connection_id: &str,
        sub: &str,
        token_exp: u64,
        channel: &Channel,
        connected_at_ms: u64,
        max_subscriptions: u32,
    ) -> Result<bool, SubscribeError> {
        let subscription = Subscription {
            channel,
            coalesce: false,
            presence: false,
        };
        self.subscribe_with(
            connection_id,
            sub,
            token_exp,
            subscription,
            connected_at_ms,
            max_subscriptions,
        )
        .await
    }

    /// [`Store::subscribe`], with the delivery `subscription` asks for; subscribing again
    /// replaces an earlier choice.
    pub async fn subscribe_with(
        &self,
        connection_id: &str,
        sub: &str,
        token_exp: u64,
        subscription: Subscription<'_>,
        connected_at_ms: u64,
        max_subscriptions: u32,
    ) -> Result<bool, SubscribeError> {
        let channel = subscription.channel;
        let gone = || StoreError::ConnectionGone {
            connection_id: connection_id.to_owned(),
        };
        let conn_pk = connection_pk(connection_id);
        let marker_sk = subscription_sk(channel.as_str());
        let ttl = n(self.connection_expiry(connected_at_ms));
        let new = if self.exists(&conn_pk, &marker_sk).await? {
            if !self.exists(&conn_pk, LIVE_SK).await? {
                return Err(gone().into());
            }
            false
        } else {
            match self
                .count_subscriptions(connection_id, 1, max_subscriptions)
                .await?
            {
                Counted::Changed => {}
                Counted::Gone => return Err(gone().into()),
                // Concurrent subscribes of this very channel may hold places they are
                // about to give back; when one of them has made the subscription, this
                // is a re-subscribe.
                Counted::AtBound if self.subscribed_meanwhile(&conn_pk, &marker_sk).await? => {
                    return self
                        .refresh_channel_side(connection_id, sub, token_exp, subscription, ttl)
                        .await
                        .map(|()| false);
                }
                Counted::AtBound => return Err(SubscribeError::TooMany(max_subscriptions)),
            }
            let tag = new_tag();
            let marker = HashMap::from([
                ("pk".to_owned(), s(&conn_pk)),
                ("sk".to_owned(), s(&marker_sk)),
                ("ttl".to_owned(), ttl.clone()),
                ("tag".to_owned(), s(&tag)),
            ]);
            let request = self
                .client
                .put_item()
                .set_item(Some(marker))
                .condition_expression("attribute_not_exists(pk)");
            match self.put_or_find(request).await? {
                Conditional::Written(()) => true,
                // The SDK's retry of this very write, which had taken effect.
                Conditional::Refused(Some(found)) if text(&found, "tag") == Some(tag.as_str()) => {
                    true
                }
                Conditional::Refused(_) => {
                    debug!(connection_id, "subscribed concurrently; counted once");
                    self.count_subscriptions(connection_id, -1, 0).await?;
                    false
                }
            }
        };
        self.refresh_channel_side(connection_id, sub, token_exp, subscription, ttl)
            .await?;
        Ok(new)
    }

    /// Writes (or rewrites) the channel-side item of a subscription, which the fan-out
    /// reads; written last, so deliveries start once the subscription is counted.
    async fn refresh_channel_side(
        &self,
        connection_id: &str,
        sub: &str,
        token_exp: u64,
        subscription: Subscription<'_>,
        ttl: AttributeValue,
    ) -> Result<(), SubscribeError> {
        let mut by_channel = HashMap::from([
            (
                "pk".to_owned(),
                s(channel_pk(subscription.channel.as_str())),
            ),
            ("sk".to_owned(), s(subscription_sk(connection_id))),
            ("sub".to_owned(), s(sub)),
            ("exp".to_owned(), n(token_exp)),
            ("ttl".to_owned(), ttl),
        ]);
        if subscription.coalesce {
            by_channel.insert(COALESCE.to_owned(), AttributeValue::Bool(true));
        }
        if subscription.presence {
            by_channel.insert(PRESENCE.to_owned(), AttributeValue::Bool(true));
        }
        self.send(
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(by_channel)),
        )
        .await
        .map_err(dynamo)?;
        Ok(())
    }

    /// Removes a subscription (both sides), and its place in the connection's count; a
    /// no-op when there is none.
    pub async fn unsubscribe(
        &self,
        connection_id: &str,
        channel: &Channel,
    ) -> Result<(), StoreError> {
        // Conditional, so that of concurrent unsubscribes exactly one is told it deleted it.
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(connection_pk(connection_id)))
            .key("sk", s(subscription_sk(channel.as_str())))
            .condition_expression("attribute_exists(pk)");
        let deleted_marker = matches!(
            conditional(self.send(request).await)?,
            Conditional::Written(_)
        );
        let by_channel = self.send(
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(channel_pk(channel.as_str())))
                .key("sk", s(subscription_sk(connection_id))),
        );
        if deleted_marker {
            // Only the unsubscribe that deleted the connection-side item gives back its place.
            let (deleted, counted) =
                tokio::join!(by_channel, self.count_subscriptions(connection_id, -1, 0));
            deleted.map_err(dynamo)?;
            // Gone (removed meanwhile) or already at zero: nothing to give back.
            counted?;
        } else {
            by_channel.await.map_err(dynamo)?;
        }
        Ok(())
    }

    /// Every connection subscribed to a channel, page after page (see
    /// [`Store::subscribers_page`]).
    pub async fn subscribers(&self, channel: &str) -> Result<Vec<Subscriber>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.subscribers_page(channel, start).await?;
            all.extend(page);
            match next {
                Some(key) => start = Some(key),
                None => return Ok(all),
            }
        }
    }

    /// The connections subscribed to a channel, with their token expiry and delivery
    /// choice, one Query page at a time. Subscriptions past their TTL are left out; expired tokens are not (the
    /// fan-out tells those connections once).
    pub async fn subscribers_page(
        &self,
        channel: &str,
        start: Option<Item>,
    ) -> Result<(Vec<Subscriber>, Option<Item>), StoreError> {
        let now = clock::now_secs();
        let out = self
            .send(
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
                    .expression_attribute_values(":pk", s(channel_pk(channel)))
                    .expression_attribute_values(":s", s(SUBSCRIPTION_PREFIX))
                    .projection_expression("sk, #ttl, #exp, #co, #pr")
                    .expression_attribute_names("#ttl", "ttl")
                    .expression_attribute_names("#exp", "exp")
                    .expression_attribute_names("#co", COALESCE)
                    .expression_attribute_names("#pr", PRESENCE)
                    .consistent_read(true)
                    .set_exclusive_start_key(start),
            )
            .await
            .map_err(dynamo)?;
        let subscribers = out
            .items()
            .iter()
            .filter(|item| number::<u64>(item, "ttl").is_none_or(|ttl| ttl > now))
            .filter_map(|item| {
                let connection_id = text(item, "sk")?.strip_prefix(SUBSCRIPTION_PREFIX)?;
                Some(Subscriber {
                    connection_id: connection_id.to_owned(),
                    token_exp: number(item, "exp"),
                    coalesce: matches!(item.get(COALESCE), Some(AttributeValue::Bool(true))),
                    presence: matches!(item.get(PRESENCE), Some(AttributeValue::Bool(true))),
                })
            })
            .collect();
        let next = out.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((subscribers, next))
    }

    /// Whether a concurrent subscribe of the channel has written the connection-side item
    /// (looking twice, 20 ms apart at most, as its write may be on its way).
    async fn subscribed_meanwhile(
        &self,
        conn_pk: &str,
        marker_sk: &str,
    ) -> Result<bool, StoreError> {
        if self.exists(conn_pk, marker_sk).await? {
            return Ok(true);
        }
        tokio::time::sleep(backoff(1)).await;
        self.exists(conn_pk, marker_sk).await
    }

    /// Whether the item at `pk`/`sk` exists (a strongly consistent read of its key).
    async fn exists(&self, pk: &str, sk: &str) -> Result<bool, StoreError> {
        let out = self
            .send(self.read_item(pk, sk).projection_expression("pk"))
            .await
            .map_err(dynamo)?;
        Ok(out.item.is_some())
    }

    /// Raises (`change` 1, while under `max`) or lowers (`change` -1, while above zero;
    /// `max` unused) the connection's subscription count, once even if the SDK retries.
    async fn count_subscriptions(
        &self,
        connection_id: &str,
        change: i8,
        max: u32,
    ) -> Result<Counted, StoreError> {
        let tag = new_tag();
        let bound = if change > 0 {
            "(attribute_not_exists(subs) OR subs < :bound)"
        } else {
            "subs > :bound"
        };
        let request = self
            .update_liveness(connection_id)
            .update_expression("ADD subs :change SET sw = :tag")
            .condition_expression(format!(
                "attribute_exists(pk) AND (attribute_not_exists(sw) OR sw <> :tag) AND {bound}"
            ))
            .expression_attribute_values(":change", AttributeValue::N(change.to_string()))
            .expression_attribute_values(":tag", s(&tag))
            .expression_attribute_values(":bound", n(if change > 0 { u64::from(max) } else { 0 }))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(match conditional(self.send(request).await)? {
            Conditional::Written(_) => Counted::Changed,
            Conditional::Refused(None) => Counted::Gone,
            // The SDK's retry of this very update, which had taken effect.
            Conditional::Refused(Some(found)) if text(&found, "sw") == Some(tag.as_str()) => {
                Counted::Changed
            }
            Conditional::Refused(Some(_)) => Counted::AtBound,
        })
    }
}
