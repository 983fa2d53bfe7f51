//! The HTTP API under `/v1/`: each request becomes the function URL event of the
//! template's function with a `FunctionUrlConfig`, invoked through the local Runtime API
//! in streaming mode; the response (a stream of server-sent events among them) is passed
//! on as the function writes it.
//!
//! A request signed with SigV4 stands for one through the function's IAM URL. Its
//! signature cannot be checked here (no AWS credentials), so it is accepted only while
//! the gateway listens on a loopback address, and only when its `Host` names a loopback
//! host (a web page cannot make a browser send one to another name it resolves to
//! 127.0.0.1); otherwise it is refused with 403.
//!
//! CORS: a function URL answers preflight requests itself, from its `Cors` settings, and
//! adds `Access-Control-Allow-Origin` to responses. Locally any origin is allowed (the
//! template's `HttpCorsOrigins` applies on AWS), so a page served from another port can
//! call the API and open an `EventSource`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, to_bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use deltacast::clock;
use futures::StreamExt;
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
    if parts.method == Method::OPTIONS {
        return preflight();
    }
    let Ok(body) = to_bytes(body, MAX_BODY_BYTES).await else {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is over 6 MB, Lambda's limit",
        );
    };
    let iam = function_url::sigv4_access_key(&parts.headers);
    let loopback_host = parts
        .headers
        .get("host")
        .and_then(|host| host.to_str().ok())
        .is_some_and(is_loopback_host);
    if iam.is_some() && !(shared.address.ip().is_loopback() && loopback_host) {
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
    // A stream still running when the gateway shuts down ends then (its server waits for
    // every response to finish).
    let (parts, body) = function_url::response(invoked).into_parts();
    let stopping = shared.stopping.clone().cancelled_owned();
    let body = Body::from_stream(body.into_data_stream().take_until(stopping));
    let mut response = Response::from_parts(parts, body);
    let headers = response.headers_mut();
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("retry-after"),
    );
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

/// The answer to a CORS preflight, as a function URL gives it from its `Cors` settings.
fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET, POST"),
            (
                "access-control-allow-headers",
                "authorization, content-type, last-event-id",
            ),
            ("access-control-max-age", "86400"),
        ],
    )
        .into_response()
}

/// Whether a `Host` header names this machine: `localhost`, `127.x.x.x` or `[::1]`,
/// with or without a port.
pub(super) fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in [
            "127.0.0.1:3001",
            "localhost",
            "LOCALHOST:80",
            "[::1]:3001",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "evil.example:3001",
            "10.0.0.5:3001",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
