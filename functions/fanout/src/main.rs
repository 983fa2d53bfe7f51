//! Stream-triggered fan-out: pushes every new delta, and every state channel's patch, to
//! its channel's subscribers.

#[cfg(test)]
mod coalesced_tests;
mod expiry;
mod frames;
mod handler;
mod patches;
#[cfg(test)]
mod testing;

use deltacast::push::{ManagementApi, RetryPolicy};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("fanout");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let (settings, endpoint) =
        deltacast::init::or_exit(deltacast::config::Settings::with_management_endpoint()).await;
    let sdk = deltacast::aws::load().await;
    let fanout = handler::Fanout {
        store: deltacast::aws::store(&sdk, &settings),
        push: ManagementApi::new(&sdk, &endpoint),
        concurrency: settings.fanout_concurrency,
        retry: RetryPolicy::from_settings(&settings),
    };
    let fanout = &fanout;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, Error>(deltacast::metrics::flushed(fanout.handle(event.payload)).await)
    }))
    .await
}
