//! `publish`: once the sender's buckets hold its tokens and the channel's door lets it
//! in (refusing part of an overloaded channel's excess before the tokens are taken),
//! claims the message's id in its channel's inbox, exactly once per `(channel,
//! publisher, id)`. On a quiet channel this function then stores the delta and acks (the
//! fast path); on a busy one, or when another writer took the seq, the sequencer stores it
//! and acks. Either way this function answers what it can tell at once: the original ack
//! of an id already stored, an id still in flight, a channel over its limit, an
//! `expectSeq` that does not hold.

use deltacast::answers;
use deltacast::auth::Action;
use deltacast::clock;
use deltacast::cost;
use deltacast::metrics::{self, PublishOutcome};
use deltacast::protocol::{Channel, ErrorFrame, MessageId, Payload};
use deltacast::push::{Push, post_with_retry};
use deltacast::store::{Door, Enqueued, MAX_FRAME_WAIT_MS, NewDelta, Sequenced};
use tracing::{debug, info};

use super::{ActionError, authorize, log_channel, rate};
use crate::context::{App, Sender};

/// The fields of a `publish` frame.
pub struct Args<'a> {
    /// The channel to append to.
    pub channel: &'a Channel,
    /// The message id: the idempotency key, echoed in the ack.
    pub id: &'a MessageId,
    /// The delta's payload.
    pub data: &'a Payload,
    /// The head the publisher expects, if the publish is guarded.
    pub expect_seq: Option<u64>,
}

/// Publishes `args.data` on `args.channel`: acked here, or by the sequencer; counted by
/// outcome (`Publishes`).
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let result = publish(args, sender, app, push).await;
    if let Some(code) = result.as_ref().err().and_then(ActionError::code) {
        metrics::publish(PublishOutcome::Refused(code));
    }
    result
}

async fn publish<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args {
        channel,
        id,
        data,
        expect_seq,
    } = args;
    authorize(sender, Action::Publish, channel)?;
    log_channel(app, channel, "publish")?;
    // The sender's buckets first: a sender without tokens reads nothing more.
    let tokens = rate::check(sender, app, cost::REQUEST).await?;
    let channel_limit = app.settings.channel_rate_limit;
    // A channel over its limit refuses most of its excess at the door, before the tokens
    // are taken (see `deltacast::store::Door`), and any publish to it that waited too long
    // for this function; the channel as read there serves the claim.
    let read = match channel_limit {
        Some(_) => {
            let late = clock::now_ms().saturating_sub(sender.received_at) > MAX_FRAME_WAIT_MS;
            match app.store.door(channel.as_str(), &app.doors, late).await? {
                Door::Open(read) => Some(read),
                Door::Refused { retry_after_ms } => {
                    debug!(late, "refused at the channel's door");
                    let frame = if late {
                        answers::behind(retry_after_ms)
                    } else {
                        answers::channel_limited(channel_limit, retry_after_ms)
                    };
                    return Err(refused(frame));
                }
            }
        }
        None => None,
    };
    tokens.take(app).await?;
    let new = NewDelta {
        channel,
        id,
        from: &sender.identity.sub,
        data,
        expect_seq,
    };
    let conn = sender.connection_id;
    let enqueued = match read {
        Some(read) => {
            app.store
                .enqueue_read(read, new, conn, channel_limit)
                .await?
        }
        None => app.store.enqueue(new, conn, channel_limit).await?,
    };
    match enqueued {
        Enqueued::Claimed(claim) => match app.store.sequence_now(*claim, channel_limit).await? {
            Some(Sequenced::Published(published)) => {
                info!(id = id.as_str(), seq = published.seq, "published");
                metrics::publish(PublishOutcome::Ok);
                let ack = answers::ack(channel, id, &published);
                Ok(post_with_retry(push, sender.connection_id, &ack, sender.retry).await?)
            }
            Some(Sequenced::Conflict(head)) => {
                Err(refused(answers::conflict(expect_seq.unwrap_or(0), head)))
            }
            Some(Sequenced::RateLimited { retry_after_ms }) => Err(refused(
                answers::channel_limited(channel_limit, retry_after_ms),
            )),
            None => {
                info!(id = id.as_str(), "seq taken; handed to the sequencer");
                metrics::publish(PublishOutcome::Queued);
                Ok(())
            }
        },
        Enqueued::Queued(_) => {
            info!(id = id.as_str(), "channel busy; queued for the sequencer");
            metrics::publish(PublishOutcome::Queued);
            Ok(())
        }
        Enqueued::Published(published) => {
            info!(
                id = id.as_str(),
                seq = published.seq,
                "already published; acked again"
            );
            metrics::publish(PublishOutcome::Duplicate);
            let ack = answers::ack(channel, id, &published);
            Ok(post_with_retry(push, sender.connection_id, &ack, sender.retry).await?)
        }
        Enqueued::InFlight { retry_after_ms } => Err(refused(answers::in_flight(retry_after_ms))),
        Enqueued::RateLimited { retry_after_ms } => Err(refused(answers::channel_limited(
            channel_limit,
            retry_after_ms,
        ))),
        Enqueued::Conflict { head } => {
            Err(refused(answers::conflict(expect_seq.unwrap_or(0), head)))
        }
    }
}

