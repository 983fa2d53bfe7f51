//! Live state through the local stack: state channels changed by `update` ops, watched
//! as a snapshot and then patches, exactly once per id, last writer wins, at most
//! `STATE_PATCH_RATE` patches a second, refusals that write nothing.

use std::time::{Duration, Instant};

use deltacast_tests::all_items;
use deltacast_tests::stack::{Client, TestStack, start_stack, start_stack_with};
use deltacast_tests::state_view::StateView;
use serde_json::{Value, json};

/// Sends `ops` as update `id` and returns the answer (`updated` or `error`).
async fn update(client: &mut Client, channel: &str, id: &str, ops: Value) -> Value {
    client
        .send(json!({"action": "update", "channel": channel, "id": id, "ops": ops}))
        .await;
    loop {
        let frame = client.next().await.expect("socket open");
        if frame["id"] == id && (frame["type"] == "updated" || frame["type"] == "error") {
            return frame;
        }
    }
}

/// Subscribes `client` to `channel` and returns its view, holding the snapshot.
async fn watch(client: &mut Client, channel: &str) -> StateView {
    let state = client
        .request(
            json!({"action": "subscribe", "channel": channel, "id": "w"}),
            "state",
        )
        .await;
    assert_eq!(state["id"], "w", "{state}");
    let mut view = StateView::default();
    view.take(&state).expect("a snapshot");
    view
}

/// Takes frames into `view` until its value is `want` (panics on a version gap).
async fn until(client: &mut Client, view: &mut StateView, want: &Value) {
    while &view.value != want {
        let frame = client.next().await.expect("socket open");
        view.take(&frame)
            .unwrap_or_else(|gap| panic!("version gap {gap:?}"));
    }
}

