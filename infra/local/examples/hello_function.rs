//! The hello-world Lambda the start-up benchmark compares the functions with: the
//! `lambda_runtime` example as its README writes it (multi-threaded Tokio runtime, the
//! runtime crate's default tracing subscriber, no AWS SDK), answering a constant.
//!
//! `cargo build --release --examples` builds it with the functions' release profile, into
//! `target/release/examples/hello_function`.

use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    run(service_fn(|_event: LambdaEvent<Value>| async {
        Ok::<_, Error>(json!({ "message": "hello" }))
    }))
    .await
}
