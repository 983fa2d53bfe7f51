//! # deltacast-tests
//!
//! What the tests share: signed tokens, fresh tables in DynamoDB Local, real API Gateway
//! event payloads (from `events/`), and (for the end-to-end tests) the whole local
//! stack on free ports with a WebSocket client.
//!
//! Storage tests run against DynamoDB Local, which `make test` starts and names in
//! `DELTACAST_TEST_DYNAMODB`. Every test works in a table of its own, so tests run in
//! parallel.

pub mod events;
#[cfg(test)]
mod events_tests;
pub mod http;
pub mod logs;
pub mod push;
pub mod stack;
pub mod state_view;
pub mod tokens;

/// The load generator, now its own crate (`infra/load`); re-exported for older paths.
pub use deltacast_load as load;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use deltacast::store::{Lifetimes, Store};
use deltacast_local::template::StackSpec;

/// The variable that names DynamoDB Local's endpoint for tests.
pub const DYNAMODB_VARIABLE: &str = "DELTACAST_TEST_DYNAMODB";

/// The checkout's top folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .to_path_buf()
}

/// DynamoDB Local's endpoint, as `make test` sets it.
pub fn dynamodb_endpoint() -> String {
    std::env::var(DYNAMODB_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{DYNAMODB_VARIABLE} is not set: run the tests with `make test`, which starts DynamoDB Local \
             (or start it with `infra/dynamodb-local/dynamodb-local start 8000` and set {DYNAMODB_VARIABLE}=http://127.0.0.1:8000)"
        )
    })
}

/// SDK configuration for DynamoDB Local: static dummy credentials, us-east-1.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "deltacast-tests",
        ))
        .endpoint_url(dynamodb_endpoint())
        .load()
        .await
}

/// A DynamoDB client for DynamoDB Local.
pub async fn dynamodb() -> Client {
    Client::new(&sdk_config().await)
}

/// A unique name for a test's table.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// Creates a fresh table with the template's key schema, stream and TTL.
pub async fn fresh_table() -> (Client, String) {
    let client = dynamodb().await;
    let name = unique_name("test");
    let spec =
        StackSpec::load(&workspace_root().join("template.yaml")).expect("template.yaml parses");
    spec.table
        .create(&client, &name)
        .await
        .expect("table created");
    (client, name)
}

/// The store's default lifetimes (24 h retention, 3 h connections, 15 s lease).
pub fn lifetimes() -> Lifetimes {
    Lifetimes {
        retention: Duration::from_secs(86_400),
        connection_ttl: Duration::from_secs(3 * 3600),
        publish_lease: Duration::from_secs(15),
    }
}

/// A store on a fresh table.
pub async fn fresh_store() -> Store {
    let (client, name) = fresh_table().await;
    Store::new(client, name, lifetimes())
}

/// Every item of the store's table (tests only: this scans).
pub async fn all_items(store: &Store) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = store
            .client()
            .scan()
            .table_name(store.table())
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

/// How many items mention `needle` in any string attribute (keys included), inbox items
/// aside.
pub async fn items_naming(store: &Store, needle: &str) -> usize {
    all_items(store)
        .await
        .iter()
        .filter(|item| {
            // A publish's inbox item keeps the connection its ack went to as part of its
            // claim on the id, for the retention: it is the publisher's, not the
            // connection's, and outlives it on purpose.
            !item["pk"].as_s().is_ok_and(|pk| pk.starts_with("q#"))
                && item
                    .values()
                    .any(|value| value.as_s().is_ok_and(|s| s.contains(needle)))
        })
        .count()
}

/// Publishes `count` deltas of `data_bytes` bytes of data each (a JSON string) on
/// `channel` straight through the store, as other publishers would have: no rate-limit
/// tokens, no frames.
pub async fn publish_deltas(store: &Store, channel: &str, count: usize, data_bytes: usize) {
    use deltacast::protocol::{Channel, MessageId, Payload};
    let channel = Channel::parse(channel).expect("a channel name");
    let data = Payload::from_json(format!("\"{}\"", "x".repeat(data_bytes.saturating_sub(2))))
        .expect("a JSON string");
    for n in 0..count {
        let id = MessageId::parse(&format!("stored-{n}")).expect("a message id");
        store
            .publish(deltacast::store::NewDelta {
                channel: &channel,
                id: &id,
                from: "someone",
                data: &data,
                expect_seq: None,
            })
            .await
            .expect("published");
    }
}

/// Sets the `ttl` of item (`pk`, `sk`) one second in the past, as time would: expired, and
/// not yet deleted by DynamoDB's TTL.
pub async fn expire_item(store: &Store, pk: &str, sk: &str) {
    let past = deltacast::clock::now_secs() - 1;
    store
        .client()
        .update_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .update_expression("SET #ttl = :past")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_names("#ttl", "ttl")
        .expression_attribute_values(":past", AttributeValue::N(past.to_string()))
        .send()
        .await
        .expect("the item exists");
}

/// Writes deltas `seqs` of `epoch` on `channel` (data: the seq), expiring at `ttl` (Unix
/// seconds), and the channel's epoch item, straight into the table in concurrent batches:
/// a backlog that TTL has not deleted yet, with no publish involved.
pub async fn write_history(
    store: &Store,
    channel: &str,
    epoch: &str,
    seqs: std::ops::RangeInclusive<u64>,
    ttl: u64,
) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    use deltacast::clock;
    use deltacast::protocol::{Delta, Payload};
    use deltacast::store::items::{DeltaItem, EPOCH_SK, EpochItem, channel_pk};
    use futures::StreamExt;

    let epoch_item = EpochItem {
        pk: channel_pk(channel),
        sk: EPOCH_SK.into(),
        ep: epoch.into(),
        at: clock::now_ms(),
        busy: None,
    };
    let deltas = seqs.map(|seq| {
        let delta = Delta {
            channel: channel.into(),
            seq,
            epoch: epoch.into(),
            id: format!("m{seq}"),
            from: "alice".into(),
            ts: clock::now_ms(),
            data: Payload::from_json(seq.to_string()).expect("a number is JSON"),
        };
        serde_dynamo::to_item(DeltaItem::new(&delta, ttl)).expect("a delta item")
    });
    let requests: Vec<WriteRequest> =
        std::iter::once(serde_dynamo::to_item(epoch_item).expect("an epoch item"))
            .chain(deltas)
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .expect("an item");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
    futures::stream::iter(requests.chunks(25).map(|chunk| async move {
        let mut pending = chunk.to_vec();
        while !pending.is_empty() {
            let out = store
                .client()
                .batch_write_item()
                .request_items(store.table(), pending)
                .send()
                .await
                .expect("batch write");
            pending = out
                .unprocessed_items
                .and_then(|mut left| left.remove(store.table()))
                .unwrap_or_default();
        }
    }))
    .buffer_unordered(8)
    .collect::<Vec<()>>()
    .await;
}
