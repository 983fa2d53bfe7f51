//! The HTTP API: publishing from servers, reading history, state and presence, and a
//! channel's deltas as server-sent events, for clients without a WebSocket. Built on
//! `lambda_http` in streaming mode, behind a Lambda function URL (`InvokeMode:
//! RESPONSE_STREAM`); docs/http.md is its guide and docs/openapi.json its reference.
//!
//! ## Layout
//! - `handler`: one request, routed (`routes`), its caller identified (`caller`), served.
//! - `incoming`: the request as the routes see it; `reply`: bodies and JSON answers;
//!   `problem`: refusals as RFC 9457 problem details with the socket's codes.
//! - `action`: a request served by the socket's own action (`deltacast_message`).
//! - `publish`: one publish or a batch, waiting for the sequencer when it has to.
//! - `reads`: history, state and presence.
//! - `sse/`: the event stream.
//! - `settings`: `HTTP_PUBLISH_WAIT_MS` and the streams' `SSE_*`; `service`: what
//!   every invocation shares.

mod action;
mod caller;
mod handler;
mod incoming;
mod problem;
mod publish;
mod reads;
mod reply;
mod routes;
mod service;
mod settings;
mod sse;

use std::sync::Arc;

use deltacast::auth::{JwtConfig, JwtVerifier};
use deltacast::config::{ConfigError, Env, Settings};
use deltacast_message::context::App;
use lambda_http::{Error, Request, run_with_streaming_response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("http");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let (settings, verifier, http) = deltacast::init::or_exit(configuration()).await;
    let sdk = deltacast::aws::load().await;
    let service = Arc::new(service::Service {
        app: App {
            store: deltacast::aws::store(&sdk, &settings),
            settings,
            doors: Default::default(),
        },
        verifier,
        settings: http,
    });
    run_with_streaming_response(service_fn(move |request: Request| {
        let service = service.clone();
        async move {
            let request = incoming::Incoming::from_lambda(request);
            Ok::<_, Error>(deltacast::metrics::flushed(handler::handle(request, service)).await)
        }
    }))
    .await
}

fn configuration() -> Result<(Settings, JwtVerifier, settings::HttpSettings), ConfigError> {
    let env = Env::from_process();
    let settings = Settings::from(&env)?;
    let verifier = JwtConfig::from_env(&env).and_then(|config| JwtVerifier::new(&config))?;
    let http = settings::HttpSettings::from(&env)?;
    Ok((settings, verifier, http))
}
