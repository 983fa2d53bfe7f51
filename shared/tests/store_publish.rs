//! Publishing against DynamoDB Local: exactly once per publisher's message id and gap-free
//! seqs, also when the SDK retries a write whose response was lost, or another message
//! (another publisher's with the same id included) takes the seq.

mod support;

use deltacast::clock;
use deltacast::store::PublishError;
use deltacast::store::items::{ClaimItem, DELTA_PREFIX, EPOCH_SK, EpochItem, channel_pk, claim_sk};
use support::{
    CHANNEL, ReplaceResponse, deltas, intercepted, items, publish, publish_as, put, store,
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
async fn a_retried_claim_write_that_took_effect_is_held() {
    // GIVEN a client whose first claim write succeeds but loses its response
    let lose = ReplaceResponse::lose_put("m#");
    let store = store_with(vec![intercepted(lose.clone())]).await;
    // WHEN a message is published
    let published = publish(&store, "m1").await.expect("not InProgress");
    // THEN the claim was recognised as this call's own, and the delta stored once
    assert!(lose.fired(), "no response was lost");
    assert_eq!(published.seq, 1);
    assert_eq!(deltas(&store).await.len(), 1);
}

#[tokio::test]
async fn a_live_foreign_claim_answers_in_progress() {
    // GIVEN another attempt at m1 holding a live lease, its delta not yet written
    let store = store().await;
    let claim = ClaimItem {
        pk: channel_pk(CHANNEL),
        sk: claim_sk("alice", "m1"),
        ep: "e1".into(),
        seq: 1,
        lease: clock::now_ms() + 60_000,
        ttl: clock::now_secs() + 3600,
    };
    put(&store, serde_dynamo::to_item(&claim).unwrap()).await;
    let before = items(&store).await;
    // WHEN m1 is published again
    let result = publish(&store, "m1").await;
    // THEN the caller hears InProgress, and nothing was written
    assert!(
        matches!(result, Err(PublishError::InProgress)),
        "{result:?}"
    );
    assert_eq!(items(&store).await, before);
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
