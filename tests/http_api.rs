//! The HTTP API through the local stack: the real `http` binary behind the gateway's
//! `/v1/`, invoked in streaming mode through the local Runtime API. Publishes over HTTP
//! and over the socket share one channel order; a retried id is acknowledged once; a
//! batch answers each publish on its own; history pages; state and presence read; and an
//! event stream read by an EventSource client resumes after a forced disconnect and after
//! its clean end with nothing lost or repeated.

use std::collections::BTreeSet;
use std::time::Duration;

use deltacast_tests::http::{Http, Proxy};
use deltacast_tests::stack::{Client, TestStack, start_stack, start_stack_with};
use eventsource_client::{self as es, Client as _};
use futures::StreamExt;
use serde_json::{Value, json};

/// Everything on every channel.
fn all() -> Value {
    json!({"*": ["subscribe", "publish", "history", "presence"]})
}

fn http(stack: &TestStack) -> Http {
    Http::new(stack.stack.address)
}

/// Publishes `data` as `id` on `channel` over HTTP.
async fn publish(
    http: &Http,
    token: &str,
    channel: &str,
    id: &str,
    data: Value,
) -> deltacast_tests::http::Answer {
    http.post(
        &format!("/v1/channels/{channel}/messages"),
        Some(token),
        &json!({"id": id, "data": data}),
    )
    .await
}

/// Publishes as a client that honours `429`: sent again with the same id after the
/// answer's `retryAfterMs`, up to ten times (a busy channel on a loaded machine refuses
/// publishes that waited too long; the promise under test is what the retries get).
async fn publish_retrying(
    http: &Http,
    token: &str,
    channel: &str,
    id: &str,
    data: Value,
) -> deltacast_tests::http::Answer {
    let mut answer = publish(http, token, channel, id, data.clone()).await;
    for _ in 0..10 {
        if answer.status != 429 {
            break;
        }
        let wait = answer.body["retryAfterMs"].as_u64().unwrap_or(1000);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
        answer = publish(http, token, channel, id, data.clone()).await;
    }
    answer
}

/// The deltas `client` receives until it has `count`.
async fn deltas(client: &mut Client, count: usize) -> Vec<Value> {
    let mut got = Vec::new();
    while got.len() < count {
        let frame = client.next().await.expect("socket open");
        if frame["type"] == "delta" {
            got.push(frame);
        }
    }
    got
}

#[tokio::test]
async fn http_publishes_reach_socket_subscribers_in_seq_order_beside_socket_publishes() {
    let stack = start_stack().await;
    let http = http(&stack);
    let server = stack.token("orders-service", all());
    let mut subscriber = stack.connect_as("watcher").await;
    subscriber
        .request(
            json!({"action": "subscribe", "channel": "orders:42"}),
            "subscribed",
        )
        .await;
    let mut app = stack.connect_as("app").await;
    // GIVEN publishes alternating between HTTP and the socket
    for i in 0..10 {
        let answer = publish(
            &http,
            &server,
            "orders:42",
            &format!("h{i}"),
            json!({"n": i}),
        )
        .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["seq"], 2 * i + 1);
        assert_eq!(answer.body["id"], format!("h{i}"));
        let ack = app
            .request(
                json!({"action": "publish", "channel": "orders:42", "id": format!("s{i}"), "data": i}),
                "ack",
            )
            .await;
        assert_eq!(ack["seq"], 2 * i + 2);
        assert_eq!(ack["epoch"], answer.body["epoch"]);
    }
    // THEN the subscriber gets all twenty, in seq order, each from its publisher
    let got = deltas(&mut subscriber, 20).await;
    let seqs: Vec<u64> = got.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(got[0]["from"], "orders-service");
    assert_eq!(got[0]["data"], json!({"n": 0}));
    assert_eq!(got[1]["from"], "app");
    stack.shutdown().await;
}

