//! AWS SDK configuration, loaded once per process. Endpoints come from configuration
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `MANAGEMENT_ENDPOINT`), never from `if local` branches,
//! so the same binaries run against AWS, DynamoDB Local and the local gateway.

use aws_config::{BehaviorVersion, SdkConfig};

use crate::config::Settings;
use crate::store::{Lifetimes, Store};

/// Loads the SDK configuration from the environment.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The store for `settings`, with a DynamoDB client built from `sdk`.
pub fn store(sdk: &SdkConfig, settings: &Settings) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        settings.table_name.clone(),
        Lifetimes {
            retention: settings.retention,
            connection_ttl: settings.connection_ttl,
            publish_lease: settings.publish_lease,
        },
    )
}
