//! `$default`: the `message` binary; its handler and actions are the library beside it.

use deltacast::push::ManagementApi;
use deltacast_message::{context, handler};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use tokio::sync::OnceCell;

#[tokio::main]
async fn main() -> Result<(), Error> {
    deltacast::telemetry::init("message");
    // A wrong configuration is reported to Lambda's init-error endpoint, readable.
    let settings = deltacast::init::or_exit(deltacast::config::Settings::from_env()).await;
    let sdk = deltacast::aws::load().await;
    let app = context::App {
        store: deltacast::aws::store(&sdk, &settings),
        settings,
        doors: Default::default(),
    };
    // MANAGEMENT_ENDPOINT if configured, else derived from the first request's domain and
    // stage; either way the client is built once.
    let push = OnceCell::new();
    if let Some(endpoint) = &app.settings.management_endpoint {
        push.set(ManagementApi::new(&sdk, endpoint))?;
    }
    let (app, push, sdk) = (&app, &push, &sdk);
    run(service_fn(move |event: LambdaEvent<_>| async move {
        let push = push
            .get_or_init(|| async {
                ManagementApi::new(sdk, &handler::endpoint_of(&event.payload))
            })
            .await;
        deltacast::metrics::flushed(handler::handle(event.payload, app, push)).await
    }))
    .await
}
