//! docs/openapi.json against the routes actually served: every (method, path, status)
//! the document lists is requested through the local stack and answered with that status
//! and the documented media type; a case here that the document does not list fails too.
//! So the document cannot promise a route or a status the API does not serve.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::clock;
use deltacast::store::items::{EPOCH_SK, channel_pk};
use deltacast_local::runtime::FunctionFaults;
use deltacast_tests::http::{Answer, Http};
use deltacast_tests::stack::{TestStack, start_stack_with};
use serde_json::{Value, json};

/// One request made, and the documented response it stands for.
struct Case {
    method: &'static str,
    path: &'static str,
    status: u16,
    answer: Answer,
}

/// A token for a user of this case alone (each user has a small rate-limit bucket here).
fn token(stack: &TestStack, sub: &str) -> String {
    stack.token(
        sub,
        json!({"*": ["subscribe", "publish", "history", "presence"]}),
    )
}

/// GETs `path` as a user of its own until the user's bucket (4 tokens here) refuses.
async fn flood(http: &Http, stack: &TestStack, path: &str, user: &str) -> Answer {
    let t = token(stack, user);
    for _ in 0..12 {
        let answer = http.get(path, Some(&t)).await;
        if answer.status == 429 {
            return answer;
        }
    }
    panic!("{path}: no 429 after 12 requests");
}

