//! What each frame costs in DynamoDB capacity, measured through the handler with a metered
//! store: every request a frame makes, refused conditional writes included (DynamoDB
//! bills those too). One test per row of the table in docs/data-model.md ("Write and
//! read units"); the figures asserted are the table's. Connecting, disconnecting, a
//! contended publish and the fan-out's read are measured in `tests/capacity.rs`.

use deltacast::store::{CapacityMeter, items};
use serde_json::{Value, json};

use crate::testing::*;

/// What `body`, sent as alice, consumed: read units, write units, and the frames it got.
async fn cost(w: &World, meter: &CapacityMeter, body: Value) -> (f64, f64, Vec<Value>) {
    meter.reset();
    let frames = w.send(body).await;
    let total = meter.total();
    (total.read_units, total.write_units, frames)
}

fn publish(channel: &str, id: &str, data: Value) -> Value {
    json!({"action": "publish", "channel": channel, "id": id, "data": data})
}

#[tokio::test]
async fn a_publish_writes_two_buckets_its_claim_and_its_delta_and_reads_the_head_once() {
    let (w, meter) = world().await.metered();
    let small = json!("x".repeat(700));

    let (_, first, frames) = cost(&w, &meter, publish("chat:cost", "m1", small.clone())).await;
    assert_eq!(frames[0]["seq"], 1);
    assert_eq!(
        first, 5.0,
        "the first delta of an epoch also writes the epoch item"
    );

    let (read, steady, frames) = cost(&w, &meter, publish("chat:cost", "m2", small)).await;
    assert_eq!(frames[0]["seq"], 2);
    assert_eq!(steady, 4.0, "two buckets + claim + delta");
    assert_eq!(
        read, 4.0,
        "two buckets, then the head (epoch and newest delta) once, for the claim and the \
         delta both; a quiet channel's claim never reaches the sequencer; strongly consistent"
    );

    let big = json!("x".repeat(2500));
    let (_, written, frames) = cost(&w, &meter, publish("chat:cost", "m3", big)).await;
    assert_eq!(frames[0]["seq"], 3);
    assert_eq!(
        written, 8.0,
        "a ~2.6 KB message bills 3 units twice: as the claim and as the delta"
    );
}

#[tokio::test]
async fn a_duplicate_writes_its_refused_inbox_put_and_a_conflict_only_the_buckets() {
    let (w, meter) = world().await.metered();
    let original = w.publish("chat:cost", "same", json!(1)).await;

    let (_, duplicate, frames) = cost(&w, &meter, publish("chat:cost", "same", json!(1))).await;
    assert_eq!(frames, [original]);
    assert_eq!(duplicate, 3.0, "two buckets + the refused inbox put");

    let guarded = json!({"action": "publish", "channel": "chat:cost", "id": "new", "data": 1, "expectSeq": 7});
    let (_, conflict, frames) = cost(&w, &meter, guarded).await;
    assert_eq!(frames[0]["code"], "conflict", "{frames:?}");
    assert_eq!(conflict, 2.0);
}

#[tokio::test]
async fn a_publish_refused_at_the_door_reads_the_head_and_takes_no_token() {
    // GIVEN a channel the sequencer finds over its limit: busy, its newest delta letting
    // through the least share (1 %)
    let (w, meter) = world().await.metered();
    let first = w.publish("chat:hot", "m0", json!(1)).await;
    let epoch = first["epoch"].as_str().unwrap();
    let now = deltacast::clock::now_ms;
    w.set_on_channel("chat:hot", items::EPOCH_SK, "busy", now() + 60_000)
        .await;
    // WHEN alice publishes until the door refuses her (99 % of the time the first try)
    for n in 1..=10 {
        // On the newest delta (a publish let through may have added one), written now
        // (a share applies while fresh).
        let newest = items::delta_sk(epoch, w.app.store.head("chat:hot").await.unwrap().seq);
        w.set_on_channel("chat:hot", &newest, "adm", 10).await;
        w.set_on_channel("chat:hot", &newest, "ts", now()).await;
        let (read, written, frames) =
            cost(&w, &meter, publish("chat:hot", &format!("m{n}"), json!(n))).await;
        // Let through (1 %): acked, or queued for the sequencer without an answer yet.
        if frames.first().is_none_or(|f| f["type"] == "ack") {
            continue;
        }
        // THEN the refusal is `rate_limited`, asks for a second, and cost the buckets'
        // two reads and at most the head's two (none when the instance remembers the
        // channel's share from an earlier publish): no token taken, nothing written
        assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
        assert_eq!(frames[0]["retryAfterMs"], 1000);
        assert_eq!(written, 0.0);
        assert!(read == 4.0 || (n > 1 && read == 2.0), "{read} read units");
        return;
    }
    panic!("the door let 10 publishes through at 1 %");
}

