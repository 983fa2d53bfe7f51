//! The token-expired notice against DynamoDB Local: the claim on a connection's liveness
//! item is made once however many fan-outs try at once, never for (or resurrecting) a
//! removed connection, survives a lost response, and can be given back by its maker only.

mod support;

use deltacast_tests::items_naming;
use futures::future::join_all;
use support::{ReplaceResponse, connected, intercepted, store, store_with};

#[tokio::test]
async fn the_notice_is_claimed_once_however_many_fan_outs_try_at_once() {
    // GIVEN a connection
    let store = connected(store().await).await;
    // WHEN ten fan-outs claim its notice at once, and one more afterwards
    let claims = join_all((0..10).map(|_| store.claim_expiry_notice("c1"))).await;
    let later = store.claim_expiry_notice("c1").await.unwrap();
    // THEN exactly one made the claim
    let made = claims.into_iter().filter(|c| c.as_ref().unwrap().is_some());
    assert_eq!(made.count(), 1);
    assert_eq!(later, None);
}

#[tokio::test]
async fn a_removed_connection_is_never_claimed_nor_brought_back() {
    // GIVEN a connection removed by $disconnect
    let store = connected(store().await).await;
    store.remove_connection("c1").await.unwrap();
    // WHEN a fan-out claims its notice
    let claim = store.claim_expiry_notice("c1").await.unwrap();
    // THEN there is no one to tell, and nothing was written
    assert_eq!(claim, None);
    assert_eq!(items_naming(&store, "c1").await, 0);
}

#[tokio::test]
async fn a_lost_response_to_the_claim_still_counts_as_made() {
    // GIVEN a client whose first update of the liveness item takes effect but loses its
    // response, so the SDK sends it again and the retry finds the claim in place
    let lose = ReplaceResponse::lose_update("live");
    let store = connected(store_with(vec![intercepted(lose.clone())]).await).await;
    // WHEN a fan-out claims the notice
    let claim = store.claim_expiry_notice("c1").await.unwrap();
    // THEN the retry was recognised as its own claim: this fan-out tells the connection
    assert!(lose.fired(), "no response was lost");
    assert!(claim.is_some());
    assert_eq!(store.claim_expiry_notice("c1").await.unwrap(), None);
}

#[tokio::test]
async fn only_its_maker_gives_a_claim_back() {
    // GIVEN a claimed notice
    let store = connected(store().await).await;
    let tag = store.claim_expiry_notice("c1").await.unwrap().unwrap();
    // WHEN another tag tries to give it back, it stays claimed
    store
        .release_expiry_notice("c1", "not-the-tag")
        .await
        .unwrap();
    assert_eq!(store.claim_expiry_notice("c1").await.unwrap(), None);
    // THEN its maker can, and the next fan-out claims it again
    store.release_expiry_notice("c1", &tag).await.unwrap();
    assert!(store.claim_expiry_notice("c1").await.unwrap().is_some());
}
