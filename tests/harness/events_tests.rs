//! The event files in `events/` are what their functions take: each parses as its
//! function's `aws_lambda_events` type, each `$default` frame as the action its name says,
//! and all of them are one user's (alice's, through the development token of
//! `authorizer-connect.json`) on one connection, so they can be invoked one after another.

use aws_lambda_events::apigw::{
    ApiGatewayCustomAuthorizerRequestTypeRequest, ApiGatewayV2httpRequest,
    ApiGatewayWebsocketProxyRequest,
};
use aws_lambda_events::dynamodb::Event;
use base64::Engine;
use deltacast::auth::{Action, Identity, JwtConfig, JwtVerifier};
use deltacast::config::Env;
use deltacast::protocol::{ClientMessage, FrameLimits};
use deltacast_local::stack::DEV_JWT_SECRET;
use deltacast_local::template::StackSpec;

use crate::events::events_dir;

/// What an event file carries.
#[derive(Clone, Copy, Debug)]
enum Kind {
    /// The `$connect` authorizer's request, with a token in the query string.
    Authorizer,
    /// A WebSocket route's request (`$connect`, `$disconnect`).
    Route(&'static str),
    /// A `$default` request whose frame is this action.
    Frame(&'static str),
    /// A DynamoDB Streams batch of items whose `pk` starts with this.
    Stream(&'static str),
    /// A function URL request with this method.
    FunctionUrl(&'static str),
}

/// Every event file: its name, its function's logical id in `template.yaml`, what it is.
const EVENTS: &[(&str, &str, Kind)] = &[
    (
        "authorizer-connect.json",
        "AuthorizerFunction",
        Kind::Authorizer,
    ),
    ("connect.json", "ConnectFunction", Kind::Route("$connect")),
    (
        "disconnect.json",
        "DisconnectFunction",
        Kind::Route("$disconnect"),
    ),
    (
        "message-subscribe.json",
        "MessageFunction",
        Kind::Frame("subscribe"),
    ),
    (
        "message-unsubscribe.json",
        "MessageFunction",
        Kind::Frame("unsubscribe"),
    ),
    (
        "message-publish.json",
        "MessageFunction",
        Kind::Frame("publish"),
    ),
    (
        "message-history.json",
        "MessageFunction",
        Kind::Frame("history"),
    ),
    (
        "message-update.json",
        "MessageFunction",
        Kind::Frame("update"),
    ),
    (
        "message-state.json",
        "MessageFunction",
        Kind::Frame("state"),
    ),
    (
        "message-presence.json",
        "MessageFunction",
        Kind::Frame("presence"),
    ),
    (
        "message-members.json",
        "MessageFunction",
        Kind::Frame("members"),
    ),
    ("message-ping.json", "MessageFunction", Kind::Frame("ping")),
    (
        "message-binary.json",
        "MessageFunction",
        Kind::Frame("ping"),
    ),
    ("fanout-deltas.json", "FanoutFunction", Kind::Stream("h#")),
    (
        "sequencer-inbox.json",
        "SequencerFunction",
        Kind::Stream("q#"),
    ),
    (
        "http-publish.json",
        "HttpFunction",
        Kind::FunctionUrl("POST"),
    ),
    (
        "http-history.json",
        "HttpFunction",
        Kind::FunctionUrl("GET"),
    ),
];

/// The connection every WebSocket event comes from.
const CONNECTION_ID: &str = "N5v1acdxoAMCKgQ=";

/// The far-off expiry of the files' identity (2100-01-01), so they stay valid.
const EXP: u64 = 4_102_444_800;

fn read(name: &str) -> Vec<u8> {
    let path = events_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse<T: serde::de::DeserializeOwned>(name: &str) -> T {
    serde_json::from_slice(&read(name)).unwrap_or_else(|e| panic!("events/{name}: {e}"))
}

/// Who a token identifies, verified as the functions verify it with the development secret.
async fn verified(token: &str) -> Identity {
    let config = JwtConfig::from_env(&Env::from_pairs([(
        "JWT_SECRET",
        DEV_JWT_SECRET.to_owned(),
    )]))
    .unwrap();
    JwtVerifier::new(&config)
        .unwrap()
        .verify(token)
        .await
        .expect("the development secret signed the events' token")
}

/// The identity the events carry: the one the authorizer event's token verifies to.
async fn alice() -> Identity {
    let request: ApiGatewayCustomAuthorizerRequestTypeRequest = parse("authorizer-connect.json");
    verified(
        request
            .query_string_parameters
            .first("token")
            .expect("a token"),
    )
    .await
}

/// The capability `action` needs (as `functions/message/src/actions/` check it).
fn needed(action: &str) -> Option<Action> {
    match action {
        "subscribe" | "state" | "members" => Some(Action::Subscribe),
        "publish" | "update" => Some(Action::Publish),
        "history" => Some(Action::History),
        "presence" => Some(Action::Presence),
        _ => None,
    }
}

#[test]
fn every_event_file_is_listed_with_a_function_of_the_template_and_in_the_readme() {
    let mut files: Vec<String> = std::fs::read_dir(events_dir())
        .expect("events/")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EVENTS.iter().map(|(name, ..)| name.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "events/ and the list here name the same files"
    );

    let spec = StackSpec::load(&crate::workspace_root().join("template.yaml")).unwrap();
    let readme = String::from_utf8(read("README.md")).unwrap();
    for (name, function, _) in EVENTS {
        assert!(spec.functions.contains_key(*function), "{function}");
        let row = readme
            .lines()
            .find(|line| line.starts_with(&format!("| `{name}`")))
            .unwrap_or_else(|| panic!("events/README.md has no row for {name}"));
        assert!(
            row.contains(function),
            "{name}'s row names {function}: {row}"
        );
    }
}

#[tokio::test]
async fn the_authorizer_event_carries_a_development_token_for_alice_on_every_channel() {
    let request: ApiGatewayCustomAuthorizerRequestTypeRequest = parse("authorizer-connect.json");
    assert_eq!(request.type_.as_deref(), Some("REQUEST"));
    assert!(request.method_arn.unwrap().ends_with("/$connect"));
    // The type has no WebSocket fields; the connection is the other events'.
    let raw = super::events::fixture("authorizer-connect.json");
    assert_eq!(raw["requestContext"]["connectionId"], CONNECTION_ID);
    let identity = alice().await;
    assert_eq!(identity.sub, "alice");
    assert_eq!(identity.exp, EXP);
    for action in [
        Action::Subscribe,
        Action::Publish,
        Action::History,
        Action::Presence,
    ] {
        assert!(
            identity.capabilities.grants("any:channel", action),
            "{action}"
        );
    }
}

#[tokio::test]
async fn every_websocket_event_is_a_route_of_alices_connection_as_the_authorizer_passed_it() {
    let alice = alice().await;
    for (name, _, kind) in EVENTS {
        let route = match kind {
            Kind::Route(route) => *route,
            Kind::Frame(_) => "$default",
            _ => continue,
        };
        let request: ApiGatewayWebsocketProxyRequest = parse(name);
        let context = &request.request_context;
        assert_eq!(context.route_key.as_deref(), Some(route), "{name}");
        assert_eq!(
            context.connection_id.as_deref(),
            Some(CONNECTION_ID),
            "{name}"
        );
        assert!(
            context.domain_name.is_some() && context.stage.is_some(),
            "{name}"
        );
        if route == "$disconnect" {
            continue;
        }
        let identity = Identity::from_context(&context.authorizer.fields)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            identity, alice,
            "{name}: the authorizer's context for its token"
        );
    }
}

#[test]
fn every_default_frame_parses_as_the_action_its_name_says_and_is_allowed() {
    let limits = FrameLimits::default();
    for (name, _, kind) in EVENTS {
        let Kind::Frame(action) = kind else { continue };
        let request: ApiGatewayWebsocketProxyRequest = parse(name);
        let body = request.body.as_deref().expect("a frame");
        let text = if request.is_base64_encoded {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(body)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            String::from_utf8(bytes).unwrap()
        } else {
            body.to_owned()
        };
        let message = ClientMessage::parse(&text, &limits)
            .unwrap_or_else(|refusal| panic!("{name}: {}", refusal.message));
        assert_eq!(message.action(), *action, "{name}");
        let identity = Identity::from_context(&request.request_context.authorizer.fields).unwrap();
        if let (Some(needed), Some(channel)) = (needed(action), message.channel()) {
            assert!(
                identity.may(needed, channel),
                "{name}: {needed} on {channel:?}"
            );
        }
    }
}

#[test]
fn the_update_event_increments_a_state_channel() {
    let request: ApiGatewayWebsocketProxyRequest = parse("message-update.json");
    let frame: serde_json::Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(frame["channel"], "state:poll");
    assert_eq!(frame["ops"][0]["op"], "inc");
}

#[test]
fn every_stream_event_is_a_batch_of_its_functions_items() {
    #[derive(serde::Deserialize)]
    struct Key {
        pk: String,
        sk: String,
    }
    for (name, _, kind) in EVENTS {
        let Kind::Stream(prefix) = kind else { continue };
        let event: Event = parse(name);
        assert!(!event.records.is_empty(), "{name}");
        for record in event.records {
            assert_eq!(
                record.event_source.as_deref(),
                Some("aws:dynamodb"),
                "{name}"
            );
            let key: Key = serde_dynamo::from_item(record.change.keys.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let image: Key = serde_dynamo::from_item(record.change.new_image.clone())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(key.pk.starts_with(prefix), "{name}: {}", key.pk);
            assert_eq!((image.pk, image.sk), (key.pk, key.sk), "{name}");
        }
    }
}

#[tokio::test]
async fn every_function_url_event_is_an_http_api_request_with_alices_token() {
    let alice = alice().await;
    for (name, _, kind) in EVENTS {
        let Kind::FunctionUrl(method) = kind else {
            continue;
        };
        // What `lambda_http` reads a function URL event as.
        let request: ApiGatewayV2httpRequest = parse(name);
        assert_eq!(request.version.as_deref(), Some("2.0"), "{name}");
        assert_eq!(
            request.request_context.http.method.as_str(),
            *method,
            "{name}"
        );
        let path = request.raw_path.as_deref().unwrap_or_default();
        assert!(path.starts_with("/v1/channels/"), "{name}: {path}");
        let bearer = request.headers["authorization"].to_str().unwrap();
        let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
        assert_eq!(verified(token).await, alice, "{name}");
    }
}
