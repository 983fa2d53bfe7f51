//! A channel's head and retained deltas against DynamoDB Local, expired deltas that TTL
//! has not deleted yet among them.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::clock;
use deltacast::protocol::{Delta, MAX_SEQ, Payload};
use deltacast::store::items::{DeltaItem, EPOCH_SK, EpochItem, channel_pk};
use deltacast::store::{EXPIRED_READ_BUDGET, PublishError, StoreError};
use deltacast_tests::write_history;
use support::{CHANNEL, CountQueries, Item, intercepted, publish, put, store, store_with};

#[tokio::test]
async fn a_malformed_newest_delta_is_an_error_not_seq_zero() {
    let store = store().await;
    let epoch = EpochItem {
        pk: channel_pk(CHANNEL),
        sk: EPOCH_SK.into(),
        ep: "e1".into(),
        at: clock::now_ms(),
        busy: None,
    };
    let mut delta: Item = serde_dynamo::to_item(DeltaItem::new(
        &Delta {
            channel: CHANNEL.into(),
            seq: 4,
            epoch: "e1".into(),
            id: "m4".into(),
            from: "alice".into(),
            ts: clock::now_ms(),
            data: Payload::from_json("1".into()).unwrap(),
        },
        clock::now_secs() + 3600,
    ))
    .unwrap();
    delta.insert("seq".into(), AttributeValue::S("four".into()));
    put(&store, serde_dynamo::to_item(epoch).unwrap()).await;
    put(&store, delta).await;
    match store.head(CHANNEL).await {
        Err(StoreError::Malformed(err)) => {
            assert_eq!(err.key, format!("h#{CHANNEL}/d#e1#000000000004"));
            assert!(err.reason.contains("`seq`"), "{}", err.reason);
        }
        other => panic!("{other:?}"),
    }
    let result = publish(&store, "m5").await;
    assert!(
        matches!(result, Err(PublishError::Store(StoreError::Malformed(_)))),
        "{result:?}"
    );
}

#[tokio::test]
async fn nothing_follows_the_largest_seq() {
    let store = store().await;
    let published = publish(&store, "m1").await.unwrap();
    let page = store
        .deltas_after(CHANNEL, &published.epoch, MAX_SEQ, 10, usize::MAX)
        .await
        .expect("an empty page, not a storage error");
    assert!(page.deltas.is_empty() && !page.more);
    let page = store
        .deltas_after(CHANNEL, &published.epoch, 0, 10, usize::MAX)
        .await
        .unwrap();
    assert_eq!(page.deltas.len(), 1);
}

#[tokio::test]
async fn expired_deltas_cost_a_bounded_read_and_paging_gets_past_them() {
    // GIVEN a channel whose first 1,000 deltas have expired but not been deleted by TTL
    // yet, followed by 5 live ones
    let count = CountQueries::default();
    let store = store_with(vec![intercepted(count.clone())]).await;
    const EXPIRED: u64 = 1_000;
    let (past, future) = (clock::now_secs() - 60, clock::now_secs() + 3600);
    write_history(&store, CHANNEL, "e1", 1..=EXPIRED, past).await;
    write_history(&store, CHANNEL, "e1", EXPIRED + 1..=EXPIRED + 5, future).await;
    let (limit, page_bytes) = (100, 120 * 1024);
    let budget = (limit + 1 + EXPIRED_READ_BUDGET) as u32;
    count.take();

    // WHEN a history page is read from the start
    let page = store
        .deltas_after(CHANNEL, "e1", 0, limit, page_bytes)
        .await
        .unwrap();
    // THEN the read stayed within its budget, and says there is more and where it goes on
    let (queries, items) = count.take();
    assert!(
        items <= budget && queries <= 3,
        "one call read {items} items in {queries} queries (budget {budget} items)"
    );
    assert!(page.deltas.is_empty() && page.more);
    let mut since = page.next.expect("where to go on");
    assert!(since > 0);

    // and a client paging with `since = next` moves forward on every call, each within the
    // budget, and reaches the live deltas
    let (mut calls, mut seqs) = (1, Vec::new());
    loop {
        let page = store
            .deltas_after(CHANNEL, "e1", since, limit, page_bytes)
            .await
            .unwrap();
        calls += 1;
        let (queries, items) = count.take();
        assert!(
            items <= budget && queries <= 3,
            "{items} items in {queries} queries"
        );
        seqs.extend(page.deltas.iter().map(|d| d.seq));
        if !page.more {
            break;
        }
        let next = page.next.expect("more names where to go on");
        assert!(next > since, "stuck at since {since}");
        since = next;
    }
    assert_eq!(seqs, (EXPIRED + 1..=EXPIRED + 5).collect::<Vec<_>>());
    assert!(
        calls <= 5,
        "{calls} calls to get past {EXPIRED} expired deltas"
    );

    // and a catch-up sized read (500 deltas, no byte cap) is bounded the same way, so a
    // catch-up that meets the backlog reports `more` (the client hears `recovered: false`)
    let page = store
        .deltas_after(CHANNEL, "e1", 0, 500, usize::MAX)
        .await
        .unwrap();
    let (_, items) = count.take();
    assert!(items as usize <= 501 + EXPIRED_READ_BUDGET, "{items} items");
    assert!(page.deltas.is_empty() && page.more);
}
