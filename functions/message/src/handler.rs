//! Parses one client frame, checks who sent it, and dispatches it to its action.
//! A bad frame is answered with an error frame that names the problem; it never closes
//! the connection and never writes anything.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use deltacast::auth::Identity;
use deltacast::clock;
use deltacast::metrics::{self, PublishOutcome, UpdateOutcome};
use deltacast::protocol::{ClientMessage, ErrorCode, ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use lambda_runtime::Error;
use tracing::{Instrument, debug, error, info_span, warn};

use crate::actions::{
    ActionError, history, members, ping, presence, publish, state, subscribe, unsubscribe, update,
};
use crate::body;
use crate::context::{App, Sender};

/// The Management API endpoint of the API and stage a request came through.
pub fn endpoint_of(request: &ApiGatewayWebsocketProxyRequest) -> String {
    let context = &request.request_context;
    format!(
        "https://{}/{}",
        context.domain_name.as_deref().unwrap_or_default(),
        context.stage.as_deref().unwrap_or_default()
    )
}

/// The `action` label of a frame that could not be read.
const UNPARSED: &str = "unparsed";
/// The `outcome` label of a frame nobody is answered for (the connection went away, or
/// the reply failed).
const NOT_ANSWERED: &str = "not_answered";

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
            metrics::request(UNPARSED, ErrorCode::Forbidden.as_str());
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
    let parsed = body::text(&request).and_then(|text| {
        ClientMessage::parse(&text, &app.settings.frame_limits).map_err(|frame| *frame)
    });
    let message = match parsed {
        Ok(message) => message,
        Err(frame) => {
            debug!(connection_id, code = ?frame.code, "bad frame");
            metrics::request(UNPARSED, frame.code.as_str());
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
        let result = dispatch(&message, &sender, app, push).await;
        metrics::request(
            message.action(),
            match &result {
                Ok(()) => "ok",
                Err(err) => err.code().map_or(NOT_ANSWERED, ErrorCode::as_str),
            },
        );
        if let Err(err) = result {
            let frame = match err {
                ActionError::Refused(frame) => *frame,
                // The connection closed before this frame ran: nothing was written and
                // there is nobody to answer.
                ActionError::Store(err) if err.is_connection_gone() => {
                    debug!("frame from a closed connection refused; nothing written");
                    return;
                }
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

/// Runs the action `message` asks for, as `sender`, answering through `push`. A sender
/// without a connection (an HTTP request: `connection_id` empty) has no connection bucket,
/// and a publish of its is never answered by the sequencer (its claim names no
/// connection).
pub async fn dispatch<P: Push>(
    message: &ClientMessage,
    sender: &Sender<'_>,
    app: &App,
    push: &P,
) -> Result<(), ActionError> {
    if sender.identity.expired(clock::now_secs()) {
        // Refused before its action runs, so counted here as the action would count it.
        let refused = ErrorCode::TokenExpired;
        match message {
            ClientMessage::Publish { .. } => metrics::publish(PublishOutcome::Refused(refused)),
            ClientMessage::Update { .. } => metrics::state_update(UpdateOutcome::Refused(refused)),
            _ => {}
        }
        return Err(ActionError::Refused(Box::new(ErrorFrame::token_expired())));
    }
    match message {
        ClientMessage::Subscribe {
            channel,
            since,
            epoch,
            id,
            coalesce,
            presence,
        } => {
            let args = subscribe::Args {
                channel,
                since: *since,
                epoch: epoch.as_deref(),
                id: id.as_ref(),
                coalesce: *coalesce,
                presence: *presence,
            };
            subscribe::run(args, sender, app, push).await
        }
        ClientMessage::Unsubscribe { channel, id } => {
            let args = unsubscribe::Args {
                channel,
                id: id.as_ref(),
            };
            unsubscribe::run(args, sender, app, push).await
        }
        ClientMessage::Publish {
            channel,
            id,
            data,
            expect_seq,
        } => {
            let args = publish::Args {
                channel,
                id,
                data,
                expect_seq: *expect_seq,
            };
            publish::run(args, sender, app, push).await
        }
        ClientMessage::History {
            channel,
            since,
            limit,
            id,
        } => {
            let args = history::Args {
                channel,
                since: *since,
                limit: *limit,
                id: id.as_ref(),
            };
            history::run(args, sender, app, push).await
        }
        ClientMessage::Update { channel, id, ops } => {
            update::run(update::Args { channel, id, ops }, sender, app, push).await
        }
        ClientMessage::State { channel, id } => {
            let args = state::Args {
                channel,
                id: id.as_ref(),
            };
            state::run(args, sender, app, push).await
        }
        ClientMessage::Presence {
            channel,
            op,
            data,
            id,
        } => {
            let args = presence::Args {
                channel,
                op: *op,
                data: data.as_ref(),
                id: id.as_ref(),
            };
            presence::run(args, sender, app, push).await
        }
        ClientMessage::Members {
            channel,
            after,
            limit,
            id,
        } => {
            let args = members::Args {
                channel,
                after: after.as_deref(),
                limit: *limit,
                id: id.as_ref(),
            };
            members::run(args, sender, app, push).await
        }
        ClientMessage::Ping { id } => {
            ping::run(ping::Args { id: id.as_ref() }, sender, app, push).await
        }
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
    use crate::testing::*;
    use deltacast_tests::all_items;
    use serde_json::{Value, json};

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

    /// The `$default` payload API Gateway sends for a binary frame (base64 body,
    /// `isBase64Encoded: true`), from `alice` on `CONN`, carrying `body`.
    fn binary_frame(w: &World, body: &[u8]) -> ApiGatewayWebsocketProxyRequest {
        use base64::Engine;
        let mut event = deltacast_tests::events::fixture("message-binary.json");
        event["requestContext"]["connectionId"] = json!(CONN);
        event["requestContext"]["requestTimeEpoch"] = json!(deltacast::clock::now_ms());
        let authorizer = &mut event["requestContext"]["authorizer"];
        authorizer["caps"] = json!(w.alice.capabilities.to_json());
        authorizer["exp"] = json!(w.alice.exp);
        if !body.is_empty() {
            event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(body));
        }
        serde_json::from_value(event).expect("an API Gateway WebSocket event")
    }

    #[tokio::test]
    async fn a_binary_frame_of_utf8_json_is_handled_like_a_text_frame() {
        let w = world().await;
        // The fixture as API Gateway sends it: a ping, base64-encoded.
        let pong = w.deliver(binary_frame(&w, b"")).await;
        assert_eq!(
            pong,
            [json!({"type": "pong", "connectionId": CONN, "id": "r1"})]
        );
        let publish = br#"{"action":"publish","channel":"chat:a","id":"b1","data":{"n":1}}"#;
        let ack = w.deliver(binary_frame(&w, publish)).await;
        assert_eq!(ack[0]["type"], "ack", "{ack:?}");
        assert_eq!(ack[0]["seq"], 1);
        assert_eq!(w.delta_items().await, 1);
        // A bad frame gets the same answer either way.
        let bad = br#"{"action":"subscribe","channel":5}"#;
        let text = w
            .send_as(CONN, &w.alice, std::str::from_utf8(bad).unwrap())
            .await;
        assert_eq!(w.deliver(binary_frame(&w, bad)).await, text);
    }

    #[tokio::test]
    async fn a_binary_frame_that_is_not_utf8_is_refused_and_writes_nothing() {
        let w = world().await;
        let before = all_items(&w.app.store).await;
        let frames = w.deliver(binary_frame(&w, &[0xff, 0xfe, b'{', 0x00])).await;
        assert_eq!(
            frames,
            [
                json!({"type": "error", "code": "bad_request", "message": "binary frames must carry UTF-8 JSON, as text frames do"})
            ]
        );
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
        assert_eq!(frames[0]["code"], "token_expired");
        assert_eq!(frames[0]["id"], "p");
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
                            after = except_buckets(after);
                            before = except_buckets(before);
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
