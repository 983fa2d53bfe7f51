//! Publishing against DynamoDB Local, the inbox put and the sequencer's batch together:
//! exactly once per publisher's message id and gap-free seqs, also when the SDK retries a
//! write whose response was lost, another message (another publisher's with the same id
//! included) takes the seq, a stream batch comes twice, two sequencers work on one channel
//! at once, or a publish is taken over after its lease.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::clock;
use deltacast::config::RateLimit;
use deltacast::store::items::{
    DELTA_PREFIX, EPOCH_SK, EpochItem, InboxItem, channel_pk, claim_sk, inbox_pk,
};
use deltacast::store::{Door, DoorMemory, Enqueued, PublishError, Published, Sequenced};
use support::{
    CHANNEL, ReplaceResponse, deltas, enqueue, intercepted, items, publish, publish_as, put, store,
    store_with,
};

#[tokio::test]
async fn a_retried_delta_write_that_took_effect_is_acked_once() {
    // GIVEN a client whose first delta write succeeds but loses its response
    let lose = ReplaceResponse::lose_put(DELTA_PREFIX);
    let store = store_with(vec![intercepted(lose.clone())]).await;
    // WHEN a message is published
    let published = publish(&store, "m1").await.expect("published");
    // THEN the SDK's retry found the message's own delta: one delta, the first seq
    assert!(lose.fired(), "no response was lost");
    assert_eq!(published.seq, 1);
    assert!(!published.duplicate);
    let stored = deltas(&store).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["id"].as_s().unwrap(), "m1");
    assert_eq!(stored[0]["ep"].as_s().unwrap(), &published.epoch);
    // and the next message follows it
    assert_eq!(publish(&store, "m2").await.unwrap().seq, 2);
}

#[tokio::test]
async fn a_delta_of_another_message_at_the_seq_is_not_this_publishs_write() {
    // GIVEN m1 at seq 1, and a client whose next read of the newest delta comes back
    // empty, as if m1 had not been written yet (another publisher racing this one)
    let stale = ReplaceResponse::stale_newest_delta().disarmed();
    let store = store_with(vec![intercepted(stale.clone())]).await;
    let first = publish(&store, "m1").await.unwrap();
    assert_eq!(first.seq, 1);
    // WHEN m2 is published and finds seq 1 taken by m1's delta
    stale.arm();
    let second = publish(&store, "m2").await.expect("published");
    // THEN m1's delta is not taken for m2's: m2 moves on to seq 2, and m1 keeps seq 1
    assert!(stale.fired(), "the head read was not made stale");
    assert_eq!(second.seq, 2);
    assert!(!second.duplicate);
    let stored = deltas(&store).await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|d| d["id"].as_s().unwrap().as_str())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
}

#[tokio::test]
async fn a_retried_inbox_put_that_took_effect_is_queued() {
    // GIVEN a client whose first inbox put succeeds but loses its response
    let lose = ReplaceResponse::lose_put("m#");
    let store = store_with(vec![intercepted(lose.clone())]).await;
    // WHEN a message is published
    let published = publish(&store, "m1").await.expect("not in flight");
    // THEN the inbox item was recognised as this call's own, and the delta stored once
    assert!(lose.fired(), "no response was lost");
    assert_eq!(published.seq, 1);
    assert_eq!(deltas(&store).await.len(), 1);
}

/// An inbox item for alice's `id`, written `after` head 0 of no epoch, its lease ending
/// `lease_ms` from now (in the past when negative), for connection `conn`.
fn inbox_item(id: &str, conn: &str, lease_ms: i64) -> InboxItem {
    InboxItem {
        pk: inbox_pk(CHANNEL),
        sk: claim_sk("alice", id),
        id: id.into(),
        from: "alice".into(),
        data: "1".into(),
        conn: conn.into(),
        ep: None,
        after: 0,
        exp: None,
        lease: (clock::now_ms() as i64 + lease_ms) as u64,
        ttl: clock::now_secs() + 3600,
        q: Some(1),
    }
}

