//! `$connect` REQUEST authorizer: verifies the client's JWT and hands its identity to
//! API Gateway's authorizer context.

mod handler;

use deltacast::auth::{JwtConfig, JwtVerifier};
use deltacast::config::Env;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("authorizer");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let verifier = deltacast::init::or_exit(
        JwtConfig::from_env(&Env::from_process()).and_then(|config| JwtVerifier::new(&config)),
    )
    .await;
    let verifier = &verifier;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        deltacast::metrics::flushed(handler::handle(event.payload, verifier)).await
    }))
    .await
}
