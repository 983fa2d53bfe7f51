//! Live state's store against DynamoDB Local: an update's id is claimed once, the fold
//! applies each op record once whatever batch brings it again, and the last writer wins
//! by stamp whatever the order the fold meets the ops in.

mod support;

use deltacast::config::StateSettings;
use deltacast::store::state_items::{OpItem, op_pk, op_shard};
use deltacast::store::{NewOps, OpRecord, OpsStored, Store};
use serde_json::{Value, json};
use support::store;

/// Stores update `id` of `from` received at `at` and returns its op record, numbered `seq`
/// in the stream.
async fn stored(store: &Store, from: &str, id: &str, at: u64, ops: Value, seq: &str) -> OpRecord {
    let ops = ops.to_string();
    let new = NewOps {
        channel: "state:s",
        id,
        from,
        ops: &ops,
        at,
        conn: "c1",
    };
    assert_eq!(
        store.put_ops(new, 10, None).await.unwrap(),
        OpsStored::Stored
    );
    let shard = op_shard(from, id, 10);
    OpRecord {
        shard,
        sequence_number: seq.into(),
        item: OpItem {
            pk: op_pk("state:s", shard),
            sk: deltacast::store::items::claim_sk(from, id),
            id: id.into(),
            from: from.into(),
            ops,
            at,
            conn: "c1".into(),
            ttl: None,
        },
    }
}

async fn value(store: &Store) -> (Value, u64) {
    let state = store.state("state:s").await.unwrap();
    (Value::Object(state.document.value), state.document.version)
}

#[tokio::test]
async fn an_id_is_claimed_once_per_user() {
    let store = store().await;
    stored(&store, "alice", "vote", 1, json!([]), "1").await;
    let again = NewOps {
        channel: "state:s",
        id: "vote",
        from: "alice",
        ops: "[]",
        at: 2,
        conn: "c2",
    };
    assert_eq!(
        store.put_ops(again.clone(), 10, None).await.unwrap(),
        OpsStored::Duplicate
    );
    let bob = NewOps {
        from: "bob",
        ..again
    };
    assert_eq!(
        store.put_ops(bob, 10, None).await.unwrap(),
        OpsStored::Stored
    );
}

#[tokio::test]
async fn the_newer_write_wins_whichever_the_fold_meets_first_and_nothing_folds_twice() {
    let store = store().await;
    let settings = StateSettings {
        patch_rate: 100,
        ..StateSettings::default()
    };
    // Bob's set was received after Alice's, but the fold meets it first.
    let now = deltacast::clock::now_ms();
    let newer = stored(
        &store,
        "bob",
        "b",
        now - 1_000,
        json!([{"op": "set", "path": "/x", "value": "bob"}]),
        "100",
    )
    .await;
    let older = stored(&store, "alice", "a", now - 2_000, json!([{"op": "set", "path": "/x", "value": "alice"}, {"op": "inc", "path": "/n", "by": 1}]), "200").await;
    store
        .fold("state:s", std::slice::from_ref(&newer), &settings)
        .await
        .unwrap();
    let done = store
        .fold("state:s", std::slice::from_ref(&older), &settings)
        .await
        .unwrap();
    assert_eq!(done.folded, 1);
    assert_eq!(
        value(&store).await.0,
        json!({"x": "bob", "n": 1}),
        "alice's inc counts; her older set does not"
    );
    // The same records again (a batch delivered twice): nothing changes.
    let again = store
        .fold("state:s", &[newer, older], &settings)
        .await
        .unwrap();
    assert_eq!((again.folded, again.changed), (0, false));
    assert_eq!(value(&store).await, (json!({"x": "bob", "n": 1}), 2));
}
