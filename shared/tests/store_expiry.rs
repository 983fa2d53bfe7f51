//! Expiry against DynamoDB Local. DynamoDB's TTL deletes expired items days late, if at
//! all within a test, so the store must treat an item whose `ttl` has passed as gone: a
//! channel whose newest delta expired starts a new epoch, reads skip expired deltas, and
//! an expired claim does not hold its message id. Items are expired here by setting their
//! `ttl` in the past, as time would.

mod support;

use deltacast::clock;
use deltacast::store::items::{InboxItem, channel_pk, claim_sk, delta_sk, inbox_pk};
use deltacast_tests::expire_item as expire;
use support::{CHANNEL, deltas, publish, put, store};

#[tokio::test]
async fn a_channel_whose_newest_delta_expired_starts_a_new_epoch() {
    // GIVEN a channel with two deltas, the newest of which has expired
    let store = store().await;
    publish(&store, "m1").await.unwrap();
    let second = publish(&store, "m2").await.unwrap();
    expire(&store, &channel_pk(CHANNEL), &delta_sk(&second.epoch, 2)).await;
    // THEN its head is empty: nothing of the old epoch can be recovered
    let head = store.head(CHANNEL).await.unwrap();
    assert_eq!((head.epoch, head.seq), (None, 0));
    // WHEN it is published to again
    let next = publish(&store, "m3").await.unwrap();
    // THEN the delta opens a new epoch at seq 1
    assert_ne!(next.epoch, second.epoch);
    assert_eq!(next.seq, 1);
    let head = store.head(CHANNEL).await.unwrap();
    assert_eq!((head.epoch.as_deref(), head.seq), (Some(&*next.epoch), 1));
}

#[tokio::test]
async fn reads_skip_expired_deltas() {
    // GIVEN four deltas, the two oldest expired (deltas expire oldest first)
    let store = store().await;
    let mut epoch = String::new();
    for id in ["m1", "m2", "m3", "m4"] {
        epoch = publish(&store, id).await.unwrap().epoch;
    }
    for seq in [1, 2] {
        expire(&store, &channel_pk(CHANNEL), &delta_sk(&epoch, seq)).await;
    }
    assert_eq!(deltas(&store).await.len(), 4, "TTL has not deleted them");
    // WHEN a client reads from the start
    let page = store
        .deltas_after(CHANNEL, &epoch, 0, 100, usize::MAX)
        .await
        .unwrap();
    // THEN it gets only the retained ones; the gap tells it that 1 and 2 are lost
    let seqs: Vec<u64> = page.deltas.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, [3, 4]);
    assert!(!page.more);
    // AND the head is unaffected by the expired ones
    assert_eq!(store.head(CHANNEL).await.unwrap().seq, 4);
}

#[tokio::test]
async fn an_expired_claim_does_not_hold_its_message_id() {
    // GIVEN a claim on m1 whose retention has passed although its lease looks live (the
    // writer's clock was ahead, or it crashed long ago), and no delta
    let store = store().await;
    let claim = InboxItem {
        pk: inbox_pk(CHANNEL),
        sk: claim_sk("alice", "m1"),
        id: "m1".into(),
        from: "alice".into(),
        data: "1".into(),
        conn: "c".into(),
        ep: Some("old".into()),
        after: 7,
        exp: None,
        lease: clock::now_ms() + 60_000,
        ttl: clock::now_secs() - 1,
        q: None,
    };
    put(&store, serde_dynamo::to_item(&claim).unwrap()).await;
    // WHEN m1 is published
    let published = publish(&store, "m1").await.expect("not in flight");
    // THEN the attempt took the claim over and stored its delta at the channel's next seq
    assert_eq!(published.seq, 1);
    assert!(!published.duplicate);
    assert_eq!(deltas(&store).await.len(), 1);
    let claim = support::item(&store, &inbox_pk(CHANNEL), &claim_sk("alice", "m1"))
        .await
        .expect("the claim");
    let ttl: u64 = claim["ttl"].as_n().unwrap().parse().unwrap();
    assert!(ttl > clock::now_secs(), "the claim lives again");
}
