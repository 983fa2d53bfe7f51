//! Sequences a batch of stream records (new and taken-over inbox items): the records are
//! grouped by channel, in stream order, and each channel's messages go to
//! [`Store::sequence`] together, channels concurrently. Each publisher then gets its
//! answer (an `ack`, `conflict` or `rate_limited`) on the connection that sent the message.
//!
//! A channel whose sequencing fails (storage unavailable) reports its records in
//! `batchItemFailures`, so Lambda delivers them again; sequencing them again is safe (the
//! store finds the messages it already stored). An answer that cannot be posted is only
//! logged: the message is stored, and a publisher that missed its ack sends the same id
//! again and is answered from the store.

use std::collections::BTreeMap;
use std::time::Instant;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use deltacast::answers;
use deltacast::config::RateLimit;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::items::InboxItem;
use deltacast::store::{Sequenced, Store};
use deltacast::stream::{StreamPublish, publish_of};
use futures::{StreamExt, stream};
use tracing::{debug, error, info, warn};

/// Channels sequenced at once in one invocation.
const CHANNEL_CONCURRENCY: usize = 16;

/// The sequencer's dependencies, built once per process.
pub struct Sequencer<P> {
    /// The table.
    pub store: Store,
    /// Where answers go.
    pub push: P,
    /// `CHANNEL_RATE_LIMIT_*`, unless off.
    pub channel_limit: Option<RateLimit>,
    /// Retries per post.
    pub retry: RetryPolicy,
}

impl<P: Push> Sequencer<P> {
    /// Sequences the batch; returns the records to deliver again.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let started = Instant::now();
        // channel → its messages, with each one's record sequence number, in stream order.
        let mut channels: BTreeMap<String, Vec<(String, InboxItem)>> = BTreeMap::new();
        let mut order: Vec<String> = Vec::new();
        for record in event.records {
            let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
            order.push(sequence_number.clone());
            match publish_of(record) {
                StreamPublish::Publish(item) => match item.channel() {
                    Some(channel) => channels
                        .entry(channel.to_owned())
                        .or_default()
                        .push((sequence_number, *item)),
                    None => error!("inbox item without a channel; skipped"),
                },
                StreamPublish::Malformed(reason) => {
                    error!(%reason, "unreadable inbox item; skipped")
                }
                StreamPublish::NotAPublish => {}
            }
        }
        let results: Vec<(usize, Option<Vec<String>>)> = stream::iter(channels)
            .map(|(channel, records)| async move {
                let numbers: Vec<String> = records.iter().map(|(n, _)| n.clone()).collect();
                let items = records.into_iter().map(|(_, item)| item).collect();
                match self.store.sequence(&channel, items, self.channel_limit).await {
                    Ok(outcomes) => (self.answer_all(&outcomes).await, None),
                    Err(err) => {
                        error!(channel, error = %err, "could not sequence; the records will come again");
                        (0, Some(numbers))
                    }
                }
            })
            .buffer_unordered(CHANNEL_CONCURRENCY)
            .collect()
            .await;
        let mut failed: Vec<String> = Vec::new();
        let mut answered = 0;
        for (n, failures) in results {
            answered += n;
            failed.extend(failures.unwrap_or_default());
        }
        // In stream order, so the first failure is the record Lambda resumes from.
        failed.sort_by_key(|n| order.iter().position(|o| o == n));
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|n| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(n);
                failure
            })
            .collect();
        info!(
            records = order.len(),
            answered,
            failed_records = response.batch_item_failures.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "sequencing done"
        );
        response
    }

    /// Posts each publisher its answer; returns how many were delivered.
    async fn answer_all(&self, outcomes: &[(InboxItem, Sequenced)]) -> usize {
        stream::iter(outcomes)
            .map(|(item, outcome)| async move {
                // Published through the store directly (a tool): nobody to answer.
                if item.conn.is_empty() {
                    return false;
                }
                let Some(frame) = answers::sequenced(item, outcome, self.channel_limit) else {
                    warn!("inbox item with unparsable names; not answered");
                    return false;
                };
                match post_with_retry(&self.push, &item.conn, &frame, self.retry).await {
                    Ok(()) => true,
                    Err(PushError::Gone) => {
                        debug!(connection_id = item.conn, "publisher gone before its answer");
                        false
                    }
                    Err(err) => {
                        warn!(connection_id = item.conn, error = %err, "could not answer a publisher");
                        false
                    }
                }
            })
            .buffer_unordered(64)
            .filter(|posted| std::future::ready(*posted))
            .count()
            .await
    }
}
