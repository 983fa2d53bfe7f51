//! Parses one client frame, checks who sent it, and dispatches it to its action.
//! A bad frame is answered with an error frame that names the problem; it never closes
//! the connection and never writes anything.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use deltacast::auth::Identity;
use deltacast::clock;
use deltacast::config::Settings;
use deltacast::protocol::{ClientMessage, ErrorCode, ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::Store;
use lambda_runtime::Error;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::actions::{self, ActionError};

/// What every invocation shares: the store and the settings.
pub struct App {
    /// The table.
    pub store: Store,
    /// Limits and lifetimes.
    pub settings: Settings,
}

impl App {
    /// The retry policy for replies (`PUSH_RETRY_ATTEMPTS`, `PUSH_RETRY_BASE_MS`).
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.settings.push_attempts,
            base: self.settings.push_backoff_base,
        }
    }
}

/// Who sent a frame, and when.
pub struct Sender<'a> {
    /// API Gateway's connection id.
    pub connection_id: &'a str,
    /// The identity the authorizer verified at `$connect`.
    pub identity: Identity,
    /// When the connection opened, Unix ms.
    pub connected_at: u64,
    /// When API Gateway received the frame (`requestTimeEpoch`), Unix ms.
    pub received_at: u64,
    /// How hard to try each reply.
    pub retry: RetryPolicy,
}

/// The Management API endpoint of the API and stage a request came through.
pub fn endpoint_of(request: &ApiGatewayWebsocketProxyRequest) -> String {
    let context = &request.request_context;
    format!(
        "https://{}/{}",
        context.domain_name.as_deref().unwrap_or_default(),
        context.stage.as_deref().unwrap_or_default()
    )
}

/// Handles one frame. Always answers 200: outcomes reach the client as frames.
pub async fn handle<P: Push>(
    request: ApiGatewayWebsocketProxyRequest,
    app: &App,
    push: &P,
) -> Result<ApiGatewayProxyResponse, Error> {
    let context = &request.request_context;
    let connection_id = context.connection_id.as_deref().unwrap_or_default();
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = 200;

    let identity = match Identity::from_context(&context.authorizer.fields) {
        Ok(identity) => identity,
        Err(reason) => {
            error!(connection_id, %reason, "message without a verified identity");
            let frame = ErrorFrame::new(ErrorCode::Forbidden, "connection is not authenticated");
            reply(
                push,
                connection_id,
                &ServerMessage::Error(&frame),
                app.retry(),
            )
            .await;
            return Ok(response);
        }
    };
    let body = request.body.as_deref().unwrap_or_default();
    let message = match ClientMessage::parse(body, &app.settings.frame_limits) {
        Ok(message) => message,
        Err(frame) => {
            debug!(connection_id, code = ?frame.code, "bad frame");
            reply(
                push,
                connection_id,
                &ServerMessage::Error(&frame),
                app.retry(),
            )
            .await;
            return Ok(response);
        }
    };
    let span = info_span!(
        "action",
        connection_id,
        sub = %identity.sub,
        action = message.action(),
        channel = message.channel().map(|c| c.as_str()).unwrap_or(""),
    );
    let sender = Sender {
        connection_id,
        identity,
        // As `$connect` does: a missing `connectedAt` must not date the connection (and
        // so its subscriptions' expiry) to 1970.
        connected_at: u64::try_from(context.connected_at)
            .ok()
            .filter(|at| *at > 0)
            .unwrap_or_else(clock::now_ms),
        received_at: u64::try_from(context.request_time_epoch)
            .ok()
            .filter(|at| *at > 0)
            .unwrap_or_else(clock::now_ms),
        retry: app.retry(),
    };
    async {
        if let Err(err) = dispatch(&message, &sender, app, push).await {
            let frame = match err {
                ActionError::Refused(frame) => *frame,
                ActionError::Store(err) => {
                    error!(error = %err, "storage failed");
                    ErrorFrame::new(ErrorCode::Internal, "internal error; retry the request")
                }
                ActionError::Push(PushError::Gone) => return,
                ActionError::Push(err) => {
                    warn!(error = %err, "reply failed");
                    return;
                }
            };
            reply(
                push,
                connection_id,
                &ServerMessage::Error(&frame.about(&message)),
                sender.retry,
            )
            .await;
        }
    }
    .instrument(span)
    .await;
    Ok(response)
}

