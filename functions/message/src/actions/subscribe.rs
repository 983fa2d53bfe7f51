//! `subscribe`: stores the subscription first (so no live delta is missed), then replays
//! retained deltas after `since`, then confirms with `subscribed`. The catch-up is sent
//! as `delta` frames even for a subscription with `coalesce`, which only changes how the
//! fan-out delivers live deltas. A state channel is answered with its document (a `state`
//! frame) instead, once subscribed, and its changes follow as patches.

use deltacast::auth::Action;
use deltacast::cost;
use deltacast::protocol::MAX_READ_BYTES;
use deltacast::protocol::{Channel, ErrorCode, MessageId, ServerMessage};
use deltacast::push::{Push, PushError};
use deltacast::store::{Head, SubscribeError, Subscription};
use tracing::warn;

use super::{ActionError, authorize, rate, send, state};
use crate::context::{App, Sender};

/// The fields of a `subscribe` frame.
pub struct Args<'a> {
    /// The channel to receive.
    pub channel: &'a Channel,
    /// The last seq the client saw, to catch up from.
    pub since: Option<u64>,
    /// The epoch that seq belongs to.
    pub epoch: Option<&'a str>,
    /// The request id to echo.
    pub id: Option<&'a MessageId>,
    /// Whether live deltas may come several to a `deltas` frame.
    pub coalesce: bool,
    /// Whether the subscription also gets the channel's presence changes.
    pub presence: bool,
}

/// Subscribes the sender to `args.channel`, catching up from `args.since` when given.
pub async fn run<P: Push>(
    args: Args<'_>,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    let Args {
        channel,
        since,
        epoch,
        id,
        coalesce,
        presence,
    } = args;
    authorize(sender, Action::Subscribe, channel)?;
    let stateful = app.settings.state.is_state(channel.as_str());
    if stateful && (since.is_some() || coalesce) {
        let field = if coalesce { "coalesce" } else { "since" };
        return Err(ActionError::refused(
            ErrorCode::BadRequest,
            format!(
                "{channel} is a state channel: subscribe answers with its state, then patches; `{field}` is for log channels"
            ),
        ));
    }
    // A catch-up is a read: it takes a deposit, the most it can cost given how far behind
    // the client is (the head is read for that, and again once subscribed), and settles
    // the difference once served.
    let deposit = match since {
        Some(since) => {
            let head = app.store.head(channel.as_str()).await?;
            let missed = match head.epoch.as_deref() {
                Some(current) if epoch.is_none_or(|e| e == current) => {
                    head.seq.saturating_sub(since)
                }
                _ => 0,
            };
            cost::catch_up_deposit(missed.min(u64::from(app.settings.catchup_limit)) as usize)
        }
        None => cost::REQUEST,
    };
    rate::admit(sender, app, deposit).await?;
    let subscribed = app
        .store
        .subscribe_with(
            sender.connection_id,
            &sender.identity.sub,
            sender.identity.exp,
            Subscription {
                channel,
                coalesce,
                presence,
            },
            sender.connected_at,
            app.settings.max_subscriptions,
        )
        .await
        .map_err(|err| match err {
            SubscribeError::TooMany(max) => ActionError::refused(
                ErrorCode::BadRequest,
                format!("this connection already has the most subscriptions allowed ({max}, MAX_SUBSCRIPTIONS)"),
            ),
            SubscribeError::Store(err) => err.into(),
        });
    if let Err(err) = subscribed {
        // Refused (or failed) before reading anything: the price of a request.
        rate::settle(sender, app, deposit, cost::REQUEST).await;
        return Err(err);
    }
    if stateful {
        // The snapshot confirms the subscription; patches follow (see `state`).
        let bytes = state::send_snapshot(sender, app, push, channel, id).await?;
        rate::settle(sender, app, deposit, cost::read(bytes, 0)).await;
        return Ok(());
    }
    let head = app.store.head(channel.as_str()).await?;
    let recovered = match since {
        None => None,
        Some(since) => {
            let (recovered, price) =
                catch_up(sender, app, push, channel, &head, since, epoch).await?;
            rate::settle(sender, app, deposit, price).await;
            Some(recovered)
        }
    };
    send(
        push,
        sender,
        &ServerMessage::Subscribed {
            channel,
            seq: head.seq,
            epoch: head.epoch.as_deref(),
            recovered,
            id,
        },
    )
    .await
}