#[tokio::test]
async fn a_bad_frame_or_a_capability_refusal_costs_nothing() {
    let (w, meter) = world().await.metered();
    let (read, written, frames) = cost(&w, &meter, json!({"action": "nope"})).await;
    assert_eq!(frames[0]["code"], "bad_request", "{frames:?}");
    assert_eq!((read, written), (0.0, 0.0));

    let (read, written, frames) = cost(&w, &meter, publish("secret", "m", json!(1))).await;
    assert_eq!(frames[0]["code"], "forbidden", "{frames:?}");
    assert_eq!((read, written), (0.0, 0.0), "refused before the rate limit");
}

#[tokio::test]
async fn a_rate_limited_request_reads_both_buckets_and_writes_nothing() {
    let ping = json!({"action": "ping"});
    // The connection's bucket refuses: both buckets were read (at once), nothing was
    // written.
    let (w, meter) = world_with(&[
        ("RATE_LIMIT_PER_SECOND", "0.001"),
        ("RATE_LIMIT_BURST", "1"),
    ])
    .await
    .metered();
    w.send(ping.clone()).await;
    let (read, written, frames) = cost(&w, &meter, ping.clone()).await;
    assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
    assert_eq!((read, written), (2.0, 0.0));
    // So does a publish: the channel is not read for a sender without tokens.
    let (read, written, frames) = cost(&w, &meter, publish("chat:a", "m", json!(1))).await;
    assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
    assert_eq!((read, written), (2.0, 0.0));

    // The user's bucket refuses: the connection's token is not taken either.
    let (w, meter) = world_with(&[
        ("USER_RATE_LIMIT_PER_SECOND", "0.001"),
        ("USER_RATE_LIMIT_BURST", "1"),
    ])
    .await
    .metered();
    w.send(ping.clone()).await;
    let (read, written, frames) = cost(&w, &meter, ping).await;
    assert_eq!(frames[0]["code"], "rate_limited", "{frames:?}");
    assert_eq!((read, written), (2.0, 0.0));
}

#[tokio::test]
async fn a_frame_from_a_closed_connection_writes_nothing() {
    let (w, meter) = world().await.metered();
    w.app.store.remove_connection(CONN).await.unwrap();
    let (read, written, frames) = cost(&w, &meter, json!({"action": "ping"})).await;
    assert!(frames.is_empty(), "nobody to answer: {frames:?}");
    // The two buckets are read at once: the user's read may or may not have been sent
    // by the time the connection's comes back without a liveness item.
    assert_eq!(written, 0.0);
    assert!(
        read == 1.0 || read == 2.0,
        "the read that finds no liveness item, and perhaps the user's bucket: {read}"
    );
}

#[tokio::test]
async fn a_subscribe_writes_the_buckets_the_count_and_both_sides() {
    let (w, meter) = world_with(&[("MAX_SUBSCRIPTIONS", "1")]).await.metered();
    let subscribe = |channel: &str| json!({"action": "subscribe", "channel": channel});

    let (_, new, frames) = cost(&w, &meter, subscribe("chat:a")).await;
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(new, 5.0, "two buckets + count + both subscription items");

    let (_, again, frames) = cost(&w, &meter, subscribe("chat:a")).await;
    assert_eq!(frames[0]["type"], "subscribed");
    assert_eq!(again, 3.0, "two buckets + the channel-side item again");

    let (_, refused, frames) = cost(&w, &meter, subscribe("chat:b")).await;
    assert_eq!(frames[0]["code"], "bad_request", "{frames:?}");
    assert_eq!(refused, 3.0, "two buckets + the refused count update");
}

