//! `$disconnect`: removes the connection and every item that names it.

mod handler;

use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("disconnect");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let settings = deltacast::init::or_exit(deltacast::config::Settings::from_env()).await;
    let store = deltacast::aws::store(&deltacast::aws::load().await, &settings);
    let store = &store;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        deltacast::metrics::flushed(handler::handle(event.payload, store)).await
    }))
    .await
}
