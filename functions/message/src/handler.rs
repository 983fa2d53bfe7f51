//! Parses one client frame, checks who sent it, and dispatches it to its action.
//! A bad frame is answered with an error frame that names the problem; it never closes
//! the connection and never writes anything.

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use deltacast::auth::Identity;
use deltacast::clock;
use deltacast::config::Settings;
use deltacast::protocol::{ClientMessage, ErrorCode, ErrorFrame, ServerMessage};
use deltacast::push::{Push, PushError};
use deltacast::store::Store;
use lambda_runtime::Error;
use tracing::{debug, error, info_span, warn, Instrument};

use crate::actions::{self, ActionError};

/// What every invocation shares: the store and the settings.
pub struct App {
    /// The table.
    pub store: Store,
    /// Limits and lifetimes.
    pub settings: Settings,
}

/// Who sent a frame, and when.
pub struct Sender<'a> {
    /// API Gateway's connection id.
    pub connection_id: &'a str,
    /// The identity the authorizer verified at `$connect`.
    pub identity: Identity,
    /// When the connection opened, Unix ms.
    pub connected_at: u64,
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
            reply(push, connection_id, &ServerMessage::Error(&frame)).await;
            return Ok(response);
        }
    };
    let body = request.body.as_deref().unwrap_or_default();
    let message = match ClientMessage::parse(body, &app.settings.frame_limits) {
        Ok(message) => message,
        Err(frame) => {
            debug!(connection_id, code = ?frame.code, "bad frame");
            reply(push, connection_id, &ServerMessage::Error(&frame)).await;
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
        connected_at: u64::try_from(context.connected_at).unwrap_or(0),
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
            reply(push, connection_id, &ServerMessage::Error(&frame.about(&message))).await;
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
            actions::subscribe::run(sender, app, push, channel, *since, epoch.as_deref(), id.as_ref())
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

/// Sends a frame to a connection; failures are logged, never raised.
pub async fn reply<P: Push>(push: &P, connection_id: &str, message: &ServerMessage<'_>) {
    match push.post(connection_id, &message.to_json()).await {
        Ok(()) | Err(PushError::Gone) => {}
        Err(err) => warn!(connection_id, error = %err, "reply failed"),
    }
}