fn refused(frame: ErrorFrame) -> ActionError {
    ActionError::Refused(Box::new(frame))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use deltacast::clock;
    use deltacast::store::{PublishError, items};
    use deltacast_tests::{all_items, events};
    use serde_json::json;

    #[tokio::test]
    async fn publish_acks_gap_free_seqs_from_one() {
        let w = world().await;
        let first = w.publish("chat:lobby", "m1", json!({"text": "hi"})).await;
        assert_eq!(first["type"], "ack");
        assert_eq!(first["seq"], 1);
        assert_eq!(first["id"], "m1");
        assert_eq!(first["channel"], "chat:lobby");
        let second = w.publish("chat:lobby", "m2", json!(2)).await;
        assert_eq!(second["seq"], 2);
        assert_eq!(second["epoch"], first["epoch"]);
        let other = w.publish("chat:other", "m1", json!(null)).await;
        assert_eq!(other["seq"], 1, "seqs are per channel");
    }

    #[tokio::test]
    async fn republishing_an_id_returns_the_original_ack_and_stores_nothing() {
        let w = world().await;
        let original = w.publish("chat:lobby", "same", json!("a")).await;
        w.publish("chat:lobby", "other", json!("b")).await;
        let again = w.publish("chat:lobby", "same", json!("changed")).await;
        assert_eq!(again, original);
        assert_eq!(w.delta_items().await, 2);
        // The idempotency check comes before expectSeq.
        let guarded = w
            .send(json!({"action": "publish", "channel": "chat:lobby", "id": "same", "data": 1, "expectSeq": 0}))
            .await;
        assert_eq!(guarded[0], original);
    }

    #[tokio::test]
    async fn expect_seq_guards_publishes_and_a_conflict_writes_nothing() {
        let w = world().await;
        let ok = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m1", "data": 1, "expectSeq": 0}))
            .await;
        assert_eq!(ok[0]["seq"], 1);
        let before = all_items(&w.app.store).await;
        let conflict = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m2", "data": 2, "expectSeq": 0}))
            .await;
        assert_eq!(conflict[0]["type"], "error");
        assert_eq!(conflict[0]["code"], "conflict");
        assert_eq!(conflict[0]["seq"], 1, "tells the head");
        assert_eq!(conflict[0]["id"], "m2");
        // The conflict took rate-limit tokens (the buckets); nothing else changed.
        assert_eq!(
            except_buckets(all_items(&w.app.store).await),
            except_buckets(before),
            "nothing written but the token"
        );
        let ok = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m2", "data": 2, "expectSeq": 1}))
            .await;
        assert_eq!(ok[0]["seq"], 2, "the same id works after the conflict");
    }

    #[tokio::test]
    async fn concurrent_publishes_get_distinct_gap_free_seqs() {
        let w = world().await;
        let channel = Channel::parse("chat:race").unwrap();
        let results = futures::future::join_all((0..12).map(|i| {
            let store = &w.app.store;
            let channel = &channel;
            async move {
                let id = deltacast::protocol::MessageId::parse(&format!("m{}", i % 6)).unwrap();
                let data = deltacast::protocol::Payload::from_json(i.to_string()).unwrap();
                let new = deltacast::store::NewDelta {
                    channel,
                    id: &id,
                    from: "alice",
                    data: &data,
                    expect_seq: None,
                };
                // "In flight" asks the client to retry with the same id, as it would.
                let mut result = store.publish(new).await;
                for _ in 0..50 {
                    if !matches!(result, Err(PublishError::InFlight)) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    result = store.publish(new).await;
                }
                result.map(|p| (id.clone(), p.seq))
            }
        }))
        .await;
        let mut by_id = std::collections::HashMap::new();
        for result in results {
            let (id, seq) = result.expect("every publish succeeds");
            assert_eq!(*by_id.entry(id).or_insert(seq), seq, "one id, one seq");
        }
        let mut seqs: Vec<u64> = by_id.values().copied().collect();
        seqs.sort();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "six ids, six gap-free seqs");
        assert_eq!(w.delta_items().await, 6, "duplicates stored nothing");
    }

    #[tokio::test]
    async fn requests_are_rate_limited_per_connection_and_refusals_write_nothing() {
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "0.001"),
            ("RATE_LIMIT_BURST", "3"),
        ])
        .await;
        for i in 1..=3 {
            assert_eq!(
                w.publish("chat:a", &format!("m{i}"), json!(i)).await["type"],
                "ack"
            );
        }
        let before = all_items(&w.app.store).await;
        let refused = w.publish("chat:a", "m4", json!(4)).await;
        assert_eq!(refused["code"], "rate_limited");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("this connection: 0.001 tokens per second, bursts of 3")
                && message.contains("RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST"),
            "{message}"
        );
        assert_eq!(all_items(&w.app.store).await, before, "nothing written");
        // Every action costs a token, not only publish.
        for frame in [
            json!({"action": "ping", "id": "p"}),
            json!({"action": "subscribe", "channel": "chat:a"}),
            json!({"action": "unsubscribe", "channel": "chat:a"}),
            json!({"action": "history", "channel": "chat:a", "since": 0}),
        ] {
            let refused = w.send(frame.clone()).await;
            assert_eq!(refused[0]["code"], "rate_limited", "{frame}");
        }
        assert_eq!(all_items(&w.app.store).await, before, "nothing written");

        // Another connection has a bucket of its own.
        w.app
            .store
            .put_connection(&events::new_connection("conn-B", "bob"))
            .await
            .unwrap();
        let bob = identity("bob", json!({"*": ["publish"]}));
        let frames = w
            .send_as(
                "conn-B",
                &bob,
                &json!({"action": "publish", "channel": "chat:a", "id": "b1", "data": 1})
                    .to_string(),
            )
            .await;
        assert_eq!(frames[0]["type"], "ack");
    }

    #[tokio::test]
    async fn an_id_still_in_flight_is_answered_in_flight_with_when_to_retry() {
        // GIVEN alice's m1 in the inbox, not sequenced yet (sent on another connection)
        let w = world().await;
        let channel = Channel::parse("chat:a").unwrap();
        let id = deltacast::protocol::MessageId::parse("m1").unwrap();
        let data = deltacast::protocol::Payload::from_json("1".into()).unwrap();
        let new = deltacast::store::NewDelta {
            channel: &channel,
            id: &id,
            from: "alice",
            data: &data,
            expect_seq: None,
        };
        w.app.store.enqueue(new, "conn-old", None).await.unwrap();
        // WHEN she sends m1 again, before the sequencer got to it
        let body = json!({"action": "publish", "channel": "chat:a", "id": "m1", "data": 1});
        let request = events::message(CONN, &w.alice, &body.to_string());
        crate::handler::handle(request, &w.app, &w.push)
            .await
            .unwrap();
        // THEN she is told it is in flight, and to send it again once its lease is out
        // (its ack comes by itself before that): not `internal`
        let frames = w.push.frames(CONN);
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0]["code"], "in_flight");
        assert_eq!(frames[0]["id"], "m1");
        let wait = frames[0]["retryAfterMs"].as_u64().expect("retryAfterMs");
        let lease = w.app.settings.publish_lease.as_millis() as u64;
        assert!((lease - 1000..=lease).contains(&wait), "{wait}");
    }

    #[tokio::test]
    async fn a_channel_over_its_limit_is_refused_at_once_with_when_to_retry() {
        let w = world_with(&[
            ("CHANNEL_RATE_LIMIT_PER_SECOND", "0.01"),
            ("CHANNEL_RATE_LIMIT_BURST", "1"),
        ])
        .await;
        assert_eq!(w.publish("chat:a", "m1", json!(1)).await["type"], "ack");
        let before = except_buckets(all_items(&w.app.store).await);
        let refused = w.publish("chat:a", "m2", json!(2)).await;
        assert_eq!(refused["code"], "rate_limited", "{refused}");
        let wait = refused["retryAfterMs"].as_u64().expect("retryAfterMs");
        assert!((90_000..=100_000).contains(&wait), "{wait}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("CHANNEL_RATE_LIMIT_PER_SECOND"),
            "{refused}"
        );
        assert_eq!(
            except_buckets(all_items(&w.app.store).await),
            before,
            "nothing written but the tokens"
        );
    }

    #[tokio::test]
    async fn the_bucket_refills_by_arrival_time() {
        let w = world_with(&[("RATE_LIMIT_PER_SECOND", "10"), ("RATE_LIMIT_BURST", "1")]).await;
        let frame = |id: &str| {
            json!({"action": "publish", "channel": "chat:a", "id": id, "data": 1}).to_string()
        };
        let at = |ms: u64, body: String| {
            let mut request = events::message(CONN, &w.alice, &body);
            request.request_context.request_time_epoch = ms as i64;
            request
        };
        let t0 = clock::now_ms();
        for (ms, id, expected) in [
            (t0, "a", "ack"),
            (t0 + 50, "b", "error"),
            (t0 + 100, "c", "ack"),
        ] {
            let frames = w.deliver(at(ms, frame(id))).await;
            assert_eq!(frames[0]["type"], expected, "publish {id}");
        }
    }

    #[tokio::test]
    async fn a_late_publish_to_a_busy_channel_is_refused_before_its_tokens_are_taken() {
        // GIVEN a channel the sequencer is writing (marked busy), and a publish API
        // Gateway received longer ago than the function takes frames
        let w = world().await;
        let first = w.publish("chat:a", "m0", json!(0)).await;
        assert_eq!(first["seq"], 1);
        let busy = clock::now_ms() + 60_000;
        w.set_on_channel("chat:a", items::EPOCH_SK, "busy", busy)
            .await;
        let late = |id: &str| {
            let body = json!({"action": "publish", "channel": "chat:a", "id": id, "data": 1});
            let mut request = events::message(CONN, &w.alice, &body.to_string());
            // Just late: well within the connection's burst window, so that its bucket, judged
            // at receipt, still holds tokens for it.
            let received = clock::now_ms() - MAX_FRAME_WAIT_MS - 100;
            request.request_context.request_time_epoch = received as i64;
            request
        };
        let before = all_items(&w.app.store).await;
        // WHEN it reaches the function
        let frames = w.deliver(late("late")).await;
        // THEN it is refused as rate_limited, asked to come back in a second, and nothing
        // was written, not even its tokens
        assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
        assert_eq!(frames[0]["retryAfterMs"], 1000);
        assert!(frames[0]["message"].as_str().unwrap().contains("behind"));
        assert_eq!(all_items(&w.app.store).await, before);
        // AND a late publish to a quiet channel is stored as usual
        let mut quiet = late("elsewhere");
        let body = json!({"action": "publish", "channel": "chat:b", "id": "q", "data": 1});
        quiet.body = Some(body.to_string());
        let frames = w.deliver(quiet).await;
        assert_eq!(frames[0]["type"], "ack", "{frames:?}");
    }
}
