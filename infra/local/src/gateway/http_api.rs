//! The HTTP API under `/v1/`: each request becomes the function URL event of the
//! template's function with a `FunctionUrlConfig`, invoked through the local Runtime API
//! in streaming mode; the response (a stream of server-sent events among them) is passed
//! on as the function writes it.
//!
//! A request signed with SigV4 stands for one through the function's IAM URL. Its
//! signature cannot be checked here (no AWS credentials), so it is accepted only while
//! the gateway listens on a loopback address; on any other address it is refused with 403.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use deltacast::clock;
use serde_json::json;
use tracing::{info, warn};

use super::state::Shared;
use crate::function_url;
use crate::invoke::Invoke;

/// Function URLs take request bodies up to 6 MB, as Lambda's invoke payload.
const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// Serves one HTTP API request.
pub(super) async fn http_api<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let Some(function) = shared.routes.http.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "Not Found: the template has no function URL",
        )
            .into_response();
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 6 MB, Lambda's limit",
        );
    };
    let iam = function_url::sigv4_access_key(&parts.headers);
    if iam.is_some() && !shared.address.ip().is_loopback() {
        warn!(
            path = parts.uri.path(),
            "SigV4 request refused: the local stack cannot check signatures off loopback"
        );
        return problem(
            StatusCode::FORBIDDEN,
            "the local stack cannot check AWS signatures, so it accepts signed requests on a loopback address only",
        );
    }
    let domain_name = parts
        .headers
        .get("host")
        .and_then(|host| host.to_str().ok())
        .map_or_else(|| shared.address.to_string(), str::to_owned);
    let request = function_url::Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
        domain_name,
        source_ip: peer.ip().to_string(),
        iam,
        received_at: clock::now_ms(),
    };
    let invoked = function
        .invoke_streaming(function_url::event(&request))
        .await;
    if let Err(error) = &invoked {
        warn!(path = request.path, %error, "HTTP API invocation failed");
    }
    let response = function_url::response(invoked);
    info!(
        method = request.method,
        path = request.path,
        status = response.status().as_u16(),
        "HTTP API"
    );
    response
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        json!({"Message": detail}).to_string(),
    )
        .into_response()
}
