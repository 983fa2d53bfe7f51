//! End-to-end: the real function binaries behind the local gateway, DynamoDB Local and its
//! stream, driven by WebSocket clients the way an app drives deltacast.

use std::time::Duration;

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use deltacast_tests::stack::{TestStack, eventually, start_stack};
use deltacast_tests::{items_naming, tokens, write_history};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn seqs(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["seq"].as_u64().expect("seq"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_need_a_valid_token() {
    let t = start_stack().await;
    let base = t.stack.url.clone();

    let ok = t.token("alice", json!({"chat:*": ["subscribe"]}));
    t.connect(&ok)
        .await
        .expect("valid token connects")
        .close()
        .await;

    assert_eq!(
        t.connect_url(&base).await.err().expect("refused").status,
        401,
        "no token"
    );
    assert_eq!(
        t.connect("not-a-jwt").await.err().expect("refused").status,
        401,
        "garbage"
    );
    let forged = tokens::sign_with(
        json!({"sub": "mallory"}),
        "some-other-secret-that-is-32-bytes-long",
    );
    assert_eq!(
        t.connect(&forged).await.err().expect("refused").status,
        401,
        "wrong secret"
    );
    let expired = tokens::sign(json!({"sub": "alice", "exp": 1_000_000}));
    assert_eq!(
        t.connect(&expired).await.err().expect("refused").status,
        401,
        "expired"
    );
    let bad_claims = t.token("alice", json!({"chat:*": ["fly"]}));
    assert_eq!(
        t.connect(&bad_claims).await.err().expect("refused").status,
        403,
        "denied"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_fan_out_to_every_subscriber_in_order() {
    let t = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    let mut carol = t.connect_as("carol").await;
    for client in [&mut alice, &mut bob] {
        let subscribed = client
            .request(
                json!({"action": "subscribe", "channel": "chat:lobby", "id": "s"}),
                "subscribed",
            )
            .await;
        assert_eq!(subscribed["seq"], 0);
    }
    for i in 1..=3 {
        let ack = carol
            .request(
                json!({"action": "publish", "channel": "chat:lobby", "id": format!("m{i}"), "data": {"n": i}}),
                "ack",
            )
            .await;
        assert_eq!(ack["seq"], i);
    }
    for client in [&mut alice, &mut bob] {
        let mut deltas = Vec::new();
        while deltas.len() < 3 {
            deltas.push(client.next_of("delta").await);
        }
        assert_eq!(seqs(&deltas), [1, 2, 3]);
        assert_eq!(deltas[0]["from"], "carol");
        assert_eq!(deltas[2]["data"], json!({"n": 3}));
    }
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnecting_client_catches_up() {
    let t = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    alice
        .request(
            json!({"action": "subscribe", "channel": "doc:1"}),
            "subscribed",
        )
        .await;
    bob.request(
        json!({"action": "publish", "channel": "doc:1", "id": "a", "data": "one"}),
        "ack",
    )
    .await;
    let first = alice.next_of("delta").await;
    let epoch = first["epoch"].clone();
    alice.close().await;

    for (id, data) in [("b", "two"), ("c", "three")] {
        bob.request(
            json!({"action": "publish", "channel": "doc:1", "id": id, "data": data}),
            "ack",
        )
        .await;
    }
    let mut alice = t.connect_as("alice").await;
    alice
        .send(json!({"action": "subscribe", "channel": "doc:1", "since": 1, "epoch": epoch}))
        .await;
    let mut frames = Vec::new();
    loop {
        let frame = alice.next().await.expect("frames");
        let done = frame["type"] == "subscribed";
        frames.push(frame);
        if done {
            break;
        }
    }
    let subscribed = frames.pop().expect("subscribed");
    assert_eq!(subscribed["recovered"], true);
    assert_eq!(subscribed["seq"], 3);
    // Live deltas may interleave with the catch-up: order and dedupe, as a client does.
    let mut caught_up = seqs(&frames);
    caught_up.sort();
    caught_up.dedup();
    assert_eq!(caught_up, [2, 3]);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribing_stops_delivery() {
    let t = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    for channel in ["a:muted", "b:live"] {
        alice
            .request(
                json!({"action": "subscribe", "channel": channel}),
                "subscribed",
            )
            .await;
    }
    let reply = alice
        .request(
            json!({"action": "unsubscribe", "channel": "a:muted", "id": "u"}),
            "unsubscribed",
        )
        .await;
    assert_eq!(reply["id"], "u");
    // a:muted sorts before b:live, so had it been delivered it would arrive first.
    bob.request(
        json!({"action": "publish", "channel": "a:muted", "id": "x", "data": 1}),
        "ack",
    )
    .await;
    bob.request(
        json!({"action": "publish", "channel": "b:live", "id": "y", "data": 2}),
        "ack",
    )
    .await;
    let delta = alice.next_of("delta").await;
    assert_eq!(delta["channel"], "b:live");
    // Nothing of a:muted came before, nor is anything of it still on its way.
    let late = alice.drain().await;
    assert!(late.iter().all(|f| f["channel"] != "a:muted"), "{late:?}");
    let (subscribers, _) = t.store.subscribers_page("a:muted", None).await.unwrap();
    let id = alice.connection_id().await;
    assert!(
        subscribers.iter().all(|s| s.connection_id != id),
        "the subscription is gone"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_removes_everything_that_names_it() {
    let t = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    let id = alice.connection_id().await;
    for channel in ["x:1", "x:2"] {
        alice
            .request(
                json!({"action": "subscribe", "channel": channel}),
                "subscribed",
            )
            .await;
    }
    assert!(items_naming(&t.store, &id).await >= 5);
    alice.close().await;
    let store = &t.store;
    let id = &id;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            items_naming(store, id).await == 0
        })
        .await,
        "items still name {id} after $disconnect"
    );
    assert!(
        eventually(Duration::from_secs(5), || async {
            t.stack.gateway().open_connections() == 0
        })
        .await
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_management_api_works_with_the_aws_sdk() {
    let t = start_stack().await;
    let sdk = deltacast_local::stack::local_sdk_config(&t.stack.management_endpoint).await;
    let api = aws_sdk_apigatewaymanagement::Client::new(&sdk);
    let mut alice = t.connect_as("alice").await;
    let id = alice.connection_id().await;

    api.post_to_connection()
        .connection_id(&id)
        .data(Blob::new(r#"{"type":"hello"}"#))
        .send()
        .await
        .expect("post");
    assert_eq!(alice.next().await, Some(json!({"type": "hello"})));

    let info = api
        .get_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("get");
    assert!(info.connected_at.is_some());
    assert!(info.last_active_at.is_some());
    assert_eq!(
        info.identity.and_then(|i| i.source_ip),
        Some("127.0.0.1".into())
    );

    api.delete_connection()
        .connection_id(&id)
        .send()
        .await
        .expect("delete");
    alice.closed().await;
    let store = &t.store;
    let idr = &id;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            items_naming(store, idr).await == 0
        })
        .await
    );

    let err = api
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new("late"))
        .send()
        .await
        .expect_err("gone");
    assert!(matches!(
        err.into_service_error(),
        PostToConnectionError::GoneException(_)
    ));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_close_the_connection_with_1009() {
    let t = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    let big = format!(r#"{{"action":"ping","id":"{}"}}"#, "x".repeat(40 * 1024));
    alice.send_text(&big).await;
    assert_eq!(alice.closed().await, Some(CloseCode::Size));
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_connection_stays_usable() {
    let t: TestStack = start_stack().await;
    let mut alice = t.connect_as("alice").await;
    alice.send_text("{oops").await;
    let error = alice.next_of("error").await;
    assert_eq!(error["code"], "bad_request");
    let pong = alice
        .request(json!({"action": "ping", "id": "after"}), "pong")
        .await;
    assert_eq!(pong["id"], "after");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_cleaned_up() {
    let t = deltacast_tests::stack::start_stack_with(|options| {
        options.gateway.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let mut alice = t.connect_as("alice").await;
    let id = alice.connection_id().await;
    assert_eq!(alice.closed().await, Some(CloseCode::Away));
    let store = &t.store;
    let id = &id;
    assert!(
        eventually(Duration::from_secs(20), || async move {
            items_naming(store, id).await == 0
        })
        .await
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_of_utf8_json_work_like_text_frames() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let t = start_stack().await;
    let token = t.token("alice", json!({"chat:*": ["subscribe", "publish"]}));
    let (mut socket, _) =
        tokio_tungstenite::connect_async(format!("{}?token={token}", t.stack.url))
            .await
            .expect("handshake accepted");
    let publish = json!({"action": "publish", "channel": "chat:bin", "id": "b1", "data": {"n": 1}});
    socket
        .send(Message::binary(publish.to_string().into_bytes()))
        .await
        .expect("binary frame sent");
    socket
        .send(Message::binary(vec![0xff, 0xfe, b'{', 0x00]))
        .await
        .expect("binary frame sent");
    let mut alice = deltacast_tests::stack::Client::from_socket(socket);
    // The gateway invokes the function for each frame without waiting, so the two
    // replies may come in either order.
    let mut replies = vec![
        alice.next().await.expect("a reply"),
        alice.next().await.expect("a reply"),
    ];
    replies.sort_by_key(|reply| reply["type"].as_str().unwrap_or_default().to_owned());
    let [ack, refusal] = &replies[..] else {
        unreachable!()
    };
    assert_eq!(ack["type"], "ack", "{replies:?}");
    assert_eq!(
        (ack["id"].as_str(), ack["seq"].as_u64()),
        (Some("b1"), Some(1))
    );
    assert_eq!(refusal["type"], "error", "{replies:?}");
    assert_eq!(refusal["code"], "bad_request");
    assert_eq!(
        refusal["message"],
        "binary frames must carry UTF-8 JSON, as text frames do"
    );
    let pong = alice
        .request(json!({"action": "ping", "id": "after"}), "pong")
        .await;
    assert_eq!(pong["id"], "after", "the connection is still usable");
    t.shutdown().await;
}

/// Each frame's seqs, for `delta` and `deltas` frames; `None` for any other frame.
fn delta_seqs(frame: &Value) -> Option<Vec<u64>> {
    match frame["type"].as_str()? {
        "delta" => Some(vec![frame["seq"].as_u64()?]),
        "deltas" => frame["deltas"]
            .as_array()?
            .iter()
            .map(|d| d["seq"].as_u64())
            .collect(),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalescing_client_gets_a_burst_in_deltas_frames_and_a_v1_client_one_frame_each() {
    // GIVEN a client subscribed with coalesce and a v1 client, on the same channel
    let t = start_stack().await;
    let mut packed = t.connect_as("alice").await;
    let mut plain = t.connect_as("bob").await;
    let subscribed = packed
        .request(
            json!({"action": "subscribe", "channel": "chat:burst", "coalesce": true}),
            "subscribed",
        )
        .await;
    assert_eq!(subscribed["seq"], 0);
    plain
        .request(
            json!({"action": "subscribe", "channel": "chat:burst"}),
            "subscribed",
        )
        .await;
    // WHEN 24 deltas are written at once (one batch write)
    let ttl = deltacast::clock::now_secs() + 3600;
    write_history(&t.store, "chat:burst", "e-burst", 1..=24, ttl).await;
    // THEN the coalescing client gets them all, once, in order, in fewer frames than
    // deltas, in `deltas` frames of at most 32 KB
    let mut frames = Vec::new();
    let mut received = Vec::new();
    while received.len() < 24 {
        let frame = packed.next().await.expect("a frame");
        if let Some(seqs) = delta_seqs(&frame) {
            received.extend(seqs);
            frames.push(frame);
        }
    }
    assert_eq!(received, (1..=24).collect::<Vec<_>>());
    assert!(frames.len() < 24, "{} frames", frames.len());
    assert!(frames.iter().any(|f| f["type"] == "deltas"), "{frames:?}");
    assert!(frames.iter().all(|f| f.to_string().len() <= 32_768));
    let first = frames.iter().find(|f| f["type"] == "deltas").unwrap();
    assert_eq!(first["channel"], "chat:burst");
    assert!(first["deltas"][0].get("type").is_none());
    assert_eq!(first["deltas"][0]["epoch"], "e-burst");
    // AND the v1 client gets one `delta` frame per delta, in order
    let mut deltas = Vec::new();
    while deltas.len() < 24 {
        let frame = plain.next().await.expect("a frame");
        assert_ne!(frame["type"], "deltas", "a v1 client never gets `deltas`");
        if frame["type"] == "delta" {
            deltas.push(frame);
        }
    }
    assert_eq!(seqs(&deltas), (1..=24).collect::<Vec<_>>());
    // WHEN 12 deltas of 5 KB follow (more than 32 KB together), published one by one
    deltacast_tests::publish_deltas(&t.store, "chat:burst", 12, 5_000).await;
    // THEN the coalescing client gets them in order in frames of at most 32 KB, and the
    // v1 client one `delta` frame each
    let mut received = Vec::new();
    while received.len() < 12 {
        let frame = packed.next().await.expect("a frame");
        if let Some(seqs) = delta_seqs(&frame) {
            assert!(
                frame.to_string().len() <= 32_768,
                "{} bytes",
                frame.to_string().len()
            );
            received.extend(seqs);
        }
    }
    assert_eq!(received, (25..=36).collect::<Vec<_>>());
    let mut deltas = Vec::new();
    while deltas.len() < 12 {
        deltas.push(plain.next().await.expect("a frame"));
    }
    assert!(deltas.iter().all(|f| f["type"] == "delta"), "{deltas:?}");
    assert_eq!(seqs(&deltas), (25..=36).collect::<Vec<_>>());
    // AND nothing more reaches either
    for client in [&mut packed, &mut plain] {
        let late = client.drain().await;
        assert!(late.iter().all(|f| delta_seqs(f).is_none()), "{late:?}");
    }
    t.shutdown().await;
}
