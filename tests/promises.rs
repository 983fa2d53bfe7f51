//! End to end: promises of the README and docs that no other test ran through the whole
//! local stack (issue 11, point 6). Each test starts one stack and checks the promises that
//! share it; what each one is and where it is written down is said beside it.
//!
//! - the fan-out prunes a connection the Management API calls gone (410), with all its
//!   items and nothing else, and skips a frame it refuses as too large (413), keeping the
//!   connection (`functions/fanout`);
//! - a token in the query string wins over one in the subprotocol header, and every
//!   request refreshes its connection's liveness (docs/security.md, `ping.rs`);
//! - concurrent subscribes stop at the limit, `$disconnect` removes a connection with more
//!   items than one batch write takes, and a fan-out reads every page of subscribers;
//! - no function logs a payload or a token, even at `trace`;
//! - keys from a JWKS keep working while the key server is down, and the key set is
//!   fetched again after its cache period;
//! - the maximum connection duration closes a connection and runs `$disconnect`.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::clock;
use deltacast::protocol::{Channel, MessageId, Payload};
use deltacast::store::{NewDelta, Store};
use deltacast_local::gateway::{MAX_MESSAGE_BYTES, ManagementFaults};
use deltacast_local::stack::StackOptions;
use deltacast_tests::stack::{Client, TestStack, eventually, start_stack_with};
use deltacast_tests::{all_items, items_naming, tokens};
use futures::StreamExt;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How long cleanup by `$disconnect` or the fan-out may take.
const CLEANUP: Duration = Duration::from_secs(20);

/// Every line the functions of this binary's stacks have written (the gateway forwards
/// them to `tracing` under `deltacast_local::runtime`), whatever their level.
fn function_logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("log lock").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let capture = Capture(logs.clone());
        let _ = tracing_subscriber::registry()
            // What the harness prints when RUST_LOG asks for it.
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(EnvFilter::from_default_env()),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || capture.clone())
                    .with_filter(EnvFilter::new("deltacast_local::runtime=trace")),
            )
            .try_init();
        logs
    })
}

/// Starts a stack, with the functions' logs captured (first, so that the harness's own
/// subscriber does not take the place of the capture).
async fn start(adjust: impl FnOnce(&mut StackOptions)) -> TestStack {
    function_logs();
    start_stack_with(adjust).await
}

/// The keys of every item, or of the items naming `needle` when it is given.
async fn keys(store: &Store, needle: Option<&str>) -> BTreeSet<(String, String)> {
    all_items(store)
        .await
        .iter()
        .filter(|item| {
            needle.is_none_or(|needle| {
                item.values()
                    .any(|value| value.as_s().is_ok_and(|s| s.contains(needle)))
            })
        })
        .map(|item| {
            let key = |name: &str| item[name].as_s().expect("string key").clone();
            (key("pk"), key("sk"))
        })
        .collect()
}

