//! Real AWS payloads from `events/` (one per function and route, also what `aws lambda
//! invoke` and `sam local invoke` take: events/README.md), adjusted per test.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use aws_lambda_events::dynamodb::Event;
use deltacast::auth::Identity;
use deltacast::store::NewConnection;
use serde_json::Value;

/// The folder of the event files, from the checkout's top: the one source of the payloads
/// the tests, the bench and a developer's `aws lambda invoke` use.
pub const EVENTS_DIR: &str = "events";

/// The folder of the event files.
pub fn events_dir() -> std::path::PathBuf {
    crate::workspace_root().join(EVENTS_DIR)
}

/// The event file `events/<name>`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = events_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn request(mut event: Value, connection_id: &str) -> ApiGatewayWebsocketProxyRequest {
    event["requestContext"]["connectionId"] = Value::from(connection_id);
    event["requestContext"]["connectedAt"] = Value::from(deltacast::clock::now_ms());
    // Received now: a frame API Gateway received long ago waited for the function, and
    // the message function refuses a publish that waited too long.
    if event["requestContext"].get("requestTimeEpoch").is_some() {
        event["requestContext"]["requestTimeEpoch"] = Value::from(deltacast::clock::now_ms());
    }
    serde_json::from_value(event).expect("fixture is an API Gateway WebSocket event")
}

fn with_identity(event: &mut Value, sub: &str, caps: &str, exp: u64) {
    let authorizer = &mut event["requestContext"]["authorizer"];
    authorizer["principalId"] = Value::from(sub);
    authorizer["sub"] = Value::from(sub);
    authorizer["caps"] = Value::from(caps);
    authorizer["exp"] = Value::from(exp);
}

/// A `$connect` request for `connection_id`, authorized as `sub` with `caps` (JSON text).
pub fn connect(connection_id: &str, sub: &str, caps: &str) -> ApiGatewayWebsocketProxyRequest {
    let mut event = fixture("connect.json");
    with_identity(&mut event, sub, caps, deltacast::clock::now_secs() + 3600);
    request(event, connection_id)
}

/// A `$disconnect` request for `connection_id`.
pub fn disconnect(connection_id: &str) -> ApiGatewayWebsocketProxyRequest {
    request(fixture("disconnect.json"), connection_id)
}

/// A `$default` request carrying `body`, from a connection with `identity`.
pub fn message(
    connection_id: &str,
    identity: &Identity,
    body: &str,
) -> ApiGatewayWebsocketProxyRequest {
    let mut event = fixture("message-ping.json");
    with_identity(
        &mut event,
        &identity.sub,
        &identity.capabilities.to_json(),
        identity.exp,
    );
    event["body"] = Value::from(body);
    request(event, connection_id)
}

/// A connection as `$connect` stores it, connected now, with no capabilities.
pub fn new_connection<'a>(connection_id: &'a str, sub: &'a str) -> NewConnection<'a> {
    NewConnection {
        connection_id,
        sub,
        capabilities: "{}",
        token_exp: deltacast::clock::now_secs() + 3600,
        connected_at: deltacast::clock::now_ms(),
        source_ip: Some("203.0.113.7"),
    }
}

/// The fan-out's DynamoDB Streams batch in `events/fanout-deltas.json`: three delta
/// INSERTs, out of seq order, on two channels.
pub fn stream_batch() -> Event {
    serde_json::from_value(fixture("fanout-deltas.json"))
        .expect("fixture is a DynamoDB Streams event")
}

/// The raw records of `events/fanout-deltas.json`, to edit into other batches.
pub fn stream_records() -> Vec<Value> {
    fixture("fanout-deltas.json")["Records"]
        .as_array()
        .expect("the fixture has records")
        .clone()
}

/// The sequencer's DynamoDB Streams batch in `events/sequencer-inbox.json`: alice's
/// `m1` from `conn-A`, bob's `m2` from `conn-B`, then `m1` taken over from `conn-C` (a
/// MODIFY), all on `chat:lobby`.
pub fn stream_inbox() -> Event {
    serde_json::from_value(fixture("sequencer-inbox.json"))
        .expect("fixture is a DynamoDB Streams event")
}

/// A DynamoDB Streams event whose records are the given raw JSON records.
pub fn stream_event(records: Vec<Value>) -> Event {
    serde_json::from_value(serde_json::json!({ "Records": records }))
        .expect("records are stream records")
}