#[tokio::test]
async fn a_retried_http_publish_is_acknowledged_once_even_while_the_channel_is_busy() {
    let stack = start_stack_with(|options| options.max_instances = 8).await;
    let http = http(&stack);
    let token = stack.token("svc", all());
    // GIVEN 24 publishes at once on one channel, each sent twice at the same moment (the
    // contention hands some to the sequencer, whose answer the request waits for), a
    // 429 sent again after its retryAfterMs as clients do
    let sends = (0..48).map(|i| {
        let (http, token) = (http.clone(), token.clone());
        async move {
            let id = format!("m{}", i / 2);
            let answer = publish_retrying(&http, &token, "hot:1", &id, json!(i / 2)).await;
            (id, answer)
        }
    });
    let answers = futures::future::join_all(sends).await;
    // THEN both copies of each id answer the same seq, and the seqs are 1..=24
    let mut seqs = std::collections::BTreeMap::new();
    for (id, answer) in &answers {
        assert_eq!(answer.status, 200, "{id}: {:?}", answer.body);
        let seq = answer.body["seq"].as_u64().unwrap();
        if let Some(first) = seqs.insert(id.clone(), seq) {
            assert_eq!(first, seq, "{id} acknowledged twice with different seqs");
        }
    }
    let distinct: BTreeSet<u64> = seqs.values().copied().collect();
    assert_eq!(distinct, (1..=24).collect());
    // (and the sequencer stored some of them: those requests waited for its answer)
    let sequencer = stack.stack.functions()["SequencerFunction"].stats();
    assert!(
        sequencer.invocations > 0,
        "no publish went to the sequencer"
    );
    // AND a retry later gets the same ack, and stores nothing
    let again = publish_retrying(&http, &token, "hot:1", "m3", json!("changed")).await;
    assert_eq!(
        again.body["seq"], seqs["m3"],
        "{}: {}",
        again.status, again.body
    );
    let history = http
        .get(
            "/v1/channels/hot:1/messages?since=0&limit=100",
            Some(&token),
        )
        .await;
    assert_eq!(history.body["deltas"].as_array().unwrap().len(), 24);
    assert_eq!(history.body["seq"], 24);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_batch_answers_each_publish_on_its_own_and_writes_only_the_accepted() {
    let stack = start_stack().await;
    let http = http(&stack);
    let token = stack.token("svc", json!({"news:*": ["publish", "history"]}));
    let batch = json!({"messages": [
        {"channel": "news:a", "id": "1", "data": "first"},
        {"channel": "news:a", "id": "2", "data": "guarded", "expectSeq": 0},
        {"channel": "news:b", "id": "1", "data": "other channel"},
        {"channel": "secret:x", "id": "1", "data": "forbidden"},
        {"channel": "news:a", "id": "3", "data": "third", "expectSeq": 1},
        {"channel": "news:a", "id": "4"},
        "not an object",
    ]});
    let answer = http.post("/v1/messages", Some(&token), &batch).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let results = answer.body["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [200, 409, 200, 403, 200, 400, 400]);
    assert_eq!(results[0]["seq"], 1);
    assert_eq!(results[1]["code"], "conflict");
    assert_eq!(results[1]["seq"], 1, "the conflict tells the head");
    assert_eq!(results[2]["seq"], 1);
    assert_eq!(results[3]["code"], "forbidden");
    assert_eq!(
        results[4]["seq"], 2,
        "a channel's publishes go in the batch's order"
    );
    assert!(
        results[5]["detail"].as_str().unwrap().contains("data"),
        "{}",
        results[5]
    );
    // Nothing of the refused ones was stored.
    let history = http.get("/v1/channels/news:a/messages", Some(&token)).await;
    let ids: Vec<&str> = history.body["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["1", "3"]);
    // A batch over the limit is refused whole, naming the limit.
    let big: Vec<Value> = (0..101)
        .map(|i| json!({"channel": "news:a", "id": format!("b{i}"), "data": i}))
        .collect();
    let refused = http
        .post("/v1/messages", Some(&token), &json!({"messages": big}))
        .await;
    assert_eq!(refused.status, 413);
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("1 to 100")
    );
    let history = http.get("/v1/channels/news:a/messages", Some(&token)).await;
    assert_eq!(
        history.body["seq"], 2,
        "nothing of the refused batch was written"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn history_pages_over_http_as_on_the_socket() {
    let stack = start_stack().await;
    let http = http(&stack);
    let token = stack.token("svc", all());
    for i in 1..=5 {
        publish(&http, &token, "log:1", &format!("m{i}"), json!(i)).await;
    }
    let page = http
        .get("/v1/channels/log:1/messages?since=1&limit=2", Some(&token))
        .await;
    assert_eq!(page.status, 200);
    let seqs = |page: &Value| -> Vec<u64> {
        page["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["seq"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seqs(&page.body), [2, 3]);
    assert_eq!(page.body["more"], true);
    let next = page.body["next"].as_u64().unwrap();
    let epoch = page.body["epoch"].as_str().unwrap().to_owned();
    let rest = http
        .get(
            &format!("/v1/channels/log:1/messages?since={next}&epoch={epoch}&limit=10"),
            Some(&token),
        )
        .await;
    assert_eq!(seqs(&rest.body), [4, 5]);
    assert_eq!(rest.body["more"], false);
    // An epoch that is not the live one: the page starts at the live epoch's beginning.
    let other = http
        .get(
            "/v1/channels/log:1/messages?since=4&epoch=gone&limit=10",
            Some(&token),
        )
        .await;
    assert_eq!(seqs(&other.body), [1, 2, 3, 4, 5]);
    assert_eq!(other.body["epoch"], epoch.as_str());
    let bad = http
        .get("/v1/channels/log:1/messages?since=-1", Some(&token))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["detail"].as_str().unwrap().contains("`since`"));
    stack.shutdown().await;
}

#[tokio::test]
async fn state_and_presence_are_read_over_http() {
    let stack = start_stack().await;
    let http = http(&stack);
    let token = stack.token("svc", all());
    let voter = stack.token("voter", all());
    let mut client = stack.connect(&voter).await.expect("handshake accepted");
    client
        .request(
            json!({"action": "update", "channel": "state:poll", "id": "v1", "ops": [{"op": "inc", "path": "/yes", "by": 1}]}),
            "updated",
        )
        .await;
    client
        .request(
            json!({"action": "presence", "channel": "room:1", "op": "enter", "data": {"name": "Ada"}, "id": "p"}),
            "presence",
        )
        .await;
    let folded = deltacast_tests::stack::eventually(Duration::from_secs(10), || {
        let http = http.clone();
        let token = token.clone();
        async move {
            http.get("/v1/channels/state:poll/state", Some(&token))
                .await
                .body["value"]
                == json!({"yes": 1})
        }
    })
    .await;
    assert!(
        folded,
        "the state channel's document is readable once folded"
    );
    let state = http
        .get("/v1/channels/state:poll/state", Some(&token))
        .await
        .body;
    assert_eq!(state["channel"], "state:poll");
    assert!(state["version"].as_u64().unwrap() >= 1);
    let members = http.get("/v1/channels/room:1/presence", Some(&token)).await;
    assert_eq!(members.status, 200, "{:?}", members.body);
    let list = members.body["members"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["data"], json!({"name": "Ada"}));
    // A state read of a log channel is refused as on the socket.
    let wrong = http.get("/v1/channels/room:1/state", Some(&token)).await;
    assert_eq!(wrong.status, 400);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_request_signed_with_aws_credentials_publishes_as_a_backend() {
    let stack = start_stack().await;
    let http = http(&stack);
    let signed = "AWS4-HMAC-SHA256 Credential=AKIDORDERS/20261202/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=0";
    let answer = http
        .send(
            "POST",
            "/v1/channels/orders:7/messages",
            None,
            &[
                ("authorization", signed),
                ("content-type", "application/json"),
            ],
            Some(json!({"id": "paid", "data": {"status": "paid"}}).to_string()),
        )
        .await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let token = stack.token("reader", all());
    let history = http
        .get("/v1/channels/orders:7/messages", Some(&token))
        .await;
    assert_eq!(
        history.body["deltas"][0]["from"],
        "iam:arn:aws:iam::000000000000:user/AKIDORDERS"
    );
    stack.shutdown().await;
}

/// An EventSource client of `url`, reconnecting after 100 ms.
fn event_source(url: &str, token: &str) -> impl es::Client {
    let transport = launchdarkly_sdk_transport::HyperTransport::builder()
        .connect_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(20))
        .build_http()
        .expect("a transport");
    es::ClientBuilder::for_url(url)
        .expect("a URL")
        .header("Authorization", &format!("Bearer {token}"))
        .expect("a header")
        .reconnect(
            es::ReconnectOptions::reconnect(true)
                .retry_initial(false)
                .delay(Duration::from_millis(100))
                .backoff_factor(1)
                .delay_max(Duration::from_millis(200))
                .build(),
        )
        .build_with_transport(transport)
}

#[tokio::test]
async fn an_event_stream_resumes_after_a_forced_disconnect_and_its_clean_end_without_loss_or_duplicates()
 {
    let stack = start_stack_with(|options| {
        options.max_instances = 8;
        for (name, value) in [
            ("SSE_MAX_SECONDS", "3"),
            ("SSE_POLL_MS", "100"),
            ("SSE_RETRY_MS", "100"),
        ] {
            options.env.insert(name.into(), value.into());
        }
    })
    .await;
    let http = http(&stack);
    let token = stack.token("svc", all());
    let proxy = Proxy::start(stack.stack.address).await;
    let url = format!("http://{}/v1/channels/feed:1/events", proxy.address);
    let client = event_source(&url, &token);
    let mut events = client.stream();
    // GIVEN a reader subscribed to an empty channel
    let first = loop {
        match events.next().await.expect("a stream").expect("no error") {
            es::SSE::Event(event) => break event,
            _ => continue,
        }
    };
    assert_eq!(first.event_type, "subscribed");
    assert_eq!(first.id.as_deref(), Some("0"));
    // WHEN 60 messages are published over 7.5 s while the connection is cut twice and the
    // stream ends by itself (SSE_MAX_SECONDS) twice
    let publisher = {
        let (http, token) = (http.clone(), token.clone());
        tokio::spawn(async move {
            for i in 1..=60 {
                let answer = publish(&http, &token, "feed:1", &format!("m{i}"), json!(i)).await;
                assert_eq!(answer.status, 200);
                tokio::time::sleep(Duration::from_millis(125)).await;
            }
        })
    };
    let reader = async {
        let mut seqs = Vec::new();
        let mut subscribed = Vec::new();
        let started = tokio::time::Instant::now();
        let mut cuts = [Duration::from_millis(1500), Duration::from_millis(5000)]
            .into_iter()
            .peekable();
        while seqs.last() != Some(&60) {
            if cuts.peek().is_some_and(|at| started.elapsed() >= *at) {
                cuts.next();
                proxy.cut();
            }
            let next = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
            let Ok(item) = next else { continue };
            match item.expect("the client keeps going") {
                Ok(es::SSE::Event(event)) if event.event_type == "delta" => {
                    let delta: Value = serde_json::from_str(&event.data).expect("JSON data");
                    let seq = delta["seq"].as_u64().unwrap();
                    assert_eq!(
                        event.id.as_deref(),
                        Some(format!("{}:{seq}", delta["epoch"].as_str().unwrap()).as_str())
                    );
                    seqs.push(seq);
                }
                Ok(es::SSE::Event(event)) if event.event_type == "subscribed" => {
                    subscribed.push(serde_json::from_str::<Value>(&event.data).unwrap());
                }
                Ok(_) => {}
                // A cut or a clean end: the client reconnects by itself with Last-Event-ID.
                Err(_) => {}
            }
        }
        (seqs, subscribed)
    };
    let (seqs, subscribed) = tokio::time::timeout(Duration::from_secs(40), reader)
        .await
        .expect("every message arrives within 40 s");
    publisher.await.unwrap();
    // THEN every message arrived exactly once, in order, across at least four streams
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());
    assert!(
        subscribed.len() >= 3,
        "reconnected {} times",
        subscribed.len()
    );
    assert!(
        subscribed.iter().all(|s| s["recovered"] == true),
        "every resume recovered: {subscribed:?}"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn an_event_stream_beats_and_ends_cleanly_with_a_retry_hint_before_its_limit() {
    let stack = start_stack_with(|options| {
        for (name, value) in [("SSE_MAX_SECONDS", "2"), ("SSE_HEARTBEAT_SECONDS", "1")] {
            options.env.insert(name.into(), value.into());
        }
    })
    .await;
    let http = http(&stack);
    let token = stack.token("svc", all());
    let started = std::time::Instant::now();
    let answer = http
        .get(&format!("/v1/channels/quiet:1/events?token={token}"), None)
        .await;
    let took = started.elapsed();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "text/event-stream");
    let text = answer
        .body
        .as_str()
        .unwrap_or_else(|| panic!("a text body: {:?}", answer.body));
    assert!(text.starts_with("retry: 1000\n\n"), "{text}");
    assert!(text.contains("event: subscribed\n"), "{text}");
    assert!(text.contains(": heartbeat\n\n"), "{text}");
    assert!(text.ends_with("retry: 1000\n\n"), "{text}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    // A reader without subscribe on the channel is refused before anything streams.
    let reader = stack.token("reader", json!({"other:*": ["subscribe"]}));
    let refused = http.get("/v1/channels/quiet:1/events", Some(&reader)).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.header("content-type"), "application/problem+json");
    let bad = http
        .send(
            "GET",
            "/v1/channels/quiet:1/events",
            Some(&token),
            &[("last-event-id", "nonsense")],
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["detail"]
            .as_str()
            .unwrap()
            .starts_with("Last-Event-ID")
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn an_event_stream_reads_past_expired_deltas_and_a_stale_epoch_and_ends_with_its_token() {
    let stack = start_stack_with(|options| {
        for (name, value) in [("SSE_POLL_MS", "100"), ("SSE_HEARTBEAT_SECONDS", "1")] {
            options.env.insert(name.into(), value.into());
        }
    })
    .await;
    let http = http(&stack);
    // GIVEN a channel whose first 1,000 deltas have expired (TTL has not deleted them
    // yet: more than one read's budget), then 3 live ones
    let now = deltacast::clock::now_secs();
    deltacast_tests::write_history(&stack.store, "old:1", "e1", 1..=1000, now - 60).await;
    deltacast_tests::write_history(&stack.store, "old:1", "e1", 1001..=1003, now + 3600).await;
    // WHEN a reader whose token expires in 4 s resumes from the start of the epoch
    let token = stack.token_expiring_at("reader", all(), deltacast::clock::now_secs() + 4);
    let url = format!("/v1/channels/old:1/events?since=0&epoch=e1&token={token}");
    let read = http.get(&url, None);
    let answer = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the stream gets past the expired deltas and ends");
    let text = answer
        .body
        .as_str()
        .unwrap_or_else(|| panic!("a text body: {:?}", answer.body));
    // THEN it gets the live deltas in order, told it missed the expired ones, and ends
    // with the token's expiry instead of a retry hint
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["e1:0", "e1:1001", "e1:1002", "e1:1003"], "{text}");
    assert!(text.contains("\"recovered\":false"), "{text}");
    assert!(text.contains("event: token_expired\n"), "{text}");
    assert!(!text.trim_end().ends_with("retry: 1000"), "{text}");
    // AND a reader resuming with an epoch the channel no longer has gets the live epoch
    // from its start, not recovered
    let token = stack.token("reader", all());
    deltacast_tests::write_history(&stack.store, "new:1", "e2", 1..=2, now + 3600).await;
    let proxy = Proxy::start(stack.stack.address).await;
    let url = format!(
        "http://{}/v1/channels/new:1/events?since=7&epoch=gone",
        proxy.address
    );
    let mut events = event_source(&url, &token).stream();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 3 {
        let item = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("3 events within 10 s; got {got:?}"))
            .expect("a stream");
        match item {
            Ok(es::SSE::Event(event)) => got.push((event.event_type, event.data)),
            Ok(_) => {}
            Err(error) => panic!("the stream failed: {error:?}"),
        }
    }
    assert_eq!(got[0].0, "subscribed");
    assert!(got[0].1.contains("\"recovered\":false"), "{got:?}");
    assert_eq!((got[1].0.as_str(), got[2].0.as_str()), ("delta", "delta"));
    assert!(got[1].1.contains("\"seq\":1"), "{got:?}");
    stack.shutdown().await;
}
