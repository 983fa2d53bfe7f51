//! Where a publish handed to the sequencer stands, as a publisher without a connection
//! (an HTTP request) asks while it waits: pending while claimed, its ack once stored,
//! refused once the sequencer deleted its claim; and asking writes nothing.

mod support;

use deltacast::store::items::InboxItem;
use deltacast::store::{Enqueued, PublishOutcome, Sequenced};
use support::{CHANNEL, enqueue, items, store};

/// Claims alice's `id` (guarded by `expect_seq`) with no connection to answer, and returns
/// the claim as the sequencer gets it.
async fn claim(store: &deltacast::store::Store, id: &str, expect_seq: Option<u64>) -> InboxItem {
    match enqueue(store, id, "1", expect_seq, "", None).await {
        Enqueued::Claimed(claim) => claim.item,
        Enqueued::Queued(item) => *item,
        other => panic!("not claimed: {other:?}"),
    }
}

#[tokio::test]
async fn a_claimed_publish_is_pending_until_stored_then_answers_its_ack() {
    let store = store().await;
    // GIVEN m1 claimed and not stored yet
    let m1 = claim(&store, "m1", None).await;
    let before = items(&store).await;
    // THEN it is pending, and asking wrote nothing
    let outcome = store.publish_outcome(CHANNEL, "alice", "m1").await.unwrap();
    assert_eq!(outcome, PublishOutcome::Pending);
    assert_eq!(items(&store).await, before, "asking writes nothing");
    // WHEN the sequencer stores it
    let outcomes = store.sequence(CHANNEL, vec![m1], None).await.unwrap();
    let Sequenced::Published(stored) = &outcomes[0].1 else {
        panic!("not stored: {:?}", outcomes[0].1)
    };
    // THEN its outcome is its ack
    match store.publish_outcome(CHANNEL, "alice", "m1").await.unwrap() {
        PublishOutcome::Published(published) => {
            assert_eq!(published.seq, stored.seq);
            assert_eq!(published.epoch, stored.epoch);
        }
        other => panic!("{other:?}"),
    }
    // AND another publisher's m1 is not alice's
    assert_eq!(
        store.publish_outcome(CHANNEL, "bob", "m1").await.unwrap(),
        PublishOutcome::Refused
    );
}

#[tokio::test]
async fn a_publish_the_sequencer_refused_is_refused() {
    let store = store().await;
    // GIVEN m2 guarded by expectSeq 0, and m1 stored before m2's turn
    let m1 = claim(&store, "m1", None).await;
    let m2 = claim(&store, "m2", Some(0)).await;
    let outcomes = store.sequence(CHANNEL, vec![m1, m2], None).await.unwrap();
    assert!(
        matches!(outcomes[1].1, Sequenced::Conflict(_)),
        "{:?}",
        outcomes[1].1
    );
    // THEN m2's outcome is refused (its claim is gone), m1's its ack
    assert_eq!(
        store.publish_outcome(CHANNEL, "alice", "m2").await.unwrap(),
        PublishOutcome::Refused
    );
    assert!(matches!(
        store.publish_outcome(CHANNEL, "alice", "m1").await.unwrap(),
        PublishOutcome::Published(_)
    ));
}
