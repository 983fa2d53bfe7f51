//! A channel's head and retained deltas against DynamoDB Local.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::clock;
use deltacast::protocol::{Delta, MAX_SEQ, Payload};
use deltacast::store::items::{DeltaItem, EPOCH_SK, EpochItem, channel_pk};
use deltacast::store::{PublishError, StoreError};
use support::{CHANNEL, Item, publish, put, store};

#[tokio::test]
async fn a_malformed_newest_delta_is_an_error_not_seq_zero() {
    let store = store().await;
    let epoch = EpochItem {
        pk: channel_pk(CHANNEL),
        sk: EPOCH_SK.into(),
        ep: "e1".into(),
        at: clock::now_ms(),
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