#[tokio::test]
async fn a_read_settles_its_price_with_both_buckets() {
    let (w, meter) = world().await.metered();
    let mut epoch = Value::Null;
    for i in 1..=3 {
        epoch = w.publish("chat:a", &format!("m{i}"), json!(i)).await["epoch"].clone();
    }

    let catch_up = json!({"action": "subscribe", "channel": "chat:a", "since": 0, "epoch": epoch});
    let (_, written, frames) = cost(&w, &meter, catch_up).await;
    assert_eq!(frames.len(), 4, "three deltas, then subscribed: {frames:?}");
    assert_eq!(
        written,
        5.0 + 2.0,
        "a new subscription, then the settlement"
    );

    let history = |since: u64| json!({"action": "history", "channel": "chat:a", "since": since});
    let (_, written, frames) = cost(&w, &meter, history(0)).await;
    assert_eq!(frames[0]["deltas"].as_array().unwrap().len(), 3);
    assert_eq!(written, 2.0 + 2.0);

    let (_, written, frames) = cost(&w, &meter, history(3)).await;
    assert_eq!(frames[0]["deltas"], json!([]));
    assert_eq!(written, 2.0 + 2.0, "an empty page is refunded its deposit");
}

#[tokio::test]
async fn an_unsubscribe_deletes_both_sides_and_gives_back_its_place() {
    let (w, meter) = world().await.metered();
    w.send(json!({"action": "subscribe", "channel": "chat:a"}))
        .await;
    let unsubscribe = json!({"action": "unsubscribe", "channel": "chat:a"});

    let (_, subscribed, frames) = cost(&w, &meter, unsubscribe.clone()).await;
    assert_eq!(frames[0]["type"], "unsubscribed");
    assert_eq!(subscribed, 5.0, "two buckets + both deletes + the count");

    let (_, not_subscribed, frames) = cost(&w, &meter, unsubscribe).await;
    assert_eq!(frames[0]["type"], "unsubscribed");
    assert_eq!(
        not_subscribed, 4.0,
        "two buckets + the refused conditional delete + the channel-side delete"
    );
}

#[tokio::test]
async fn a_ping_takes_two_tokens() {
    let (w, meter) = world().await.metered();
    let (read, written, frames) = cost(&w, &meter, json!({"action": "ping"})).await;
    assert_eq!(frames[0]["type"], "pong");
    assert_eq!((read, written), (2.0, 2.0));
}

#[tokio::test]
async fn a_state_update_writes_the_buckets_and_its_op_item_and_a_duplicate_the_refused_put() {
    let (w, meter) = world().await.metered();
    let update = json!({"action": "update", "channel": "state:cost", "id": "u1",
                        "ops": [{"op": "inc", "path": "/n", "by": 1}]});
    let (read, written, frames) = cost(&w, &meter, update.clone()).await;
    assert_eq!(frames[0]["type"], "updated", "{frames:?}");
    assert_eq!(
        (read, written),
        (2.0, 3.0),
        "two buckets + the op item; nothing read"
    );
    let (_, duplicate, frames) = cost(&w, &meter, update).await;
    assert_eq!(frames[0]["duplicate"], true, "{frames:?}");
    assert_eq!(duplicate, 3.0, "two buckets + the refused put");
}

#[tokio::test]
async fn an_enter_is_one_transaction_of_three_items_an_update_one_put_and_a_leave_two_deletes() {
    let (w, meter) = world().await.metered();
    let presence = |op: &str| json!({"action": "presence", "channel": "room:cost", "op": op});
    let (read, written, frames) = cost(&w, &meter, presence("enter")).await;
    assert_eq!(frames[0]["type"], "presence", "{frames:?}");
    assert_eq!(
        written,
        2.0 + 6.0,
        "two buckets + the liveness check, the member and the membership, 2 each"
    );
    assert_eq!(read, 3.0, "two buckets + the member count");
    let (_, written, frames) = cost(&w, &meter, presence("update")).await;
    assert_eq!(frames[0]["type"], "presence", "{frames:?}");
    assert_eq!(written, 2.0 + 1.0, "two buckets + the member item");
    let (_, written, frames) = cost(&w, &meter, presence("leave")).await;
    assert_eq!(frames[0]["type"], "presence", "{frames:?}");
    assert_eq!(
        written,
        2.0 + 2.0,
        "two buckets + the member and the membership deleted"
    );
}