/// The `seen` time of a connection's liveness item (Unix ms).
async fn seen(store: &Store, connection_id: &str) -> u64 {
    let out = store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(format!("c#{connection_id}")))
        .key("sk", AttributeValue::S("live".into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item");
    let item = out.item.expect("the connection has a liveness item");
    item["seen"]
        .as_n()
        .expect("seen is a number")
        .parse()
        .expect("seen parses")
}

async fn subscribe(client: &mut Client, channel: &str) {
    client
        .request(
            json!({"action": "subscribe", "channel": channel}),
            "subscribed",
        )
        .await;
}

async fn publish(client: &mut Client, channel: &str, id: &str, data: Value) -> Value {
    client
        .request(
            json!({"action": "publish", "channel": channel, "id": id, "data": data}),
            "ack",
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fan_out_prunes_on_410_and_skips_frames_refused_as_too_large() {
    let t = start(|_| {}).await;

    // 410: alice alone receives gone:a; bob shares gone:b with her; carol publishes.
    let mut alice = t.connect_as("alice").await;
    let mut bob = t.connect_as("bob").await;
    let mut carol = t.connect_as("carol").await;
    let alice_id = alice.connection_id().await;
    let bob_id = bob.connection_id().await;
    subscribe(&mut alice, "gone:a").await;
    subscribe(&mut alice, "gone:b").await;
    subscribe(&mut bob, "gone:b").await;
    let naming_alice = keys(&t.store, Some(&alice_id)).await;
    assert_eq!(
        naming_alice.len(),
        6,
        "meta, live, 2 × 2 subscription items"
    );
    let others: BTreeSet<_> = keys(&t.store, None)
        .await
        .difference(&naming_alice)
        .cloned()
        .collect();

    // The gateway's gone fault: every post answers 410 (carol's ack too, which the
    // message function drops), so only gone:a's one subscriber meets it in the fan-out.
    t.stack.gateway().set_faults(ManagementFaults {
        gone_rate: 1.0,
        ..ManagementFaults::default()
    });
    carol
        .send(json!({"action": "publish", "channel": "gone:a", "id": "g1", "data": 1}))
        .await;
    let store = &t.store;
    let alice_ref = &alice_id;
    let pruned = eventually(CLEANUP, || async move {
        items_naming(store, alice_ref).await == 0
    })
    .await;
    t.stack.gateway().set_faults(ManagementFaults::default());
    assert!(pruned, "alice's items survived a 410 from the fan-out");
    let after = keys(&t.store, None).await;
    let lost: Vec<_> = others.difference(&after).collect();
    assert!(
        lost.is_empty(),
        "pruning alice removed others' items: {lost:?}"
    );
    let (subscribers, _) = t.store.subscribers_page("gone:b", None).await.unwrap();
    let subscribers: Vec<String> = subscribers.into_iter().map(|s| s.connection_id).collect();
    assert_eq!(
        subscribers,
        std::slice::from_ref(&bob_id),
        "bob still receives gone:b, alice not"
    );
    publish(&mut carol, "gone:b", "g2", json!(2)).await;
    assert_eq!(bob.next_of("delta").await["channel"], "gone:b");

    // 413: the Management API refuses a post over 128 KB and keeps the connection.
    let sdk = deltacast_local::stack::local_sdk_config(&t.stack.management_endpoint).await;
    let api = aws_sdk_apigatewaymanagement::Client::new(&sdk);
    let framed = |size: usize| {
        let envelope = r#"{"type":"big","pad":""}"#.len();
        json!({"type": "big", "pad": "x".repeat(size - envelope)}).to_string()
    };
    api.post_to_connection()
        .connection_id(&bob_id)
        .data(Blob::new(framed(MAX_MESSAGE_BYTES)))
        .send()
        .await
        .expect("a post of exactly 128 KiB is delivered");
    assert_eq!(bob.next().await.expect("the big frame")["type"], "big");
    let refused = api
        .post_to_connection()
        .connection_id(&bob_id)
        .data(Blob::new(framed(MAX_MESSAGE_BYTES + 1)))
        .send()
        .await
        .expect_err("a post over 128 KiB is refused");
    assert!(
        matches!(
            refused.into_service_error(),
            PostToConnectionError::PayloadTooLargeException(_)
        ),
        "413 PayloadTooLargeException"
    );
    bob.request(json!({"action": "ping"}), "pong").await;

    // A delta whose frame is over 128 KB (only a direct table write can make one: `data`
    // is capped at 30 KiB) is skipped for each connection, which is kept, and the next
    // delta is delivered rather than held up behind it.
    subscribe(&mut bob, "big:1").await;
    let bob_items = keys(&t.store, Some(&bob_id)).await;
    let huge = Payload::from_json(json!("y".repeat(MAX_MESSAGE_BYTES)).to_string()).unwrap();
    t.store
        .publish(NewDelta {
            channel: &Channel::parse("big:1").unwrap(),
            id: &MessageId::parse("huge").unwrap(),
            from: "test",
            data: &huge,
            expect_seq: None,
        })
        .await
        .expect("the huge delta is stored");
    publish(&mut carol, "big:1", "small", json!("small")).await;
    let delta = bob.next_of("delta").await;
    assert_eq!(
        (delta["channel"].as_str(), delta["seq"].as_u64()),
        (Some("big:1"), Some(2))
    );
    let late = bob.drain().await;
    assert!(late.iter().all(|f| f["type"] != "delta"), "{late:?}");
    assert_eq!(
        keys(&t.store, Some(&bob_id)).await,
        bob_items,
        "bob is kept"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_token_wins_and_every_request_refreshes_liveness() {
    let t = start(|_| {}).await;
    let everything = json!({"*": ["subscribe", "publish"]});
    let query = t.token("query-user", everything.clone());
    let protocol = t.token("protocol-user", everything);
    let with_both = |query: &str| {
        let url = format!("{}?token={query}", t.stack.url);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_str(&format!("deltacast.v1, bearer.{protocol}")).unwrap(),
        );
        request
    };

    // docs/security.md: "The query parameter wins when both are present."
    let (socket, _) = tokio_tungstenite::connect_async(with_both(&query))
        .await
        .expect("handshake with both tokens");
    let mut both = Client::from_socket(socket);
    subscribe(&mut both, "who:1").await;
    publish(&mut both, "who:1", "w1", json!(1)).await;
    assert_eq!(both.next_of("delta").await["from"], "query-user");
    // Even a query token that fails is the one that counts.
    let forged = tokens::sign_with(json!({"sub": "mallory"}), &"f".repeat(32));
    match tokio_tungstenite::connect_async(with_both(&forged)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401)
        }
        other => panic!(
            "a forged query token was passed over for the subprotocol's: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }

    // Liveness: `seen` moves to the time of each request, ping and publish alike.
    let mut alice = t.connect_as("alice").await;
    let id = alice.connection_id().await;
    let mut last = seen(&t.store, &id).await;
    for (what, frame) in [
        ("ping", json!({"action": "ping"})),
        (
            "publish",
            json!({"action": "publish", "channel": "live:1", "id": "l1", "data": 1}),
        ),
        (
            "subscribe",
            json!({"action": "subscribe", "channel": "live:1"}),
        ),
    ] {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let before = clock::now_ms();
        alice.send(frame).await;
        let reply = alice.next().await.expect("a reply");
        let now = seen(&t.store, &id).await;
        assert!(
            now >= before && now > last,
            "{what} ({reply}) left seen at {now} (was {last}, request at {before})"
        );
        last = now;
    }
    t.shutdown().await;
}

/// Bytes of padding in each filler subscription item: three fill more than the 1 MB a
/// DynamoDB Query page reads at most (an item may hold 400 KB).
const FILLER_BYTES: usize = 350 * 1024;

/// Writes a channel-side subscription item for `connection_id` (which is not connected)
/// padded to [`FILLER_BYTES`], so that a page of the channel's subscribers holds few.
async fn filler_subscription(store: &Store, channel: &str, connection_id: &str) {
    store
        .client()
        .put_item()
        .table_name(store.table())
        .item("pk", AttributeValue::S(format!("h#{channel}")))
        .item("sk", AttributeValue::S(format!("s#{connection_id}")))
        .item("sub", AttributeValue::S("filler".into()))
        .item("pad", AttributeValue::S("p".repeat(FILLER_BYTES)))
        .send()
        .await
        .expect("filler written");
}

/// The pages of a channel's subscribers, as the fan-out reads them.
async fn subscriber_pages(store: &Store, channel: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut start = None;
    loop {
        let (subscribers, next) = store.subscribers_page(channel, start).await.unwrap();
        pages.push(subscribers.into_iter().map(|s| s.connection_id).collect());
        match next {
            Some(key) => start = Some(key),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limits_disconnects_and_fan_outs_hold_beyond_one_page() {
    // 2 + 2 × 13 items: two batch writes (25 + 3).
    const LIMIT: usize = 13;
    let t = start(|options| {
        options
            .env
            .insert("MAX_SUBSCRIPTIONS".into(), LIMIT.to_string());
        // Only the subscription limit may refuse here.
        options
            .env
            .insert("RATE_LIMIT_PER_SECOND".into(), "1000".into());
        options.env.insert("RATE_LIMIT_BURST".into(), "1000".into());
        options
            .env
            .insert("USER_RATE_LIMIT_BURST".into(), "0".into());
    })
    .await;

    // A fan-out over several pages of subscribers: filler subscriptions (padded, of
    // connections that do not exist) sort before and between three real subscribers.
    let mut readers = Vec::new();
    for name in ["r1", "r2", "r3"] {
        let mut reader = t.connect_as(name).await;
        subscribe(&mut reader, "wide:1").await;
        let id = reader.connection_id().await;
        readers.push((id, reader));
    }
    readers.sort_by(|a, b| a.0.cmp(&b.0));
    for i in 0..3 {
        // `!` sorts before every character of a connection id.
        filler_subscription(&t.store, "wide:1", &format!("!{i}")).await;
        filler_subscription(&t.store, "wide:1", &format!("{}!{i}", readers[0].0)).await;
    }
    let pages = subscriber_pages(&t.store, "wide:1").await;
    let page_of = |id: &str| pages.iter().position(|page| page.iter().any(|s| s == id));
    let (first, last) = (page_of(&readers[0].0), page_of(&readers[2].0));
    assert!(
        first.is_some_and(|p| p >= 1) && last > first,
        "the real subscribers are not spread over later pages: {pages:?}"
    );
    let mut publisher = t.connect_as("publisher").await;
    publish(&mut publisher, "wide:1", "w", json!("to everyone")).await;
    for (id, reader) in &mut readers {
        let delta = reader.next_of("delta").await;
        assert_eq!(delta["data"], "to everyone", "{id} (pages {pages:?})");
    }

    // Concurrent subscribes over the limit. All but one place are taken through the store
    // (quicker than frames; the store's own tests race 150 subscribes against it), then
    // three frames race for the last place: the gateway invokes each as it comes, on up
    // to 4 instances.
    let mut eve = t.connect_as("eve").await;
    let eve_id = eve.connection_id().await;
    let connected_at = clock::now_ms();
    let taken = futures::stream::iter(0..LIMIT - 1)
        .map(|i| {
            let (store, eve_id) = (&t.store, &eve_id);
            async move {
                let channel = Channel::parse(&format!("many:{i:02}")).unwrap();
                store
                    .subscribe(
                        eve_id,
                        "eve",
                        deltacast::clock::now_secs() + 3600,
                        &channel,
                        connected_at,
                        LIMIT as u32,
                    )
                    .await
                    .expect("subscribed through the store")
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<bool>>()
        .await;
    assert!(taken.iter().all(|new| *new));
    let racing = 3;
    for i in 0..racing {
        eve.send(json!({"action": "subscribe", "channel": format!("last:{i}")}))
            .await;
    }
    let (mut made, mut refused) = (0, 0);
    for _ in 0..racing {
        let reply = eve.next().await.expect("a reply to each subscribe");
        match reply["type"].as_str() {
            Some("subscribed") => made += 1,
            Some("error")
                if reply["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("MAX_SUBSCRIPTIONS")) =>
            {
                refused += 1
            }
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert_eq!((made, refused), (1, racing - 1), "one place for {racing}");
    // Meta and liveness, and both sides of each subscription: more than one batch of 25.
    assert_eq!(items_naming(&t.store, &eve_id).await, 2 + 2 * LIMIT);
    eve.close().await;
    let store = &t.store;
    let eve_ref = &eve_id;
    assert!(
        eventually(CLEANUP, || async move {
            items_naming(store, eve_ref).await == 0
        })
        .await,
        "$disconnect left {} items naming a connection of {} items",
        items_naming(&t.store, &eve_id).await,
        2 + 2 * LIMIT
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_function_logs_a_payload_or_a_token_even_at_trace() {
    // What an operator gets with the template's LogLevel at its most verbose.
    let t = start(|options| {
        options.env.insert("RUST_LOG".into(), "trace".into());
        options.env.insert("SSE_MAX_SECONDS".into(), "1".into());
    })
    .await;
    let marker = format!("payload-marker-{:016x}", rand::random::<u64>());
    let token = t.token("alice", json!({"*": ["subscribe", "publish", "history"]}));
    let mut alice = t.connect(&token).await.expect("handshake accepted");
    let mut bob = t.connect_as("bob").await;
    subscribe(&mut alice, "log:1").await;
    // Published, fanned out, read back by history and by a catch-up, and refused.
    publish(&mut bob, "log:1", "l1", json!({"note": marker})).await;
    assert_eq!(alice.next_of("delta").await["data"]["note"], marker);
    let history = alice
        .request(
            json!({"action": "history", "channel": "log:1", "since": 0}),
            "history",
        )
        .await;
    assert_eq!(history["deltas"][0]["data"]["note"], marker);
    let mut carol = t.connect_as("carol").await;
    carol
        .send(json!({"action": "subscribe", "channel": "log:1", "since": 0}))
        .await;
    assert_eq!(carol.next_of("delta").await["data"]["note"], marker);
    let mut deep = json!(marker);
    for _ in 0..40 {
        deep = json!([deep]);
    }
    let refused = bob
        .request(
            json!({"action": "publish", "channel": "log:1", "id": "l2", "data": deep}),
            "error",
        )
        .await;
    assert_eq!(refused["code"], "bad_request", "{refused}");
    // Over HTTP: a publish with the token in the header, a history page and a stream with
    // it in the query string.
    let http = deltacast_tests::http::Http::new(t.stack.address);
    let published = http
        .post(
            "/v1/channels/log:1/messages",
            Some(&token),
            &json!({"id": "h1", "data": {"note": marker}}),
        )
        .await;
    assert_eq!(published.status, 200, "{:?}", published.body);
    let page = http
        .get(
            &format!("/v1/channels/log:1/messages?since=0&token={token}"),
            None,
        )
        .await;
    assert_eq!(page.body["deltas"][1]["data"]["note"], marker);
    let stream = http
        .get(
            &format!("/v1/channels/log:1/events?since=0&token={token}"),
            None,
        )
        .await;
    assert!(stream.body.as_str().unwrap().contains(&marker));
    for client in [alice, bob, carol] {
        client.close().await;
    }
    // Shutting down waits for every `$disconnect` and ends the processes, whose last
    // lines the gateway forwards as their pipes close.
    t.shutdown().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let logs = String::from_utf8_lossy(&function_logs().lock().unwrap()).into_owned();
    // Lines of the authorizer, the fan-out, (at debug) the message function, and the
    // http function.
    for proof in [
        "connection allowed",
        "fan-out done",
        "bad frame",
        "answered",
    ] {
        assert!(
            logs.contains(proof),
            "the capture misses {proof:?}: {} bytes",
            logs.len()
        );
    }
    let signature = token.rsplit('.').next().unwrap();
    for (what, secret) in [
        ("the payload", marker.as_str()),
        ("a token", signature),
        ("the JWT secret", tokens::secret().as_str()),
    ] {
        if let Some(at) = logs.find(secret) {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            let line = &logs[line_start..line_end];
            panic!(
                "{what} reached the functions' logs: {}",
                &line[..line.len().min(2000)]
            );
        }
    }
}

/// A JWKS endpoint whose keys the test changes, and which it can take down (503).
struct KeyServer {
    url: String,
    keys: Arc<Mutex<Option<Value>>>,
    /// When each fetch came, and whether it was answered with keys.
    fetches: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl KeyServer {
    async fn start() -> Self {
        let keys: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
        let fetches = Arc::new(Mutex::new(Vec::new()));
        let (served, log) = (keys.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let (served, log) = (served.clone(), log.clone());
                async move {
                    let set = served.lock().unwrap().clone();
                    log.lock().unwrap().push((Instant::now(), set.is_some()));
                    set.map(axum::Json)
                        .ok_or(axum::http::StatusCode::SERVICE_UNAVAILABLE)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, keys, fetches }
    }

    /// Serves these keys (`None`: the server is down).
    fn serve(&self, keys: Option<Value>) {
        *self.keys.lock().unwrap() = keys;
    }

    fn fetches(&self) -> usize {
        self.fetches.lock().unwrap().len()
    }

    /// When the last fetch that found the server down came.
    fn last_failure(&self) -> Option<Instant> {
        let fetches = self.fetches.lock().unwrap();
        fetches.iter().rev().find(|(_, ok)| !ok).map(|(at, _)| *at)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_jwks_keys_outlive_an_outage_and_the_set_refreshes_after_its_cache_period() {
    const CACHE: Duration = Duration::from_secs(2);
    let pem = std::fs::read(
        deltacast_tests::workspace_root().join("tests/fixtures/keys/rsa-test-key.pem"),
    )
    .unwrap();
    let key = EncodingKey::from_rsa_pem(&pem).unwrap();
    let public =
        serde_json::to_value(Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
    // One RSA key under two key ids: a rotation from "old" to "new".
    let set_of = |kid: &str| {
        let mut jwk = public.clone();
        jwk["kid"] = json!(kid);
        json!({"keys": [jwk]})
    };
    let token_of = |kid: &str| {
        let claims = json!({"sub": "carol", "exp": jsonwebtoken::get_current_timestamp() + 300,
                            "iss": "https://idp.example", "aud": "my-app",
                            "channels": {"*": ["subscribe"]}});
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let server = KeyServer::start().await;
    server.serve(Some(set_of("old")));
    let t = start(|options| {
        for (name, value) in [
            ("JwtAlgorithm", "RS256"),
            ("JwtJwksUrl", server.url.as_str()),
            ("JwtIssuer", "https://idp.example"),
            ("JwtAudience", "my-app"),
        ] {
            options.parameters.insert(name.into(), value.into());
        }
        options
            .env
            .insert("JWT_JWKS_CACHE_SECONDS".into(), CACHE.as_secs().to_string());
        // One authorizer instance, so one cache (each Lambda instance has its own).
        options.max_instances = 1;
    })
    .await;
    let connects = |kid: &'static str| {
        let t = &t;
        let token = token_of(kid);
        async move {
            match t.connect(&token).await {
                Ok(client) => {
                    client.close().await;
                    Ok(())
                }
                Err(refused) => Err(refused.status),
            }
        }
    };

    assert_eq!(connects("old").await, Ok(()));
    assert_eq!(server.fetches(), 1, "fetched on first use");

    // Down, and the cache period over: the refresh fails, the known key still works, and
    // the server is asked again at most every 5 s (docs/security.md), not on every connect.
    const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
    server.serve(None);
    tokio::time::sleep(CACHE + Duration::from_millis(200)).await;
    assert_eq!(
        connects("old").await,
        Ok(()),
        "a known key during the outage"
    );
    assert_eq!(server.fetches(), 2, "a refresh was tried");
    let first_failure = server.last_failure().expect("the refresh met the outage");
    assert_eq!(connects("old").await, Ok(()));
    assert_eq!(connects("unknown").await, Err(401));
    let allowed = 2 + (first_failure.elapsed().as_millis() / RETRY_AFTER_FAILURE.as_millis());
    assert!(
        server.fetches() as u128 <= allowed,
        "{} fetches within {:?} of the outage",
        server.fetches(),
        first_failure.elapsed()
    );

    // Back, with the key rotated: once the pause after the last failure is over, the
    // stale set is fetched again, so the retired key no longer connects.
    server.serve(Some(set_of("new")));
    let last_failure = server.last_failure().expect("failures");
    tokio::time::sleep(
        RETRY_AFTER_FAILURE.saturating_sub(last_failure.elapsed()) + Duration::from_millis(200),
    )
    .await;
    let before = server.fetches();
    assert_eq!(connects("old").await, Err(401), "the retired key");
    assert_eq!(server.fetches(), before + 1, "refreshed once");
    assert_eq!(connects("new").await, Ok(()), "the new key");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maximum_connection_duration_closes_and_runs_disconnect() {
    // Long enough for the stack's readiness probe, whose connection it caps too.
    const CAP: Duration = Duration::from_secs(10);
    let t = start(|options| options.gateway.max_connection_duration = CAP).await;
    let opened = Instant::now();
    let mut alice = t.connect_as("alice").await;
    let id = alice.connection_id().await;
    assert_eq!(items_naming(&t.store, &id).await, 2, "meta and liveness");
    let disconnected = t
        .stack
        .gateway()
        .stats()
        .disconnected
        .load(Ordering::SeqCst);
    assert_eq!(alice.closed().await, Some(CloseCode::Away));
    let lived = opened.elapsed();
    assert!(
        lived >= CAP - Duration::from_millis(100) && lived < CAP + Duration::from_secs(5),
        "closed after {lived:?}"
    );
    let store = &t.store;
    let id_ref = &id;
    assert!(
        eventually(
            CLEANUP,
            || async move { items_naming(store, id_ref).await == 0 }
        )
        .await,
        "$disconnect did not remove the connection"
    );
    let stats = t.stack.gateway().stats();
    assert!(
        eventually(Duration::from_secs(5), || async {
            stats.disconnected.load(Ordering::SeqCst) == disconnected + 1
        })
        .await,
        "$disconnect ran once"
    );
    t.shutdown().await;
}