#[tokio::test]
async fn every_documented_route_and_status_is_served_as_documented() {
    let stack = start_stack_with(|options| {
        options.max_instances = 6;
        for (name, value) in [
            ("HTTP_PUBLISH_WAIT_MS", "300"),
            ("SSE_MAX_SECONDS", "1"),
            ("USER_RATE_LIMIT_PER_SECOND", "1"),
            ("USER_RATE_LIMIT_BURST", "4"),
            ("SSE_MAX_STREAMS_PER_USER", "1"),
        ] {
            options.env.insert(name.into(), value.into());
        }
        // The sequencer never finishes a batch, so a publish it holds stays in flight.
        options.function_faults = FunctionFaults {
            crash_rate: 1.0,
            only: vec!["SequencerFunction".into()],
        };
    })
    .await;
    let http = Http::new(stack.stack.address);
    let document: Value = serde_json::from_str(include_str!("../docs/openapi.json")).unwrap();
    let mut cases = Vec::new();
    let mut case = |method, path, status, answer| {
        cases.push(Case {
            method,
            path,
            status,
            answer,
        })
    };
    let messages = "/v1/channels/{channel}/messages";

    // Publishing one message.
    let t = token(&stack, "publish-ok");
    let ok = http
        .post(
            "/v1/channels/doc:1/messages",
            Some(&t),
            &json!({"id": "a", "data": 1}),
        )
        .await;
    case("post", messages, 200, ok);
    let t = token(&stack, "publish-bad");
    case(
        "post",
        messages,
        400,
        http.post("/v1/channels/doc:1/messages", Some(&t), &json!({"id": "b"}))
            .await,
    );
    case(
        "post",
        messages,
        401,
        http.post(
            "/v1/channels/doc:1/messages",
            None,
            &json!({"id": "c", "data": 1}),
        )
        .await,
    );
    let reader = stack.token("reader", json!({"doc:*": ["history"]}));
    case(
        "post",
        messages,
        403,
        http.post(
            "/v1/channels/doc:1/messages",
            Some(&reader),
            &json!({"id": "d", "data": 1}),
        )
        .await,
    );
    let t = token(&stack, "publish-conflict");
    case(
        "post",
        messages,
        409,
        http.post(
            "/v1/channels/doc:1/messages",
            Some(&t),
            &json!({"id": "e", "data": 1, "expectSeq": 0}),
        )
        .await,
    );
    let t = token(&stack, "publish-large");
    let large = json!({"id": "f", "data": "x".repeat(25 * 1024)});
    case(
        "post",
        messages,
        413,
        http.post("/v1/channels/doc:1/messages", Some(&t), &large)
            .await,
    );
    let t = token(&stack, "publish-text");
    case(
        "post",
        messages,
        415,
        http.send(
            "POST",
            "/v1/channels/doc:1/messages",
            Some(&t),
            &[("content-type", "text/plain")],
            Some("hi".into()),
        )
        .await,
    );
    let t = token(&stack, "publish-flood");
    // Sent at once: one after the other, a slow machine refills the bucket between them.
    let burst = (0..10).map(|i| {
        let (http, t) = (http.clone(), t.clone());
        async move {
            let body = json!({"id": format!("g{i}"), "data": i});
            http.post("/v1/channels/doc:2/messages", Some(&t), &body)
                .await
        }
    });
    let limited = futures::future::join_all(burst)
        .await
        .into_iter()
        .find(|answer| answer.status == 429)
        .expect("a flood beyond the user's burst is refused");
    assert!(limited.header("retry-after").parse::<u64>().unwrap() >= 1);
    case("post", messages, 429, limited);
    // A busy channel's publish waits for the sequencer, which never finishes here.
    let t = token(&stack, "publish-busy");
    http.post(
        "/v1/channels/doc:busy/messages",
        Some(&t),
        &json!({"id": "h", "data": 1}),
    )
    .await;
    deltacast_tests::dynamodb()
        .await
        .update_item()
        .table_name(&stack.stack.table_name)
        .key("pk", AttributeValue::S(channel_pk("doc:busy")))
        .key("sk", AttributeValue::S(EPOCH_SK.into()))
        .update_expression("SET busy = :until")
        .expression_attribute_values(
            ":until",
            AttributeValue::N((clock::now_ms() + 600_000).to_string()),
        )
        .send()
        .await
        .expect("the channel marked busy");
    let waiting = http
        .post(
            "/v1/channels/doc:busy/messages",
            Some(&t),
            &json!({"id": "i", "data": 2}),
        )
        .await;
    assert_eq!(waiting.body["code"], "in_flight", "{:?}", waiting.body);
    case("post", messages, 503, waiting);

    // History.
    let t = token(&stack, "history");
    case(
        "get",
        messages,
        200,
        http.get("/v1/channels/doc:1/messages?since=0", Some(&t))
            .await,
    );
    case(
        "get",
        messages,
        400,
        http.get("/v1/channels/doc:1/messages?limit=many", Some(&t))
            .await,
    );
    case(
        "get",
        messages,
        401,
        http.get("/v1/channels/doc:1/messages", Some("not-a-token"))
            .await,
    );
    let writer = stack.token("writer", json!({"doc:*": ["publish"]}));
    case(
        "get",
        messages,
        403,
        http.get("/v1/channels/doc:1/messages", Some(&writer)).await,
    );
    let flooded = flood(
        &http,
        &stack,
        "/v1/channels/doc:1/messages",
        "history-flood",
    )
    .await;
    case("get", messages, 429, flooded);

    // A batch.
    let batch = "/v1/messages";
    let t = token(&stack, "batch");
    case(
        "post",
        batch,
        200,
        http.post(
            batch,
            Some(&t),
            &json!({"messages": [{"channel": "doc:3", "id": "a", "data": 1}]}),
        )
        .await,
    );
    case(
        "post",
        batch,
        400,
        http.post(batch, Some(&t), &json!({"messages": []})).await,
    );
    case(
        "post",
        batch,
        401,
        http.post(batch, None, &json!({"messages": []})).await,
    );
    let denied = stack.token("denied", json!({"doc:*": ["fly"]}));
    let refused = http
        .post(batch, Some(&denied), &json!({"messages": []}))
        .await;
    case("post", batch, 403, refused);
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"channel": "doc:3", "id": format!("m{i}"), "data": i}))
        .collect();
    case(
        "post",
        batch,
        413,
        http.post(batch, Some(&t), &json!({"messages": many})).await,
    );
    case(
        "post",
        batch,
        415,
        http.send(
            "POST",
            batch,
            Some(&t),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some("a=1".into()),
        )
        .await,
    );

    // State and presence.
    for (path, concrete, wrong) in [
        (
            "/v1/channels/{channel}/state",
            "/v1/channels/state:doc/state",
            "/v1/channels/doc:1/state",
        ),
        (
            "/v1/channels/{channel}/presence",
            "/v1/channels/doc:1/presence",
            "/v1/channels/doc:1/presence?limit=x",
        ),
    ] {
        let t = token(&stack, path);
        case("get", path, 200, http.get(concrete, Some(&t)).await);
        case("get", path, 400, http.get(wrong, Some(&t)).await);
        case("get", path, 401, http.get(concrete, None).await);
        let nobody = stack.token("nobody", json!({"other:*": ["subscribe"]}));
        case("get", path, 403, http.get(concrete, Some(&nobody)).await);
        let flooder = format!("{path}-flood");
        case(
            "get",
            path,
            429,
            flood(&http, &stack, concrete, &flooder).await,
        );
    }

    // Events (SSE_MAX_SECONDS is 1: the stream ends by itself).
    let events = "/v1/channels/{channel}/events";
    let t = token(&stack, "events");
    case(
        "get",
        events,
        200,
        http.get(&format!("/v1/channels/doc:1/events?token={t}"), None)
            .await,
    );
    case(
        "get",
        events,
        400,
        http.send(
            "GET",
            "/v1/channels/doc:1/events",
            Some(&t),
            &[("last-event-id", "x:y")],
            None,
        )
        .await,
    );
    case(
        "get",
        events,
        401,
        http.get("/v1/channels/doc:1/events", None).await,
    );
    let nobody = stack.token("nobody", json!({"other:*": ["subscribe"]}));
    case(
        "get",
        events,
        403,
        http.get("/v1/channels/doc:1/events", Some(&nobody)).await,
    );
    // A user holds one stream at a time here (SSE_MAX_STREAMS_PER_USER): a second is refused.
    let t = token(&stack, "events-twice");
    let held = {
        let (http, url) = (http.clone(), format!("/v1/channels/doc:1/events?token={t}"));
        tokio::spawn(async move { http.get(&url, None).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = http.get("/v1/channels/doc:1/events", Some(&t)).await;
    assert!(
        second.body["detail"]
            .as_str()
            .unwrap()
            .contains("SSE_MAX_STREAMS_PER_USER")
    );
    case("get", events, 429, second);
    assert_eq!(held.await.unwrap().status, 200);

    // The document itself.
    let served = http.get("/v1/openapi.json", None).await;
    assert_eq!(
        served.body, document,
        "the served document is the repository's"
    );
    case("get", "/v1/openapi.json", 200, served);

    // THEN the cases are exactly the documented responses, each answered as documented.
    let documented: BTreeSet<(String, String, u16)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .iter()
                .filter(|(method, _)| *method != "parameters")
                .flat_map(move |(method, operation)| {
                    operation["responses"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(move |status| {
                            (method.clone(), path.clone(), status.parse::<u16>().unwrap())
                        })
                })
        })
        .collect();
    let tested: BTreeSet<(String, String, u16)> = cases
        .iter()
        .map(|c| (c.method.to_owned(), c.path.to_owned(), c.status))
        .collect();
    assert_eq!(
        tested, documented,
        "the cases and the document list the same responses"
    );
    for case in &cases {
        assert_eq!(
            case.answer.status, case.status,
            "{} {}: {:?}",
            case.method, case.path, case.answer.body
        );
        let response =
            &document["paths"][case.path][case.method]["responses"][case.status.to_string()];
        let response = match response["$ref"].as_str() {
            Some(reference) => {
                &document["components"]["responses"][reference.rsplit('/').next().unwrap()]
            }
            None => response,
        };
        let media = response["content"]
            .as_object()
            .unwrap()
            .keys()
            .next()
            .unwrap();
        assert!(
            case.answer
                .header("content-type")
                .starts_with(media.as_str()),
            "{} {} {}: {} is not {media}",
            case.method,
            case.path,
            case.status,
            case.answer.header("content-type")
        );
        if media == "application/problem+json" {
            assert_eq!(
                case.answer.body["status"], case.status,
                "{:?}",
                case.answer.body
            );
        }
    }
    stack.shutdown().await;
}
