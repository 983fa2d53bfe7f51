//! DynamoDB Local's write ceiling on this machine, measured in the same run as the
//! channel figures: concurrent small `PutItem`s on a scratch table for a few seconds,
//! with and without a stream (the stack's table has one, and DynamoDB Local writes a
//! stream record with every item). A publish costs a few writes, so this bounds what any
//! publish path can sustain here (on AWS the ceiling is per partition instead: see
//! docs/data-model.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use serde::Serialize;

/// Most items one measurement writes, however fast the writes are.
const MAX_ITEMS: u64 = 500_000;

/// What the measurement saw.
#[derive(Clone, Debug, Serialize)]
pub struct WriteCeiling {
    /// Successful `PutItem`s per second.
    pub items_per_second: f64,
    /// Items written.
    pub items: u64,
    /// `PutItem`s that failed.
    pub errors: u64,
    /// Writers at once.
    pub concurrency: usize,
    /// Size of each item's `data`, bytes.
    pub item_bytes: usize,
    /// How long the writers ran, s.
    pub seconds: f64,
    /// Whether the table had a stream.
    pub streamed: bool,
}

/// Writes small items with `concurrency` writers for `duration` (at most [`MAX_ITEMS`])
/// on a scratch table (with a stream when `streamed`) in the DynamoDB Local at `endpoint`,
/// then deletes the table. Measure the streamed ceiling last on an instance: the stream
/// records it leaves slow every later write there (`fresh_dynamodb.rs`).
pub async fn measure(
    endpoint: &str,
    concurrency: usize,
    duration: Duration,
    streamed: bool,
) -> Result<WriteCeiling, String> {
    let client = Client::new(&deltacast_local::stack::local_sdk_config(endpoint).await);
    let stream = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewAndOldImages)
        .build()
        .map_err(|e| e.to_string())?;
    let table = format!("bench-ceiling-{:016x}", rand::random::<u64>());
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()
                .map_err(|e| e.to_string())?,
        )
        .set_stream_specification(streamed.then_some(stream))
        .send()
        .await
        .map_err(|e| format!("creating the scratch table: {e}"))?;
    let item_bytes = 200;
    let written = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut writers = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let (client, table) = (client.clone(), table.clone());
        let (written, errors) = (written.clone(), errors.clone());
        writers.push(tokio::spawn(async move {
            let data = "x".repeat(item_bytes);
            let mut n = 0u64;
            while Instant::now() < deadline && written.load(Ordering::Relaxed) < MAX_ITEMS {
                let put = client
                    .put_item()
                    .table_name(&table)
                    .item("pk", AttributeValue::S(format!("w{worker}-{n}")))
                    .item("data", AttributeValue::S(data.clone()))
                    .send()
                    .await;
                match put {
                    Ok(_) => written.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
                n += 1;
            }
        }));
    }
    // A hung request must not hold the measurement past its end.
    let give_up = tokio::time::Instant::now() + duration + Duration::from_secs(10);
    for writer in writers {
        let abort = writer.abort_handle();
        if tokio::time::timeout_at(give_up, writer).await.is_err() {
            abort.abort();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = client.delete_table().table_name(&table).send().await;
    let items = written.load(Ordering::Relaxed);
    Ok(WriteCeiling {
        items_per_second: if seconds > 0.0 {
            items as f64 / seconds
        } else {
            0.0
        },
        items,
        errors: errors.load(Ordering::Relaxed),
        concurrency,
        item_bytes,
        seconds,
        streamed,
    })
}
