//! Which function a frame goes to: the route selection expression evaluated against the
//! frame's JSON (binary frames go to `$default`), and the invocation itself, which runs
//! concurrently with the connection's other frames, as in API Gateway.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use deltacast::clock;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tracing::warn;

use super::state::{Connection, Shared};
use crate::events;
use crate::invoke::Invoke;

/// Routes one frame to its function, without waiting for it.
pub(super) fn route<F: Invoke + Clone + 'static>(
    shared: &Arc<Shared<F>>,
    connection: &Arc<Connection>,
    body: &[u8],
    binary: bool,
) {
    let received_at = clock::now_ms();
    connection.last_active.store(received_at, Ordering::Relaxed);
    shared.stats.frames_in.fetch_add(1, Ordering::Relaxed);
    let key = if binary {
        "$default".to_owned()
    } else {
        select_route(&shared.routes.selection_expression, body)
            .filter(|key| shared.routes.routes.contains_key(key) && !key.starts_with('$'))
            .unwrap_or_else(|| "$default".to_owned())
    };
    let Some(function) = shared.routes.routes.get(&key).cloned() else {
        let reply = json!({"message": "Forbidden", "connectionId": connection.info.connection_id, "requestId": events::request_id()});
        let _ = connection.push(Message::text(reply.to_string()));
        return;
    };
    let event = events::message(
        &connection.info,
        &key,
        body,
        binary,
        connection.authorizer.as_ref(),
        received_at,
    );
    let connection = connection.clone();
    shared.tasks.spawn(async move {
        if let Err(err) = function.invoke(event).await {
            warn!(connection_id = connection.info.connection_id, route = key, error = %err, "route failed");
            let reply = json!({"message": "Internal server error", "connectionId": connection.info.connection_id, "requestId": events::request_id()});
            let _ = connection.push(Message::text(reply.to_string()));
        }
    });
}

/// Evaluates `$request.body.<path>` against a JSON frame.
pub fn select_route(expression: &str, body: &[u8]) -> Option<String> {
    let path = expression.strip_prefix("$request.body.")?;
    let value: Value = serde_json::from_slice(body).ok()?;
    let mut current = &value;
    for part in path.split('.') {
        current = current.get(part)?;
    }
    match current {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_selection_reads_the_body() {
        assert_eq!(
            select_route("$request.body.action", br#"{"action":"ping"}"#).as_deref(),
            Some("ping")
        );
        assert_eq!(
            select_route("$request.body.a.b", br#"{"a":{"b":"x"}}"#).as_deref(),
            Some("x")
        );
        assert_eq!(select_route("$request.body.action", b"not json"), None);
        assert_eq!(
            select_route("$request.body.action", br#"{"other":1}"#),
            None
        );
    }
}