/// Op items in the table.
async fn op_items(t: &TestStack) -> usize {
    all_items(&t.store)
        .await
        .iter()
        .filter(|item| item["pk"].as_s().is_ok_and(|pk| pk.starts_with("o#")))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_op_reaches_watchers_as_a_snapshot_then_patches() {
    let t = start_stack().await;
    let mut viewer = t.connect_as("viewer").await;
    let mut editor = t.connect_as("editor").await;
    let mut view = watch(&mut viewer, "state:board").await;
    assert_eq!((view.version, &view.value), (Some(0), &json!({})));

    let steps = [
        (
            json!([{"op": "set", "path": "/title", "value": "Q3"}, {"op": "inc", "path": "/votes/a", "by": 2}]),
            json!({"title": "Q3", "votes": {"a": 2}}),
        ),
        (
            json!([{"op": "inc", "path": "/votes/a", "by": -1}, {"op": "inc", "path": "/votes/b", "by": 5}]),
            json!({"title": "Q3", "votes": {"a": 1, "b": 5}}),
        ),
        (
            json!([{"op": "merge", "path": "/votes", "patch": {"a": null, "c": 7}}]),
            json!({"title": "Q3", "votes": {"b": 5, "c": 7}}),
        ),
        (
            json!([{"op": "remove", "path": "/title"}, {"op": "set", "path": "/tags", "value": ["x", {"y": 1}]}]),
            json!({"votes": {"b": 5, "c": 7}, "tags": ["x", {"y": 1}]}),
        ),
    ];
    for (i, (ops, want)) in steps.iter().enumerate() {
        let answer = update(&mut editor, "state:board", &format!("u{i}"), ops.clone()).await;
        assert_eq!(
            answer,
            json!({"type": "updated", "channel": "state:board", "id": format!("u{i}"), "duplicate": false})
        );
        until(&mut viewer, &mut view, want).await;
    }
    assert!(view.patches >= 1, "changes came as patches");
    // A late joiner gets the same document in one snapshot, at the same version.
    let mut late = t.connect_as("late").await;
    let late_view = watch(&mut late, "state:board").await;
    assert_eq!(
        (late_view.version, &late_view.value),
        (view.version, &view.value)
    );
    // So does `state`, asked any time.
    let snapshot = editor
        .request(
            json!({"action": "state", "channel": "state:board", "id": "s"}),
            "state",
        )
        .await;
    assert_eq!(
        (snapshot["version"].as_u64(), &snapshot["value"]),
        (view.version, &view.value)
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_applies_once_per_user() {
    let t = start_stack().await;
    let mut viewer = t.connect_as("viewer").await;
    let mut view = watch(&mut viewer, "state:poll").await;
    let mut alice = t.connect_as("alice").await;
    let mut alice_phone = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    let vote = json!([{"op": "inc", "path": "/yes", "by": 1}]);
    assert_eq!(
        update(&mut alice, "state:poll", "vote", vote.clone()).await["duplicate"],
        false
    );
    // Again, from the same connection and from another of the same user: a duplicate.
    assert_eq!(
        update(&mut alice, "state:poll", "vote", vote.clone()).await["duplicate"],
        true
    );
    assert_eq!(
        update(&mut alice_phone, "state:poll", "vote", vote.clone()).await["duplicate"],
        true
    );
    // The same id from another user is that user's vote.
    assert_eq!(
        update(&mut bob, "state:poll", "vote", vote.clone()).await["duplicate"],
        false
    );
    until(&mut viewer, &mut view, &json!({"yes": 2})).await;
    // Nothing more arrives: the duplicates changed nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for frame in viewer.drain().await {
        view.take(&frame).expect("no gap");
    }
    assert_eq!(view.value, json!({"yes": 2}));
    assert_eq!(op_items(&t).await, 2, "one op item per (user, id)");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_batches_delivered_again_are_folded_once() {
    // Lambda may deliver a stream batch again; the local stack does it on purpose here.
    let t = start_stack_with(|o| o.duplicate_batch_rate = 1.0).await;
    let mut viewer = t.connect_as("viewer").await;
    let mut view = watch(&mut viewer, "state:tally").await;
    let mut voters = Vec::new();
    for v in 0..5 {
        voters.push(t.connect_as(&format!("v{v}")).await);
    }
    for round in 0..4 {
        for (v, voter) in voters.iter_mut().enumerate() {
            voter
                .send(json!({"action": "update", "channel": "state:tally", "id": format!("{round}"),
                             "ops": [{"op": "inc", "path": format!("/v{v}"), "by": 1}, {"op": "inc", "path": "/all", "by": 1}]}))
                .await;
        }
    }
    let want = json!({"all": 20, "v0": 4, "v1": 4, "v2": 4, "v3": 4, "v4": 4});
    until(&mut viewer, &mut view, &want).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let snapshot = viewer
        .request(
            json!({"action": "state", "channel": "state:tally"}),
            "state",
        )
        .await;
    assert_eq!(snapshot["value"], want, "no record folded twice");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_writer_wins_and_incs_commute() {
    let t = start_stack().await;
    let mut viewer = t.connect_as("viewer").await;
    let mut view = watch(&mut viewer, "state:form").await;
    let mut alice = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    // Sent one after the other: the later one is the value, whoever sent it.
    update(
        &mut alice,
        "state:form",
        "a1",
        json!([{"op": "set", "path": "/name", "value": "Ann"}]),
    )
    .await;
    update(
        &mut bob,
        "state:form",
        "b1",
        json!([{"op": "set", "path": "/name", "value": "Bo"}]),
    )
    .await;
    update(
        &mut alice,
        "state:form",
        "a2",
        json!([{"op": "remove", "path": "/name"}, {"op": "set", "path": "/note", "value": 1}]),
    )
    .await;
    update(
        &mut bob,
        "state:form",
        "b2",
        json!([{"op": "set", "path": "/note", "value": 2}]),
    )
    .await;
    until(&mut viewer, &mut view, &json!({"note": 2})).await;
    // Incs from many writers at once all count.
    let mut sends = Vec::new();
    for (i, client) in [&mut alice, &mut bob].into_iter().enumerate() {
        for n in 0..10 {
            client
                .send(
                    json!({"action": "update", "channel": "state:form", "id": format!("c{i}-{n}"),
                             "ops": [{"op": "inc", "path": "/count", "by": n + 1}]}),
                )
                .await;
        }
        sends.push(i);
    }
    until(&mut viewer, &mut view, &json!({"note": 2, "count": 110})).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_come_at_most_at_the_patch_rate_and_a_gap_is_healed_by_state() {
    let t = start_stack_with(|o| {
        o.parameters.insert("StatePatchRate".into(), "2".into());
    })
    .await;
    let mut viewer = t.connect_as("viewer").await;
    let mut view = watch(&mut viewer, "state:live").await;
    let writers = 4;
    let mut clients = Vec::new();
    for w in 0..writers {
        clients.push(t.connect_as(&format!("w{w}")).await);
    }
    let started = Instant::now();
    // 4 writers × 10 incs, each an update of its own, as fast as they are answered.
    for n in 0..10 {
        for (w, client) in clients.iter_mut().enumerate() {
            client
                .send(
                    json!({"action": "update", "channel": "state:live", "id": format!("{w}-{n}"),
                             "ops": [{"op": "inc", "path": "/n", "by": 1}]}),
                )
                .await;
        }
    }
    until(&mut viewer, &mut view, &json!({"n": 40})).await;
    let elapsed = started.elapsed();
    // At 2 a second, the patches that carried 40 updates are at most one per 500 ms.
    let most = 1 + (elapsed.as_millis() / 500) as usize;
    assert!(
        view.patches <= most,
        "{} patches in {elapsed:?} (at most {most})",
        view.patches
    );
    assert!(
        view.patches < 40,
        "updates were folded together: {} patches",
        view.patches
    );

    // A client that missed a patch sees the gap on the next one and asks for the state.
    let mut stale = StateView {
        version: view.version.map(|v| v - 1),
        ..view.clone()
    };
    clients[0]
        .send(json!({"action": "update", "channel": "state:live", "id": "last", "ops": [{"op": "inc", "path": "/n", "by": 1}]}))
        .await;
    let patch = viewer.next_of("patch").await;
    assert!(stale.take(&patch).is_err(), "a gap");
    let snapshot = viewer
        .request(json!({"action": "state", "channel": "state:live"}), "state")
        .await;
    stale.take(&snapshot).unwrap();
    assert_eq!(stale.value, json!({"n": 41}));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_outlives_the_log_and_its_ops() {
    let t = start_stack().await;
    let mut writer = t.connect_as("writer").await;
    let mut viewer = t.connect_as("viewer").await;
    let mut view = watch(&mut viewer, "state:kept").await;
    update(
        &mut writer,
        "state:kept",
        "k1",
        json!([{"op": "set", "path": "/a", "value": {"b": [1, 2]}}]),
    )
    .await;
    until(&mut viewer, &mut view, &json!({"a": {"b": [1, 2]}})).await;
    viewer.close().await;
    // The document has no expiry, and with the ops gone (as a log past its retention
    // would be) a client coming back still gets all of it.
    let items = all_items(&t.store).await;
    let document = items
        .iter()
        .find(|i| i["sk"].as_s().is_ok_and(|sk| sk == "state"))
        .expect("the document item");
    assert!(!document.contains_key("ttl"), "kept without expiry");
    for item in items
        .iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with("o#")))
    {
        t.store
            .client()
            .delete_item()
            .table_name(t.store.table())
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .send()
            .await
            .unwrap();
    }
    let mut back = t.connect_as("viewer").await;
    let back_view = watch(&mut back, "state:kept").await;
    assert_eq!(
        (back_view.version, back_view.value),
        (view.version, view.value)
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_reason_and_write_nothing() {
    let t = start_stack_with(|o| {
        o.env.insert("STATE_MAX_BYTES".into(), "200".into());
    })
    .await;
    let mut alice = t.connect_as("alice").await;
    let reader_token = t.token("reader", json!({"*": ["subscribe"]}));
    let mut reader = t.connect(&reader_token).await.expect("handshake");
    let before = all_items(&t.store).await.len();
    let inc = json!([{"op": "inc", "path": "/n", "by": 1}]);
    for (by_reader, frame, code, says) in [
        (
            true,
            json!({"action": "update", "channel": "state:x", "id": "u", "ops": inc}),
            "forbidden",
            "publish on state:x",
        ),
        (
            false,
            json!({"action": "update", "channel": "chat:x", "id": "u", "ops": inc}),
            "bad_request",
            "update needs a state channel",
        ),
        (
            false,
            json!({"action": "publish", "channel": "state:x", "id": "u", "data": 1}),
            "bad_request",
            "state:x is a state channel",
        ),
        (
            false,
            json!({"action": "history", "channel": "state:x", "since": 0}),
            "bad_request",
            "state:x is a state channel",
        ),
        (
            false,
            json!({"action": "subscribe", "channel": "state:x", "since": 3}),
            "bad_request",
            "`since` is for log channels",
        ),
        (
            false,
            json!({"action": "update", "channel": "state:x", "id": "u", "ops": [{"op": "inc", "path": "/n", "by": 0.5}]}),
            "bad_request",
            "ops[0].by",
        ),
        (
            false,
            json!({"action": "update", "channel": "state:x", "id": "u", "ops": [{"op": "set", "path": "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q", "value": 1}]}),
            "bad_request",
            "ops[0].path",
        ),
        (
            false,
            json!({"action": "update", "channel": "state:x", "id": "u", "ops": [{"op": "set", "path": "/n", "value": 1e300}]}),
            "bad_request",
            "2^53 - 1",
        ),
        (
            false,
            json!({"action": "update", "channel": "state:x", "id": "u", "ops": vec![json!({"op": "remove", "path": "/a"}); 33]}),
            "bad_request",
            "1 to 32 operations",
        ),
    ] {
        let client = if by_reader { &mut reader } else { &mut alice };
        client.send(frame.clone()).await;
        let answer = client.next_of("error").await;
        assert_eq!(answer["code"], code, "{frame}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(says), "{frame}: {message}");
    }
    let after: Vec<_> = all_items(&t.store).await;
    // Only rate-limit buckets moved (on the connections' liveness items).
    assert_eq!(after.len(), before, "no item added");
    assert_eq!(op_items(&t).await, 0);

    // What only the document can tell is answered when the fold meets it: the update is
    // stored, then refused with its id, and the document stays as it was.
    let mut view = watch(&mut alice, "state:x").await;
    update(
        &mut alice,
        "state:x",
        "s",
        json!([{"op": "set", "path": "/s", "value": "text"}]),
    )
    .await;
    until(&mut alice, &mut view, &json!({"s": "text"})).await;
    let answer = update(
        &mut alice,
        "state:x",
        "bad",
        json!([{"op": "inc", "path": "/s", "by": 1}]),
    )
    .await;
    assert_eq!(answer["type"], "updated");
    let refused = alice.next_of("error").await;
    assert_eq!(
        (refused["id"].as_str(), refused["code"].as_str()),
        (Some("bad"), Some("bad_request"))
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not a number"),
        "{refused}"
    );
    // The refused message's id is free again: sent again, with ops that apply, it counts.
    let again = update(
        &mut alice,
        "state:x",
        "bad",
        json!([{"op": "inc", "path": "/n", "by": 1}]),
    )
    .await;
    assert_eq!(again["duplicate"], false, "{again}");
    until(&mut alice, &mut view, &json!({"s": "text", "n": 1})).await;
    update(
        &mut alice,
        "state:x",
        "big",
        json!([{"op": "set", "path": "/big", "value": "x".repeat(300)}]),
    )
    .await;
    let refused = alice.next_of("error").await;
    assert_eq!(
        (refused["id"].as_str(), refused["code"].as_str()),
        (Some("big"), Some("too_large"))
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("STATE_MAX_BYTES"),
        "{refused}"
    );
    let snapshot = alice
        .request(json!({"action": "state", "channel": "state:x"}), "state")
        .await;
    assert_eq!(snapshot["value"], json!({"s": "text", "n": 1}));
    t.shutdown().await;
}
