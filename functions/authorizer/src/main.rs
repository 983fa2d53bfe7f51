//! `$connect` REQUEST authorizer: verifies the client's JWT and hands its identity to
//! API Gateway's authorizer context.

mod handler;

use deltacast::auth::{JwtConfig, JwtVerifier};
use deltacast::config::Env;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init();
    let verifier = JwtVerifier::new(&JwtConfig::from_env(&Env::from_process())?)?;
    let verifier = &verifier;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        handler::handle(event.payload, verifier).await
    }))
    .await
}