#[tokio::test]
async fn a_live_claim_answers_in_flight_and_writes_nothing() {
    // GIVEN alice's m1 in the inbox, its lease live, not sequenced yet
    let store = store().await;
    put(
        &store,
        serde_dynamo::to_item(inbox_item("m1", "c1", 60_000)).unwrap(),
    )
    .await;
    let before = items(&store).await;
    // WHEN m1 is published again
    let result = publish(&store, "m1").await;
    // THEN the caller hears "in flight", and nothing was written
    assert!(matches!(result, Err(PublishError::InFlight)), "{result:?}");
    assert_eq!(items(&store).await, before);
}

#[tokio::test]
async fn a_claim_whose_lease_ran_out_unsequenced_is_taken_over_and_stored_once() {
    // GIVEN alice's m1 in the inbox, its lease over, and its stream record never sequenced
    // (the sequencer gave its batch up)
    let store = store().await;
    let lost = inbox_item("m1", "c1", -1);
    put(&store, serde_dynamo::to_item(&lost).unwrap()).await;
    // WHEN she sends m1 again on connection c2
    let Enqueued::Queued(taken) = enqueue(&store, "m1", "2", None, "c2", None).await else {
        panic!("expected the claim to be taken over");
    };
    // THEN the message (its first data) is queued again, to be acked on c2
    assert_eq!((taken.conn.as_str(), taken.data.as_str()), ("c2", "1"));
    assert!(taken.lease > clock::now_ms());
    // AND when both stream records come (the old one late), it is stored once
    let outcomes = store
        .sequence(CHANNEL, vec![lost, *taken.clone()], None)
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 1, "one answer per claim: {outcomes:?}");
    assert_eq!(
        outcomes[0].0.conn, "c2",
        "to the connection that sent it last"
    );
    let again = store.sequence(CHANNEL, vec![*taken], None).await.unwrap();
    assert_eq!(
        again[0].1,
        Sequenced::Published(Published {
            seq: 1,
            epoch: deltas(&store).await[0]["ep"].as_s().unwrap().clone(),
            duplicate: true
        })
    );
    assert_eq!(deltas(&store).await.len(), 1);
}

#[tokio::test]
async fn a_batch_gets_gap_free_seqs_in_stream_order_and_a_batch_delivered_again_stores_nothing() {
    // GIVEN five messages queued (the sequencer's batch) and one stored before them
    let store = store().await;
    publish(&store, "m0").await.unwrap();
    let mut batch = Vec::new();
    for n in 1..=5 {
        let item = queue(&store, &format!("m{n}"), None).await;
        batch.push(item);
    }
    // WHEN the batch is sequenced
    let outcomes = store.sequence(CHANNEL, batch.clone(), None).await.unwrap();
    // THEN each got the next seq, in order
    let seqs: Vec<u64> = outcomes.iter().map(|(_, o)| published(o).0).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6]);
    // AND delivered again (Lambda retrying the batch), it is acked the same, storing nothing
    // (the channel is only marked busy again)
    let before = items(&store).await;
    let again = store.sequence(CHANNEL, batch, None).await.unwrap();
    let seqs: Vec<(u64, bool)> = again.iter().map(|(_, o)| published(o)).collect();
    assert_eq!(seqs, [2, 3, 4, 5, 6].map(|seq| (seq, true)));
    let unmarked = |mut items: Vec<support::Item>| {
        items.iter_mut().for_each(|item| drop(item.remove("busy")));
        items
    };
    assert_eq!(unmarked(items(&store).await), unmarked(before));
}

#[tokio::test]
async fn two_sequencers_on_one_channel_store_each_message_once_without_gaps() {
    // GIVEN 30 queued messages, and two sequencers given overlapping shares of them at once
    // (a partition split, or a batch retried while a claim taken over is sequenced)
    let store = store().await;
    let mut queued = Vec::new();
    for n in 0..30 {
        queued.push(queue(&store, &format!("m{n}"), None).await);
    }
    let (a, b) = (queued[..20].to_vec(), queued[10..].to_vec());
    // WHEN both run
    let (left, right) = tokio::join!(
        store.sequence(CHANNEL, a, None),
        store.sequence(CHANNEL, b, None)
    );
    // THEN each message has one seq, whoever answered, and the seqs are 1..=30
    let mut by_id = std::collections::HashMap::new();
    for (item, outcome) in left.unwrap().into_iter().chain(right.unwrap()) {
        let seq = published(&outcome).0;
        assert_eq!(*by_id.entry(item.id).or_insert(seq), seq, "one id, one seq");
    }
    let mut seqs: Vec<u64> = by_id.into_values().collect();
    seqs.sort();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    assert_eq!(deltas(&store).await.len(), 30);
}

