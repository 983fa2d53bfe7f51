//! Stream-triggered sequencer: gives a channel's inbox messages their seqs, writes their
//! deltas and acks the publishers; and folds state channels' ops into their documents.

mod fold;
mod handler;

use deltacast::push::{ManagementApi, RetryPolicy};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("sequencer");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let (settings, endpoint) =
        deltacast::init::or_exit(deltacast::config::Settings::with_management_endpoint()).await;
    let sdk = deltacast::aws::load().await;
    let sequencer = handler::Sequencer {
        store: deltacast::aws::store(&sdk, &settings),
        push: ManagementApi::new(&sdk, &endpoint),
        channel_limit: settings.channel_rate_limit,
        retry: RetryPolicy::from_settings(&settings),
        state: settings.state.clone(),
    };
    let sequencer = &sequencer;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, Error>(deltacast::metrics::flushed(sequencer.handle(event.payload)).await)
    }))
    .await
}