async fn dispatch<P: Push>(
    message: &ClientMessage,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    if sender.identity.exp < clock::now_secs() {
        return Err(ActionError::refused(
            ErrorCode::Forbidden,
            "token expired; reconnect with a fresh token",
        ));
    }
    match message {
        ClientMessage::Subscribe {
            channel,
            since,
            epoch,
            id,
        } => {
            actions::subscribe::run(
                sender,
                app,
                push,
                channel,
                *since,
                epoch.as_deref(),
                id.as_ref(),
            )
            .await
        }
        ClientMessage::Unsubscribe { channel, id } => {
            actions::unsubscribe(sender, app, push, channel, id.as_ref()).await
        }
        ClientMessage::Publish {
            channel,
            id,
            data,
            expect_seq,
        } => actions::publish::run(sender, app, push, channel, id, data, *expect_seq).await,
        ClientMessage::History {
            channel,
            since,
            limit,
            id,
        } => actions::history::run(sender, app, push, channel, *since, *limit, id.as_ref()).await,
        ClientMessage::Ping { id } => actions::ping(sender, app, push, id.as_ref()).await,
    }
}

/// Sends a frame to a connection, with retries; failures are logged, never raised.
pub async fn reply<P: Push>(
    push: &P,
    connection_id: &str,
    message: &ServerMessage<'_>,
    retry: RetryPolicy,
) {
    match post_with_retry(push, connection_id, &message.to_json(), retry).await {
        Ok(()) | Err(PushError::Gone) => {}
        Err(err) => warn!(connection_id, error = %err, "reply failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::auth::Capabilities;
    use deltacast::config::Env;
    use deltacast::protocol::Channel;
    use deltacast_tests::push::RecordingPush;
    use deltacast_tests::{all_items, events, fresh_store};
    use serde_json::{Value, json};

    const CONN: &str = "conn-A";

    type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

    /// The table's items but the connections' liveness items, which hold the rate-limit
    /// buckets: a publish that reaches storage takes a token even when it is refused.
    fn except_live(mut items: Vec<Item>) -> Vec<Item> {
        items.retain(|item| !item["sk"].as_s().is_ok_and(|sk| sk == "live"));
        items
    }

    struct World {
        app: App,
        push: RecordingPush,
        alice: Identity,
    }

    fn identity(sub: &str, caps: Value) -> Identity {
        Identity {
            sub: sub.into(),
            capabilities: Capabilities::from_json(&caps.to_string()).unwrap(),
            exp: clock::now_secs() + 3600,
        }
    }

    async fn world_with(vars: &[(&str, &str)]) -> World {
        let store = fresh_store().await;
        let mut pairs = vec![("TABLE_NAME".to_owned(), store.table().to_owned())];
        pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let settings = Settings::from(&Env::from_pairs(pairs)).unwrap();
        store
            .put_connection(&events::new_connection(CONN, "alice"))
            .await
            .unwrap();
        World {
            app: App { store, settings },
            push: RecordingPush::new(),
            alice: identity(
                "alice",
                json!({"chat:*": ["subscribe", "publish", "history"], "news": ["subscribe"]}),
            ),
        }
    }

    async fn world() -> World {
        world_with(&[]).await
    }

    impl World {
        /// Sends a frame as alice on CONN; returns the frames CONN received for it.
        async fn send(&self, body: Value) -> Vec<Value> {
            self.send_as(CONN, &self.alice, &body.to_string()).await
        }

        async fn send_as(&self, connection_id: &str, who: &Identity, body: &str) -> Vec<Value> {
            self.push.clear();
            let response = handle(
                events::message(connection_id, who, body),
                &self.app,
                &self.push,
            )
            .await
            .unwrap();
            assert_eq!(response.status_code, 200);
            self.push.frames(connection_id)
        }

        async fn publish(&self, channel: &str, id: &str, data: Value) -> Value {
            let frames = self
                .send(json!({"action": "publish", "channel": channel, "id": id, "data": data}))
                .await;
            assert_eq!(frames.len(), 1, "{frames:?}");
            frames[0].clone()
        }

        async fn delta_items(&self) -> usize {
            all_items(&self.app.store)
                .await
                .iter()
                .filter(|item| item["sk"].as_s().unwrap().starts_with("d#"))
                .count()
        }
    }

    #[tokio::test]
    async fn publish_acks_gap_free_seqs_from_one() {
        let w = world().await;
        let first = w.publish("chat:lobby", "m1", json!({"text": "hi"})).await;
        assert_eq!(first["type"], "ack");
        assert_eq!(first["seq"], 1);
        assert_eq!(first["id"], "m1");
        assert_eq!(first["channel"], "chat:lobby");
        let second = w.publish("chat:lobby", "m2", json!(2)).await;
        assert_eq!(second["seq"], 2);
        assert_eq!(second["epoch"], first["epoch"]);
        let other = w.publish("chat:other", "m1", json!(null)).await;
        assert_eq!(other["seq"], 1, "seqs are per channel");
    }

    #[tokio::test]
    async fn republishing_an_id_returns_the_original_ack_and_stores_nothing() {
        let w = world().await;
        let original = w.publish("chat:lobby", "same", json!("a")).await;
        w.publish("chat:lobby", "other", json!("b")).await;
        let again = w.publish("chat:lobby", "same", json!("changed")).await;
        assert_eq!(again, original);
        assert_eq!(w.delta_items().await, 2);
        // The idempotency check comes before expectSeq.
        let guarded = w
            .send(json!({"action": "publish", "channel": "chat:lobby", "id": "same", "data": 1, "expectSeq": 0}))
            .await;
        assert_eq!(guarded[0], original);
    }

    #[tokio::test]
    async fn expect_seq_guards_publishes_and_a_conflict_writes_nothing() {
        let w = world().await;
        let ok = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m1", "data": 1, "expectSeq": 0}))
            .await;
        assert_eq!(ok[0]["seq"], 1);
        let before = all_items(&w.app.store).await;
        let conflict = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m2", "data": 2, "expectSeq": 0}))
            .await;
        assert_eq!(conflict[0]["type"], "error");
        assert_eq!(conflict[0]["code"], "conflict");
        assert_eq!(conflict[0]["seq"], 1, "tells the head");
        assert_eq!(conflict[0]["id"], "m2");
        // The conflict took a rate-limit token (the `live` item); nothing else changed.
        assert_eq!(
            except_live(all_items(&w.app.store).await),
            except_live(before),
            "nothing written but the token"
        );
        let ok = w
            .send(json!({"action": "publish", "channel": "chat:a", "id": "m2", "data": 2, "expectSeq": 1}))
            .await;
        assert_eq!(ok[0]["seq"], 2, "the same id works after the conflict");
    }

    #[tokio::test]
    async fn subscribe_catches_up_from_since_then_confirms() {
        let w = world().await;
        let mut epoch = Value::Null;
        for i in 1..=5 {
            epoch = w
                .publish("chat:lobby", &format!("m{i}"), json!({"n": i}))
                .await["epoch"]
                .clone();
        }
        let frames = w
            .send(json!({"action": "subscribe", "channel": "chat:lobby", "since": 2, "epoch": epoch, "id": "s1"}))
            .await;
        let seqs: Vec<&Value> = frames[..3].iter().map(|f| &f["seq"]).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert!(
            frames[..3]
                .iter()
                .all(|f| f["type"] == "delta" && f["from"] == "alice")
        );
        assert_eq!(frames[0]["data"], json!({"n": 3}));
        assert_eq!(
            frames[3],
            json!({"type": "subscribed", "channel": "chat:lobby", "seq": 5, "epoch": epoch, "recovered": true, "id": "s1"})
        );
        let (subscribers, _) = w
            .app
            .store
            .subscribers_page("chat:lobby", None)
            .await
            .unwrap();
        assert_eq!(subscribers, [CONN]);
    }

    #[tokio::test]
    async fn subscribe_reports_what_cannot_be_recovered() {
        let w = world_with(&[("CATCHUP_LIMIT", "2")]).await;
        for i in 1..=5 {
            w.publish("chat:lobby", &format!("m{i}"), json!(i)).await;
        }
        let epoch = w.app.store.head("chat:lobby").await.unwrap().epoch.unwrap();
        let subscribe = |since: u64, epoch: &str| json!({"action": "subscribe", "channel": "chat:lobby", "since": since, "epoch": epoch});

        let wrong_epoch = w.send(subscribe(2, "not-the-epoch")).await;
        assert_eq!(wrong_epoch.len(), 1, "no deltas from another epoch");
        assert_eq!(wrong_epoch[0]["recovered"], false);

        let too_many = w.send(subscribe(0, &epoch)).await;
        assert_eq!(too_many.len(), 3, "the cap (2) deltas, then subscribed");
        assert_eq!(too_many[2]["recovered"], false);

        let ahead = w.send(subscribe(9, &epoch)).await;
        assert_eq!(ahead[0]["recovered"], false);

        let up_to_date = w.send(subscribe(5, &epoch)).await;
        assert_eq!(
            up_to_date,
            [
                json!({"type": "subscribed", "channel": "chat:lobby", "seq": 5, "epoch": epoch, "recovered": true})
            ]
        );

        let plain = w
            .send(json!({"action": "subscribe", "channel": "chat:quiet"}))
            .await;
        assert_eq!(
            plain,
            [json!({"type": "subscribed", "channel": "chat:quiet", "seq": 0})]
        );
        let fresh = w
            .send(json!({"action": "subscribe", "channel": "chat:quiet", "since": 0}))
            .await;
        assert_eq!(
            fresh[0]["recovered"], true,
            "nothing was ever missed on an empty channel"
        );
        let stale = w
            .send(
                json!({"action": "subscribe", "channel": "chat:quiet", "since": 3, "epoch": "old"}),
            )
            .await;
        assert_eq!(
            stale[0]["recovered"], false,
            "history of that epoch is gone"
        );
    }

    #[tokio::test]
    async fn history_pages_in_order() {
        let w = world().await;
        for i in 1..=5 {
            w.publish("chat:lobby", &format!("m{i}"), json!(i)).await;
        }
        let page = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 1, "limit": 2, "id": "h"}))
            .await;
        assert_eq!(page[0]["type"], "history");
        assert_eq!(page[0]["seq"], 5);
        assert_eq!(page[0]["more"], true);
        assert_eq!(page[0]["id"], "h");
        let seqs: Vec<&Value> = page[0]["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["seq"])
            .collect();
        assert_eq!(seqs, [2, 3]);
        let rest = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 3}))
            .await;
        let seqs: Vec<&Value> = rest[0]["deltas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["seq"])
            .collect();
        assert_eq!(seqs, [4, 5]);
        assert_eq!(rest[0]["more"], false);
    }

    #[tokio::test]
    async fn history_from_the_head_or_beyond_is_an_empty_page() {
        let w = world().await;
        let epoch = w.publish("chat:lobby", "m1", json!(1)).await["epoch"].clone();
        w.publish("chat:lobby", "m2", json!(2)).await;
        for since in [2, 3, 999_999_999_999u64] {
            let page = w
                .send(json!({"action": "history", "channel": "chat:lobby", "since": since}))
                .await;
            assert_eq!(
                page,
                [
                    json!({"type": "history", "channel": "chat:lobby", "epoch": epoch, "seq": 2, "deltas": [], "more": false})
                ],
                "since {since}"
            );
        }
        let too_far = w
            .send(json!({"action": "history", "channel": "chat:lobby", "since": 1_000_000_000_000u64, "id": "h"}))
            .await;
        assert_eq!(
            too_far,
            [
                json!({"type": "error", "code": "bad_request", "message": "since must be a whole number from 0 to 999999999999; got 1000000000000", "id": "h", "channel": "chat:lobby"})
            ]
        );
    }

    #[tokio::test]
    async fn a_request_without_connected_at_subscribes_as_of_now() {
        // GIVEN a frame whose request context lacks `connectedAt`
        let w = world().await;
        let mut request = events::message(
            CONN,
            &w.alice,
            &json!({"action": "subscribe", "channel": "chat:a"}).to_string(),
        );
        request.request_context.connected_at = 0;
        // WHEN it subscribes
        handle(request, &w.app, &w.push).await.unwrap();
        assert_eq!(w.push.frames(CONN)[0]["type"], "subscribed");
        // THEN the subscription lives from now on, and fan-out sees it
        let (subscribers, _) = w.app.store.subscribers_page("chat:a", None).await.unwrap();
        assert_eq!(subscribers, [CONN]);
        let ttl: u64 = all_items(&w.app.store)
            .await
            .iter()
            .find(|item| item["sk"].as_s().is_ok_and(|sk| sk == "s#chat:a"))
            .expect("the connection-side subscription item")["ttl"]
            .as_n()
            .unwrap()
            .parse()
            .unwrap();
        assert!(ttl > clock::now_secs() + 3600, "ttl {ttl}");
    }

    #[tokio::test]
    async fn history_pages_stay_under_the_message_limit() {
        let w = world().await;
        let big = "x".repeat(20 * 1024);
        for i in 1..=10 {
            w.publish("chat:big", &format!("m{i}"), json!(big)).await;
        }
        let page = w
            .send(json!({"action": "history", "channel": "chat:big", "since": 0}))
            .await;
        let text = page[0].to_string();
        assert!(text.len() < 128 * 1024, "page is {} bytes", text.len());
        assert_eq!(page[0]["more"], true);
        assert_eq!(page[0]["deltas"].as_array().unwrap().len(), 5);
    }

    #[tokio::test]
    async fn capabilities_are_checked_on_every_action() {
        let w = world().await;
        let before = all_items(&w.app.store).await;
        for (body, action) in [
            (
                json!({"action": "publish", "channel": "news", "id": "m", "data": 1}),
                "publish",
            ),
            (
                json!({"action": "history", "channel": "news", "since": 0}),
                "history",
            ),
            (
                json!({"action": "subscribe", "channel": "secret"}),
                "subscribe",
            ),
            (
                json!({"action": "subscribe", "channel": "user:bob"}),
                "subscribe",
            ),
        ] {
            let frames = w.send(body).await;
            assert_eq!(frames[0]["code"], "forbidden", "{frames:?}");
            assert!(frames[0]["message"].as_str().unwrap().contains(action));
        }
        // Refused before the rate limit: not even a token is taken.
        assert_eq!(all_items(&w.app.store).await, before, "nothing written");
        let own = w
            .send(json!({"action": "subscribe", "channel": "user:alice"}))
            .await;
        assert_eq!(
            own[0]["type"], "subscribed",
            "a personal channel is readable by its owner"
        );
    }

    #[tokio::test]
    async fn bad_frames_are_answered_and_write_nothing() {
        let w = world().await;
        let before = all_items(&w.app.store).await;
        for body in [
            "not json",
            "[]",
            r#"{"action":"fly"}"#,
            r#"{"action":"publish","channel":"chat:a","data":1}"#,
            r#"{"action":"publish","channel":"bad channel","id":"m","data":1}"#,
            r#"{"action":"subscribe","channel":"chat:a","since":"yesterday"}"#,
            r#"{"action":"subscribe","channel":"chat:a","since":1000000000000}"#,
            r#"{"action":"history","channel":"chat:a","since":1000000000000}"#,
            r#"{"action":"publish","channel":"chat:a","id":"m","data":1,"expectSeq":1000000000000}"#,
        ] {
            let frames = w.send_as(CONN, &w.alice, body).await;
            assert_eq!(frames.len(), 1);
            assert_eq!(frames[0]["type"], "error");
            assert_eq!(frames[0]["code"], "bad_request", "{body}");
        }
        let big = json!({"action": "publish", "channel": "chat:a", "id": "m", "data": "x".repeat(25 * 1024)});
        assert_eq!(w.send(big).await[0]["code"], "too_large");
        assert_eq!(all_items(&w.app.store).await, before, "nothing written");
    }

    #[tokio::test]
    async fn an_expired_token_can_no_longer_act() {
        let w = world().await;
        let mut expired = w.alice.clone();
        expired.exp = clock::now_secs() - 1;
        let frames = w
            .send_as(CONN, &expired, r#"{"action":"ping","id":"p"}"#)
            .await;
        assert_eq!(frames[0]["code"], "forbidden");
        assert_eq!(frames[0]["id"], "p");
    }

    #[tokio::test]
    async fn subscriptions_per_connection_are_limited() {
        let w = world_with(&[("MAX_SUBSCRIPTIONS", "2")]).await;
        for channel in ["chat:1", "chat:2"] {
            assert_eq!(
                w.send(json!({"action": "subscribe", "channel": channel}))
                    .await[0]["type"],
                "subscribed"
            );
        }
        let again = w
            .send(json!({"action": "subscribe", "channel": "chat:2"}))
            .await;
        assert_eq!(
            again[0]["type"], "subscribed",
            "re-subscribing is not a new subscription"
        );
        let third = w
            .send(json!({"action": "subscribe", "channel": "chat:3"}))
            .await;
        assert_eq!(third[0]["code"], "bad_request");
        assert!(
            third[0]["message"]
                .as_str()
                .unwrap()
                .contains("(2, MAX_SUBSCRIPTIONS)")
        );
        w.send(json!({"action": "unsubscribe", "channel": "chat:1"}))
            .await;
        assert_eq!(
            w.send(json!({"action": "subscribe", "channel": "chat:3"}))
                .await[0]["type"],
            "subscribed"
        );
    }

    #[tokio::test]
    async fn unsubscribe_stops_delivery_and_ping_answers() {
        let w = world().await;
        w.send(json!({"action": "subscribe", "channel": "chat:a"}))
            .await;
        let frames = w
            .send(json!({"action": "unsubscribe", "channel": "chat:a", "id": "u"}))
            .await;
        assert_eq!(
            frames,
            [json!({"type": "unsubscribed", "channel": "chat:a", "id": "u"})]
        );
        let (subscribers, _) = w.app.store.subscribers_page("chat:a", None).await.unwrap();
        assert!(subscribers.is_empty());
        let pong = w.send(json!({"action": "ping", "id": "p1"})).await;
        assert_eq!(
            pong,
            [json!({"type": "pong", "connectionId": CONN, "id": "p1"})]
        );
    }

    #[tokio::test]
    async fn concurrent_publishes_get_distinct_gap_free_seqs() {
        let w = world().await;
        let channel = Channel::parse("chat:race").unwrap();
        let results = futures::future::join_all((0..12).map(|i| {
            let store = &w.app.store;
            let channel = &channel;
            async move {
                let id = deltacast::protocol::MessageId::parse(&format!("m{}", i % 6)).unwrap();
                let data = deltacast::protocol::Payload::from_json(i.to_string()).unwrap();
                store
                    .publish(deltacast::store::NewDelta {
                        channel,
                        id: &id,
                        from: "alice",
                        data: &data,
                        expect_seq: None,
                    })
                    .await
                    .map(|p| (id, p.seq))
            }
        }))
        .await;
        let mut by_id = std::collections::HashMap::new();
        for result in results {
            let (id, seq) = result.expect("every publish succeeds");
            assert_eq!(*by_id.entry(id).or_insert(seq), seq, "one id, one seq");
        }
        let mut seqs: Vec<u64> = by_id.values().copied().collect();
        seqs.sort();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "six ids, six gap-free seqs");
        assert_eq!(w.delta_items().await, 6, "duplicates stored nothing");
    }

    #[tokio::test]
    async fn publishes_are_rate_limited_per_connection_and_refusals_write_nothing() {
        let w = world_with(&[("RATE_LIMIT_PER_SECOND", "1"), ("RATE_LIMIT_BURST", "3")]).await;
        for i in 1..=3 {
            assert_eq!(
                w.publish("chat:a", &format!("m{i}"), json!(i)).await["type"],
                "ack"
            );
        }
        let before = all_items(&w.app.store).await;
        let refused = w.publish("chat:a", "m4", json!(4)).await;
        assert_eq!(refused["code"], "rate_limited");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("1 per second, bursts of 3")
        );
        assert_eq!(all_items(&w.app.store).await, before, "nothing written");
        let pong = w.send(json!({"action": "ping", "id": "p"})).await;
        assert_eq!(pong[0]["type"], "pong", "still connected and served");

        // Another connection has a bucket of its own.
        w.app
            .store
            .put_connection(&events::new_connection("conn-B", "bob"))
            .await
            .unwrap();
        let bob = identity("bob", json!({"*": ["publish"]}));
        let frames = w
            .send_as(
                "conn-B",
                &bob,
                &json!({"action": "publish", "channel": "chat:a", "id": "b1", "data": 1})
                    .to_string(),
            )
            .await;
        assert_eq!(frames[0]["type"], "ack");
    }

    #[tokio::test]
    async fn the_bucket_refills_by_arrival_time() {
        let w = world_with(&[("RATE_LIMIT_PER_SECOND", "10"), ("RATE_LIMIT_BURST", "1")]).await;
        let frame = |id: &str| {
            json!({"action": "publish", "channel": "chat:a", "id": id, "data": 1}).to_string()
        };
        let at = |ms: u64, body: String| {
            let mut request = events::message(CONN, &w.alice, &body);
            request.request_context.request_time_epoch = ms as i64;
            request
        };
        let t0 = clock::now_ms();
        for (ms, id, expected) in [
            (t0, "a", "ack"),
            (t0 + 50, "b", "error"),
            (t0 + 100, "c", "ack"),
        ] {
            w.push.clear();
            handle(at(ms, frame(id)), &w.app, &w.push).await.unwrap();
            assert_eq!(w.push.frames(CONN)[0]["type"], expected, "publish {id}");
        }
    }

    #[tokio::test]
    async fn catch_up_survives_failed_posts_and_never_goes_silent() {
        let w = world_with(&[("PUSH_RETRY_BASE_MS", "1")]).await;
        for i in 1..=3 {
            w.publish("chat:a", &format!("m{i}"), json!(i)).await;
        }
        let subscribe = json!({"action": "subscribe", "channel": "chat:a", "since": 0});
        w.push.fail_next(
            CONN,
            vec![PushError::Failed("500".into()), PushError::Throttled],
        );
        let frames = w.send(subscribe.clone()).await;
        assert_eq!(
            frames.len(),
            4,
            "three deltas and subscribed, after retries: {frames:?}"
        );
        assert_eq!(frames[3]["recovered"], true);

        // A delta that cannot be delivered at all: the client still hears `subscribed`.
        w.push
            .fail_next(CONN, vec![PushError::Failed("500".into()); 5]);
        let frames = w.send(subscribe).await;
        let last = frames.last().expect("a reply");
        assert_eq!(last["type"], "subscribed");
        assert_eq!(last["recovered"], false);
    }

    /// Frames generated from the protocol's grammar, valid and broken, dispatched against
    /// DynamoDB Local: every frame is answered, a refusal never changes the table, an id
    /// always maps to one seq, and deltas come in seq order. `PROPTEST_CASES` (default 64
    /// here, each case a few DynamoDB round trips) sets the depth.
    #[test]
    fn dispatch_survives_generated_frames() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        use std::collections::HashMap;

        let runtime = tokio::runtime::Runtime::new().unwrap();
        let w = runtime.block_on(world_with(&[("RATE_LIMIT_BURST", "100000")]));
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(64);
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });

        let scalar = prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(|b| json!(b)),
            (-5i64..2000).prop_map(|n| json!(n)),
            "[a-z:]{0,6}".prop_map(|s| json!(s)),
            Just(json!({"nested": [1, "two", null]})),
        ];
        let field = |name: &'static str, plausible: BoxedStrategy<Value>| {
            prop::option::weighted(
                0.6,
                prop_oneof![4 => plausible, 1 => scalar.clone()].prop_map(move |v| (name, v)),
            )
        };
        let frame = (
            field(
                "action",
                prop::sample::select(vec![
                    "subscribe",
                    "unsubscribe",
                    "publish",
                    "history",
                    "ping",
                    "nope",
                ])
                .prop_map(|a| json!(a))
                .boxed(),
            ),
            field(
                "channel",
                prop::sample::select(vec![
                    "chat:a",
                    "chat:b",
                    "news",
                    "user:alice",
                    "secret",
                    "bad name",
                ])
                .prop_map(|c| json!(c))
                .boxed(),
            ),
            field(
                "id",
                prop::sample::select(vec!["m1", "m2", "m3", "r-1", "bad id"])
                    .prop_map(|i| json!(i))
                    .boxed(),
            ),
            field("since", (0u64..6).prop_map(|n| json!(n)).boxed()),
            field("limit", (0u32..4).prop_map(|n| json!(n)).boxed()),
            field("expectSeq", (0u64..4).prop_map(|n| json!(n)).boxed()),
            field("data", scalar.clone().boxed()),
            prop::option::weighted(0.1, Just(("junk", json!(1)))),
        )
            .prop_map(|fields| {
                let (a, b, c, d, e, f, g, h) = fields;
                let map: serde_json::Map<String, Value> = [a, b, c, d, e, f, g, h]
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                Value::Object(map).to_string()
            });

        let acks: std::cell::RefCell<HashMap<(String, String), Value>> = Default::default();
        runner
            .run(&frame, |body| {
                runtime.block_on(async {
                    let before = all_items(&w.app.store).await;
                    let replies = w.send_as(CONN, &w.alice, &body).await;
                    prop_assert!(!replies.is_empty(), "no reply to {}", body);
                    prop_assert!(replies.iter().all(|r| r["type"].is_string()));
                    let last = replies.last().unwrap();
                    if last["type"] == "error" {
                        // A conflict is a publish attempt that reached storage: it takes a
                        // rate-limit token (the liveness item) and writes nothing else.
                        let mut after = all_items(&w.app.store).await;
                        let mut before = before;
                        if last["code"] == "conflict" {
                            after = except_live(after);
                            before = except_live(before);
                        }
                        prop_assert_eq!(after, before, "refused {} but wrote", body);
                    }
                    if last["type"] == "ack" {
                        let key = (last["channel"].to_string(), last["id"].to_string());
                        let mut acks = acks.borrow_mut();
                        let first = acks.entry(key).or_insert_with(|| last.clone());
                        prop_assert_eq!(&first["seq"], &last["seq"], "one id, one seq");
                    }
                    let seqs: Vec<u64> = replies
                        .iter()
                        .filter(|r| r["type"] == "delta")
                        .chain(last["deltas"].as_array().into_iter().flatten())
                        .filter_map(|d| d["seq"].as_u64())
                        .collect();
                    prop_assert!(
                        seqs.windows(2).all(|w| w[0] < w[1]),
                        "deltas out of order: {:?}",
                        seqs
                    );
                    Ok(())
                })
            })
            .unwrap();
    }
}