/// Sends the retained deltas after `since` (at most `CATCHUP_LIMIT` and
/// [`MAX_READ_BYTES`]) and tells whether they are all the client missed, with the read's
/// price in tokens.
async fn catch_up<P: Push>(
    sender: &Sender<'_>,
    app: &App,
    push: &P,
    channel: &Channel,
    head: &Head,
    since: u64,
    client_epoch: Option<&str>,
) -> Result<(bool, f64), ActionError> {
    let nothing_read = cost::read(0, 0);
    let Some(epoch) = head.epoch.as_deref() else {
        // No retained history: nothing was missed only if the client had seen nothing.
        return Ok((since == 0 && client_epoch.is_none(), nothing_read));
    };
    if client_epoch.is_some_and(|e| e != epoch) || since > head.seq {
        return Ok((false, nothing_read));
    }
    if since == head.seq {
        return Ok((true, nothing_read));
    }
    let page = app
        .store
        .deltas_after(
            channel.as_str(),
            epoch,
            since,
            app.settings.catchup_limit as usize,
            MAX_READ_BYTES,
        )
        .await?;
    // Owed whether or not every push goes through: the reads were made.
    let price = cost::read(page.bytes, page.deltas.len());
    let contiguous = page
        .deltas
        .iter()
        .zip(since + 1..)
        .all(|(delta, expected)| delta.seq == expected);
    let mut complete = page.deltas.last().is_some_and(|d| d.seq >= head.seq) && !page.more;
    for delta in &page.deltas {
        match send(push, sender, &ServerMessage::Delta(delta)).await {
            Ok(()) => {}
            Err(ActionError::Push(PushError::Gone)) => return Err(PushError::Gone.into()),
            Err(err) => {
                // The client gets `subscribed` with `recovered: false` rather than silence.
                warn!(error = %err, seq = delta.seq, "catch-up interrupted");
                complete = false;
                break;
            }
        }
    }
    Ok((contiguous && complete, price))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use deltacast::clock;
    use deltacast::store::Subscriber;
    use deltacast_tests::{all_items, events};
    use serde_json::{Value, json};

    #[tokio::test]
    async fn subscribe_catches_up_from_since_then_confirms() {
        let w = world().await;
        let mut epoch = Value::Null;
        for i in 1..=5 {
            epoch = w
                .publish("chat:lobby", &format!("m{i}"), json!({"n": i}))
                .await["epoch"]
                .clone();
        }
        let frames = w
            .send(json!({"action": "subscribe", "channel": "chat:lobby", "since": 2, "epoch": epoch, "id": "s1"}))
            .await;
        let seqs: Vec<&Value> = frames[..3].iter().map(|f| &f["seq"]).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert!(
            frames[..3]
                .iter()
                .all(|f| f["type"] == "delta" && f["from"] == "alice")
        );
        assert_eq!(frames[0]["data"], json!({"n": 3}));
        assert_eq!(
            frames[3],
            json!({"type": "subscribed", "channel": "chat:lobby", "seq": 5, "epoch": epoch, "recovered": true, "id": "s1"})
        );
        let (subscribers, _) = w
            .app
            .store
            .subscribers_page("chat:lobby", None)
            .await
            .unwrap();
        assert_eq!(subscribers, [w.subscriber()]);
    }

    #[tokio::test]
    async fn the_coalesce_choice_reaches_the_fan_out_and_a_wrong_one_changes_nothing() {
        let w = world().await;
        let subscribers = || async {
            w.app
                .store
                .subscribers_page("chat:lobby", None)
                .await
                .unwrap()
                .0
        };
        // A wrong type is refused, naming the field, and subscribes nothing.
        let refused = w
            .send(json!({"action": "subscribe", "channel": "chat:lobby", "coalesce": "yes"}))
            .await;
        assert_eq!(refused[0]["code"], "bad_request");
        assert_eq!(
            refused[0]["message"],
            r#"coalesce must be true or false; got the string "yes""#
        );
        assert!(subscribers().await.is_empty());
        // With coalesce, the fan-out reads the choice; a plain resubscribe undoes it.
        let subscribed = w
            .send(json!({"action": "subscribe", "channel": "chat:lobby", "coalesce": true}))
            .await;
        assert_eq!(subscribed[0]["type"], "subscribed");
        let coalescing = Subscriber {
            coalesce: true,
            ..w.subscriber()
        };
        assert_eq!(subscribers().await, [coalescing]);
        w.send(json!({"action": "subscribe", "channel": "chat:lobby"}))
            .await;
        assert_eq!(subscribers().await, [w.subscriber()]);
    }

    #[tokio::test]
    async fn subscribe_reports_what_cannot_be_recovered() {
        let w = world_with(&[("CATCHUP_LIMIT", "2")]).await;
        for i in 1..=5 {
            w.publish("chat:lobby", &format!("m{i}"), json!(i)).await;
        }
        let epoch = w.app.store.head("chat:lobby").await.unwrap().epoch.unwrap();
        let subscribe = |since: u64, epoch: &str| json!({"action": "subscribe", "channel": "chat:lobby", "since": since, "epoch": epoch});

        let wrong_epoch = w.send(subscribe(2, "not-the-epoch")).await;
        assert_eq!(wrong_epoch.len(), 1, "no deltas from another epoch");
        assert_eq!(wrong_epoch[0]["recovered"], false);

        let too_many = w.send(subscribe(0, &epoch)).await;
        assert_eq!(too_many.len(), 3, "the cap (2) deltas, then subscribed");
        assert_eq!(too_many[2]["recovered"], false);

        let ahead = w.send(subscribe(9, &epoch)).await;
        assert_eq!(ahead[0]["recovered"], false);

        let up_to_date = w.send(subscribe(5, &epoch)).await;
        assert_eq!(
            up_to_date,
            [
                json!({"type": "subscribed", "channel": "chat:lobby", "seq": 5, "epoch": epoch, "recovered": true})
            ]
        );

        let plain = w
            .send(json!({"action": "subscribe", "channel": "chat:quiet"}))
            .await;
        assert_eq!(
            plain,
            [json!({"type": "subscribed", "channel": "chat:quiet", "seq": 0})]
        );
        let fresh = w
            .send(json!({"action": "subscribe", "channel": "chat:quiet", "since": 0}))
            .await;
        assert_eq!(
            fresh[0]["recovered"], true,
            "nothing was ever missed on an empty channel"
        );
        let stale = w
            .send(
                json!({"action": "subscribe", "channel": "chat:quiet", "since": 3, "epoch": "old"}),
            )
            .await;
        assert_eq!(
            stale[0]["recovered"], false,
            "history of that epoch is gone"
        );
    }

    #[tokio::test]
    async fn catch_up_and_history_skip_expired_deltas_and_say_what_was_lost() {
        // GIVEN four deltas whose two oldest have expired (TTL has not deleted them yet)
        let w = world().await;
        w.store_deltas("chat:old", 4, 10).await;
        let epoch = w.app.store.head("chat:old").await.unwrap().epoch.unwrap();
        for seq in [1, 2] {
            let sk = deltacast::store::items::delta_sk(&epoch, seq);
            deltacast_tests::expire_item(&w.app.store, "h#chat:old", &sk).await;
        }
        // WHEN a client catches up from the start, and reads history from the start
        let frames = w
            .send(json!({"action": "subscribe", "channel": "chat:old", "since": 0, "epoch": epoch}))
            .await;
        let page = w
            .send(json!({"action": "history", "channel": "chat:old", "since": 0}))
            .await;
        // THEN both return only the retained deltas, and catch-up says the gap is lost
        let seqs: Vec<&Value> = frames[..2].iter().map(|f| &f["seq"]).collect();
        assert_eq!(seqs, [3, 4]);
        assert_eq!(frames[2]["type"], "subscribed");
        assert_eq!(frames[2]["recovered"], false);
        let seqs = page_seqs(&page[0]);
        assert_eq!(seqs, [3, 4]);
    }

    #[tokio::test]
    async fn subscriptions_per_connection_are_limited() {
        let w = world_with(&[("MAX_SUBSCRIPTIONS", "2")]).await;
        for channel in ["chat:1", "chat:2"] {
            assert_eq!(
                w.send(json!({"action": "subscribe", "channel": channel}))
                    .await[0]["type"],
                "subscribed"
            );
        }
        let again = w
            .send(json!({"action": "subscribe", "channel": "chat:2"}))
            .await;
        assert_eq!(
            again[0]["type"], "subscribed",
            "re-subscribing is not a new subscription"
        );
        let third = w
            .send(json!({"action": "subscribe", "channel": "chat:3"}))
            .await;
        assert_eq!(third[0]["code"], "bad_request");
        assert!(
            third[0]["message"]
                .as_str()
                .unwrap()
                .contains("(2, MAX_SUBSCRIPTIONS)")
        );
        w.send(json!({"action": "unsubscribe", "channel": "chat:1"}))
            .await;
        assert_eq!(
            w.send(json!({"action": "subscribe", "channel": "chat:3"}))
                .await[0]["type"],
            "subscribed"
        );
    }

    #[tokio::test]
    async fn catch_up_survives_failed_posts_and_never_goes_silent() {
        let w = world_with(&[("PUSH_RETRY_BASE_MS", "1")]).await;
        for i in 1..=3 {
            w.publish("chat:a", &format!("m{i}"), json!(i)).await;
        }
        let subscribe = json!({"action": "subscribe", "channel": "chat:a", "since": 0});
        w.push.fail_next(
            CONN,
            vec![PushError::Failed("500".into()), PushError::Throttled],
        );
        let frames = w.send(subscribe.clone()).await;
        assert_eq!(
            frames.len(),
            4,
            "three deltas and subscribed, after retries: {frames:?}"
        );
        assert_eq!(frames[3]["recovered"], true);

        // A delta that cannot be delivered at all: the client still hears `subscribed`.
        w.push
            .fail_next(CONN, vec![PushError::Failed("500".into()); 5]);
        let frames = w.send(subscribe).await;
        let last = frames.last().expect("a reply");
        assert_eq!(last["type"], "subscribed");
        assert_eq!(last["recovered"], false);
    }

    #[tokio::test]
    async fn a_request_without_connected_at_subscribes_as_of_now() {
        // GIVEN a frame whose request context lacks `connectedAt`
        let w = world().await;
        let mut request = events::message(
            CONN,
            &w.alice,
            &json!({"action": "subscribe", "channel": "chat:a"}).to_string(),
        );
        request.request_context.connected_at = 0;
        // WHEN it subscribes
        assert_eq!(w.deliver(request).await[0]["type"], "subscribed");
        // THEN the subscription lives from now on, and fan-out sees it
        let (subscribers, _) = w.app.store.subscribers_page("chat:a", None).await.unwrap();
        assert_eq!(subscribers, [w.subscriber()]);
        let ttl: u64 = all_items(&w.app.store)
            .await
            .iter()
            .find(|item| item["sk"].as_s().is_ok_and(|sk| sk == "s#chat:a"))
            .expect("the connection-side subscription item")["ttl"]
            .as_n()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > clock::now_secs() + 3600, "ttl {ttl}");
    }
}