#[tokio::test]
async fn a_guard_that_no_longer_holds_when_its_turn_comes_is_a_conflict_and_frees_the_id() {
    // GIVEN m2 queued with expectSeq 0, and m1 sequenced before it
    let store = store().await;
    let guarded = queue(&store, "m2", Some(0)).await;
    publish(&store, "m1").await.unwrap();
    // WHEN m2's turn comes
    let outcomes = store.sequence(CHANNEL, vec![guarded], None).await.unwrap();
    // THEN it is a conflict with the head, and its inbox item is gone
    match &outcomes[0].1 {
        Sequenced::Conflict(head) => assert_eq!(head.seq, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert!(
        support::item(&store, &inbox_pk(CHANNEL), &claim_sk("alice", "m2"))
            .await
            .is_none()
    );
    // AND the same id may be published again
    assert_eq!(
        publish_as(&store, "alice", "m2", Some(1))
            .await
            .unwrap()
            .seq,
        2
    );
}

#[tokio::test]
async fn a_channel_over_its_limit_refuses_with_when_to_retry_and_keeps_its_bucket_on_the_newest_delta()
 {
    // GIVEN a channel limited to bursts of 2 at 1 publish per second, and 3 queued messages
    let store = store().await;
    let limit = RateLimit {
        per_second: 1.0,
        burst: 2.0,
    };
    let batch = queued(&store, 3).await;
    // WHEN they are sequenced
    let outcomes = store.sequence(CHANNEL, batch, Some(limit)).await.unwrap();
    // THEN two are stored, and the third refused with about a second to wait
    assert!(matches!(outcomes[1].1, Sequenced::Published(_)));
    match outcomes[2].1 {
        Sequenced::RateLimited { retry_after_ms } => {
            assert!((500..=1000).contains(&retry_after_ms), "{retry_after_ms}")
        }
        ref other => panic!("expected rate_limited, got {other:?}"),
    }
    // AND its id is free again, while the newest delta carries the bucket
    assert!(
        support::item(&store, &inbox_pk(CHANNEL), &claim_sk("alice", "m3"))
            .await
            .is_none()
    );
    let newest = deltas(&store).await.pop().unwrap();
    let tat: u64 = newest["tat"].as_n().unwrap().parse().unwrap();
    assert!(tat > clock::now_ms(), "the bucket is not full");
    // AND the message function's check refuses at once, writing nothing
    let before = items(&store).await;
    assert!(matches!(
        enqueue(&store, "m3", "3", None, "c", Some(limit)).await,
        Enqueued::RateLimited { retry_after_ms } if retry_after_ms > 0
    ));
    assert_eq!(items(&store).await, before);
}

#[tokio::test]
async fn a_refused_message_whose_stream_record_comes_again_is_not_stored() {
    // GIVEN three queued messages, the third refused by the channel's limit (its inbox
    // item deleted, its publisher told nothing was stored)
    let store = store().await;
    let limit = RateLimit {
        per_second: 0.01,
        burst: 2.0,
    };
    let batch = queued(&store, 3).await;
    let first = store
        .sequence(CHANNEL, batch.clone(), Some(limit))
        .await
        .unwrap();
    assert!(matches!(first[2].1, Sequenced::RateLimited { .. }));
    // WHEN Lambda delivers the same records again (another channel of the batch failed),
    // with the bucket full again
    let again = store.sequence(CHANNEL, batch, None).await.unwrap();
    // THEN the refused message stays unstored and unanswered; the others are acked as
    // they were
    let answered: Vec<(&str, (u64, bool))> = again
        .iter()
        .map(|(item, outcome)| (item.id.as_str(), published(outcome)))
        .collect();
    assert_eq!(answered, [("m1", (1, true)), ("m2", (2, true))]);
    assert_eq!(deltas(&store).await.len(), 2);
}

/// Claims alice's `m1` to `m{count}`, as [`queue`] does.
async fn queued(store: &deltacast::store::Store, count: usize) -> Vec<InboxItem> {
    let mut batch = Vec::with_capacity(count);
    for n in 1..=count {
        batch.push(queue(store, &format!("m{n}"), None).await);
    }
    batch
}

/// Marks [`CHANNEL`] busy until `until` (Unix ms) on its epoch item, as the sequencer does.
async fn mark_busy_until(store: &deltacast::store::Store, until: u64) {
    let epoch = support::item(store, &channel_pk(CHANNEL), EPOCH_SK)
        .await
        .expect("the epoch item");
    let mut epoch: EpochItem = serde_dynamo::from_item(epoch).unwrap();
    epoch.busy = Some(until);
    put(store, serde_dynamo::to_item(epoch).unwrap()).await;
}

/// Claims alice's `id` on [`CHANNEL`] (guarded by `expect_seq`) for connection `c`, and
/// returns the claim as the sequencer gets it (a quiet channel's claim, as if handed over).
async fn queue(store: &deltacast::store::Store, id: &str, expect_seq: Option<u64>) -> InboxItem {
    match enqueue(store, id, "1", expect_seq, "c", None).await {
        Enqueued::Claimed(claim) => claim.item,
        Enqueued::Queued(item) => *item,
        other => panic!("expected it claimed, got {other:?}"),
    }
}

/// The seq and duplicate flag of a published outcome.
fn published(outcome: &Sequenced) -> (u64, bool) {
    match outcome {
        Sequenced::Published(p) => (p.seq, p.duplicate),
        other => panic!("expected it published, got {other:?}"),
    }
}

#[tokio::test]
async fn a_channels_first_publish_starts_an_epoch_and_the_next_keeps_it() {
    let store = store().await;
    let first = publish(&store, "m1").await.unwrap();
    let second = publish(&store, "m2").await.unwrap();
    assert_eq!((first.seq, second.seq), (1, 2));
    assert_eq!(first.epoch, second.epoch);
    let epoch = support::item(&store, &channel_pk(CHANNEL), EPOCH_SK)
        .await
        .expect("the epoch item");
    let epoch: EpochItem = serde_dynamo::from_item(epoch).unwrap();
    assert_eq!(epoch.ep, first.epoch);
}

/// The `(id, from)` of every stored delta, in seq order.
async fn ids_and_publishers(store: &deltacast::store::Store) -> Vec<(String, String)> {
    deltas(store)
        .await
        .iter()
        .map(|d| {
            (
                d["id"].as_s().unwrap().clone(),
                d["from"].as_s().unwrap().clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_same_id_from_another_publisher_is_another_message() {
    // GIVEN mallory's m1 at seq 1
    let store = store().await;
    let mallory = publish_as(&store, "mallory", "m1", None).await.unwrap();
    assert_eq!(mallory.seq, 1);
    // WHEN alice publishes her own m1, expecting an empty channel
    let guarded = publish_as(&store, "alice", "m1", Some(0)).await;
    // THEN she is not acked with mallory's delta: her guard fails on the real head
    match guarded {
        Err(PublishError::Conflict { head }) => assert_eq!(head.seq, 1),
        other => panic!("expected a conflict at head 1, got {other:?}"),
    }
    // and without the guard her m1 is stored at its own seq
    let alice = publish_as(&store, "alice", "m1", Some(1)).await.unwrap();
    assert_eq!((alice.seq, alice.duplicate), (2, false));
    // and each publisher's retry is acked with its own delta
    let again = publish_as(&store, "alice", "m1", None).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (2, true));
    let again = publish_as(&store, "mallory", "m1", Some(7)).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (1, true));
    assert_eq!(
        ids_and_publishers(&store).await,
        [
            ("m1".into(), "mallory".into()),
            ("m1".into(), "alice".into())
        ]
    );
}

#[tokio::test]
async fn another_publishers_delta_with_the_same_id_at_the_seq_is_not_this_publishs_write() {
    // GIVEN mallory's m1 at seq 1, and a client whose next read of the newest delta comes
    // back empty (a publisher racing mallory's write)
    let stale = ReplaceResponse::stale_newest_delta().disarmed();
    let store = store_with(vec![intercepted(stale.clone())]).await;
    assert_eq!(
        publish_as(&store, "mallory", "m1", None).await.unwrap().seq,
        1
    );
    // WHEN alice publishes her m1 and finds seq 1 taken by a delta with that id
    stale.arm();
    let alice = publish_as(&store, "alice", "m1", None)
        .await
        .expect("published");
    // THEN it is not taken for hers (as an SDK retry of her own write would be): she moves
    // on to seq 2
    assert!(stale.fired(), "the head read was not made stale");
    assert_eq!((alice.seq, alice.duplicate), (2, false));
    assert_eq!(
        ids_and_publishers(&store).await,
        [
            ("m1".into(), "mallory".into()),
            ("m1".into(), "alice".into())
        ]
    );
}

#[tokio::test]
async fn a_fast_path_that_loses_its_seq_hands_its_claim_to_the_sequencer() {
    // GIVEN alice's m1 claimed on a quiet channel, for her own function to store
    let store = store().await;
    let Enqueued::Claimed(claim) = enqueue(&store, "m1", "1", None, "c", None).await else {
        panic!("a quiet channel's claim is the caller's");
    };
    assert_eq!(claim.item.q, None, "not the sequencer's yet");
    // WHEN another writer takes the next seq before her delta write
    publish_as(&store, "bob", "b1", None).await.unwrap();
    let outcome = store.sequence_now(*claim, None).await.unwrap();
    // THEN nothing is stored for m1 here, and its claim is now the sequencer's (`q`, which
    // its stream filter passes), with its lease and connection as they were
    assert_eq!(outcome, None);
    let claims: Vec<InboxItem> = items(&store)
        .await
        .into_iter()
        .filter(|item| {
            item["sk"]
                .as_s()
                .is_ok_and(|sk| sk == &claim_sk("alice", "m1"))
        })
        .map(|item| serde_dynamo::from_item(item).unwrap())
        .collect();
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].q, claims[0].conn.as_str()), (Some(1), "c"));
    // AND the channel is busy now: alice's next publish goes to the sequencer at once
    // instead of racing it (were the fast path to keep winning seqs, the sequencer would
    // starve)
    let next = enqueue(&store, "m2", "2", None, "c", None).await;
    assert!(matches!(next, Enqueued::Queued(_)), "{next:?}");
    // AND the sequencer stores m1 after bob's
    let outcomes = store.sequence(CHANNEL, claims, None).await.unwrap();
    assert_eq!(published(&outcomes[0].1), (2, false));
}

#[tokio::test]
async fn while_the_sequencer_writes_a_channel_its_publishes_go_to_the_sequencer_at_once() {
    // GIVEN a channel the sequencer has just taken a batch of
    let store = store().await;
    publish(&store, "m0").await.unwrap();
    let batch = vec![queue(&store, "m1", None).await];
    let outcomes = store.sequence(CHANNEL, batch, None).await.unwrap();
    assert_eq!(published(&outcomes[0].1), (2, false));
    // WHEN alice publishes m2
    let queued = enqueue(&store, "m2", "2", None, "c", None).await;
    // THEN its claim is the sequencer's at once: no fast path racing the sequencer
    let Enqueued::Queued(item) = queued else {
        panic!("expected it queued for the sequencer, got {queued:?}");
    };
    assert_eq!(item.q, Some(1));
    // AND once the channel has been quiet for the busy window, publishes take the fast
    // path again
    tokio::time::sleep(std::time::Duration::from_millis(
        deltacast::store::BUSY_WINDOW_MS + 50,
    ))
    .await;
    let later = enqueue(&store, "m3", "3", None, "c", None).await;
    assert!(matches!(later, Enqueued::Claimed(_)), "{later:?}");
}

#[tokio::test]
async fn the_sequencer_starting_a_channel_marks_it_busy() {
    // GIVEN a channel nobody has published to, and a claim handed to the sequencer
    let store = store().await;
    let batch = vec![queue(&store, "m1", None).await];
    // WHEN the sequencer stores it, starting the channel's first epoch
    let outcomes = store.sequence(CHANNEL, batch, None).await.unwrap();
    assert_eq!(published(&outcomes[0].1), (1, false));
    // THEN the new epoch carries the busy mark (the mark set before the batch found no
    // epoch item to mark): the next publish goes to the sequencer
    let next = enqueue(&store, "m2", "2", None, "c", None).await;
    assert!(matches!(next, Enqueued::Queued(_)), "{next:?}");
}

/// Until when the channel's epoch item says the channel is busy.
async fn busy_until(store: &deltacast::store::Store) -> Option<u64> {
    let epoch = support::item(store, &channel_pk(CHANNEL), EPOCH_SK)
        .await
        .expect("the epoch item");
    serde_dynamo::from_item::<_, EpochItem>(epoch).unwrap().busy
}

#[tokio::test]
async fn the_sequencer_renews_the_busy_mark_only_when_half_of_it_has_run_out() {
    // GIVEN a channel the sequencer has just marked busy with a batch
    let store = store().await;
    publish(&store, "m0").await.unwrap();
    let first = vec![queue(&store, "m1", None).await];
    store.sequence(CHANNEL, first, None).await.unwrap();
    let marked = busy_until(&store).await.expect("marked busy");
    // WHEN the next batch comes while most of the mark is left
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let second = vec![queue(&store, "m2", None).await];
    let outcomes = store.sequence(CHANNEL, second, None).await.unwrap();
    // THEN it is stored without writing the mark again (a write on every batch's path,
    // 100-170 ms on a loaded DynamoDB Local, for nothing)
    assert_eq!(published(&outcomes[0].1), (3, false));
    assert_eq!(busy_until(&store).await, Some(marked));
    // AND once half of the window has passed, the next batch renews it
    tokio::time::sleep(std::time::Duration::from_millis(
        deltacast::store::BUSY_WINDOW_MS / 2 + 20,
    ))
    .await;
    let third = vec![queue(&store, "m3", None).await];
    store.sequence(CHANNEL, third, None).await.unwrap();
    assert!(busy_until(&store).await.expect("marked busy") > marked);
}

#[tokio::test]
async fn a_channel_over_its_limit_lets_through_its_door_only_the_share_the_sequencer_can_take() {
    // GIVEN a channel whose sequencer batch of 20 found room for 4 (a burst of 4 at a rate
    // that refills it within milliseconds, so the bucket the door reads is full again)
    let store = store().await;
    let limit = RateLimit {
        per_second: 1000.0,
        burst: 4.0,
    };
    let batch = queued(&store, 20).await;
    let outcomes = store.sequence(CHANNEL, batch, Some(limit)).await.unwrap();
    let stored = outcomes
        .iter()
        .filter(|(_, outcome)| matches!(outcome, Sequenced::Published(_)))
        .count();
    assert_eq!(stored, 4);
    // THEN its newest delta records the share of publishes the door should let through
    // (4 in 20, with headroom, cut at most fourfold at once)
    let newest = deltas(&store).await.pop().unwrap();
    assert_eq!(newest["adm"].as_n().unwrap(), "250");
    // AND while the channel is busy (the mark lengthened here, so that a slow machine
    // does not outlast it), the door lets through about that share of publishes
    mark_busy_until(&store, clock::now_ms() + 60_000).await;
    // (A share applies while fresh: the newest delta as if written a moment from now, so
    // that a slow machine does not outlast it either.)
    let mut newest = newest;
    newest.insert(
        "ts".into(),
        AttributeValue::N((clock::now_ms() + 60_000).to_string()),
    );
    put(&store, newest).await;
    let before = items(&store).await;
    // (A memory per publish: each one reads the channel, as a cold instance does.)
    let answers = futures::future::join_all(
        (0..80).map(|_| async { store.door(CHANNEL, &DoorMemory::default(), false).await }),
    )
    .await;
    let mut open = 0;
    for answer in answers {
        match answer.unwrap() {
            Door::Open(_) => open += 1,
            Door::Refused { retry_after_ms } => assert_eq!(retry_after_ms, 1000),
        }
    }
    // 80 draws at 25 %: 20 expected; 5..=40 is more than four standard deviations wide.
    assert!((5..=40).contains(&open), "{open} of 80 let through");
    // AND the door writes nothing
    assert_eq!(items(&store).await, before);
    // AND once the sequencer has left the channel alone, it lets everything through
    mark_busy_until(&store, clock::now_ms() - 1).await;
    for _ in 0..20 {
        let door = store
            .door(CHANNEL, &DoorMemory::default(), false)
            .await
            .unwrap();
        assert!(matches!(door, Door::Open(_)));
    }
}
