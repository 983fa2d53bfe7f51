//! One request: route it, identify the caller, run the route, answer. Every refusal is a
//! problem document; nothing is read or written before the caller is identified and the
//! request's shape checked. Logs carry the route's template and the status, never the
//! channel's payloads, the query string (it may hold a token) or the token.

use std::sync::Arc;

use lambda_http::http::{Response, StatusCode};
use serde_json::{Map, Value};
use tracing::{Instrument, info, info_span};

use crate::caller::identify;
use crate::incoming::Incoming;
use crate::problem::Problem;
use crate::reply::{Body, json, with_type};
use crate::routes::Route;
use crate::service::Service;
use crate::{publish, reads, sse};

/// The OpenAPI document of this API (docs/openapi.json), served at `/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Answers `request`.
pub async fn handle(request: Incoming, service: Arc<Service>) -> Response<Body> {
    let route = Route::of(&request.method, &request.path);
    let name = route.as_ref().map(Route::name).unwrap_or("unrouted");
    let span = info_span!("request", route = name, method = %request.method);
    async {
        let response = match route {
            Ok(route) => serve(route, &request, service)
                .await
                .unwrap_or_else(Problem::into_response),
            Err(problem) => problem.into_response(),
        };
        info!(status = response.status().as_u16(), "answered");
        deltacast::metrics::http_request(name, response.status().as_u16());
        response
    }
    .instrument(span)
    .await
}

async fn serve(
    route: Route,
    request: &Incoming,
    service: Arc<Service>,
) -> Result<Response<Body>, Problem> {
    if route == Route::OpenApi {
        return Ok(with_type(
            StatusCode::OK,
            "application/json",
            OPENAPI.to_owned(),
        ));
    }
    let identity = identify(request, &service.verifier).await?;
    let app = &service.app;
    // One deadline for the request's waits on the sequencer, a second before its time
    // limit at the latest.
    let wait = service.settings.publish_wait.min(
        request
            .time_left()
            .saturating_sub(std::time::Duration::from_secs(1)),
    );
    let deadline = tokio::time::Instant::now() + wait;
    let answer = match route {
        Route::Publish(channel) => {
            request.reject_unknown(&["token"])?;
            publish::one(&channel, object(request)?, &identity, app, deadline).await?
        }
        Route::PublishBatch => {
            request.reject_unknown(&["token"])?;
            publish::batch(object(request)?, &identity, app, deadline).await?
        }
        Route::History(channel) => reads::history(&channel, request, &identity, app).await?,
        Route::State(channel) => reads::state(&channel, request, &identity, app).await?,
        Route::Presence(channel) => reads::presence(&channel, request, &identity, app).await?,
        Route::Events(channel) => {
            return sse::open(channel, request, identity, service.clone()).await;
        }
        Route::OpenApi => unreachable!("answered above"),
    };
    Ok(json(StatusCode::OK, &answer))
}

/// The request's body as a JSON object, or a problem that says what it must be.
fn object(request: &Incoming) -> Result<Map<String, Value>, Problem> {
    let content_type = request.header("content-type").unwrap_or("application/json");
    if !content_type
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "the body must be application/json, not {}",
                content_type.chars().take(64).collect::<String>()
            ),
        ));
    }
    match serde_json::from_slice::<Value>(&request.body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(Problem::bad_request("the body must be a JSON object")),
        Err(error) => Err(Problem::bad_request(format!(
            "the body is not JSON: {error}"
        ))),
    }
}
