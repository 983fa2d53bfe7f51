//! Delivers a batch of stream records (new delta items) to subscribers.
//!
//! DynamoDB Streams orders records per item only, and every delta is its own item, so the
//! batch is sorted by (channel, seq) here and each connection gets its deltas of a channel
//! one after another, in seq order. Connections are served concurrently, up to
//! `concurrency` posts in flight. A post that keeps failing after its retries marks its
//! delta (and the connection's later ones) failed; those records are reported in
//! `batchItemFailures`, Lambda retries from the lowest one, and clients drop the
//! duplicates by seq. A connection that answers 410 is removed with its subscriptions.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use deltacast::protocol::Delta;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::items::{DELTA_PREFIX, DeltaItem};
use deltacast::store::{Store, StoreError};
use futures::{StreamExt, stream};
use tracing::{error, info, warn};

/// The fan-out's dependencies, built once per process.
pub struct Fanout<P> {
    /// The table.
    pub store: Store,
    /// Where frames go.
    pub push: P,
    /// Posts in flight at once.
    pub concurrency: usize,
    /// Retries per post.
    pub retry: RetryPolicy,
}

/// One delta of the batch, with the stream record it came from.
struct Pending {
    sequence_number: String,
    delta: Delta,
    frame: String,
}

/// What happened to one connection's share of the batch.
enum Outcome {
    Delivered(usize),
    Gone,
    /// Delivered this many, then failed on the next one.
    Failed(usize, PushError),
}

impl<P: Push> Fanout<P> {
    /// Delivers the batch; returns the records to retry.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let started = Instant::now();
        let mut pending = decode(event.records);
        pending.sort_by(|a, b| {
            (a.delta.channel.as_str(), a.delta.seq).cmp(&(b.delta.channel.as_str(), b.delta.seq))
        });

        // connection id → its deltas (indexes into `pending`), channel by channel in seq order.
        let mut plan: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut failed: HashSet<usize> = HashSet::new();
        let mut start = 0;
        while start < pending.len() {
            let channel = pending[start].delta.channel.clone();
            let end = start
                + pending[start..]
                    .iter()
                    .take_while(|p| p.delta.channel == channel)
                    .count();
            match self.subscribers(&channel).await {
                Ok(connections) => {
                    for connection in connections {
                        plan.entry(connection).or_default().extend(start..end);
                    }
                }
                Err(err) => {
                    error!(channel, error = %err, "could not read subscribers");
                    failed.extend(start..end);
                }
            }
            start = end;
        }

        let pending = &pending;
        let outcomes: Vec<(String, Vec<usize>, Outcome)> = stream::iter(plan)
            .map(|(connection, deltas)| async move {
                let outcome = self.deliver(&connection, &deltas, pending).await;
                (connection, deltas, outcome)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;

        let (mut delivered, mut gone, mut failures) = (0usize, 0usize, 0usize);
        let mut dead = Vec::new();
        for (connection, deltas, outcome) in outcomes {
            match outcome {
                Outcome::Delivered(n) => delivered += n,
                Outcome::Gone => {
                    gone += 1;
                    dead.push(connection);
                }
                Outcome::Failed(n, err) => {
                    delivered += n;
                    failures += 1;
                    warn!(connection_id = connection, error = %err, "delivery failed after retries");
                    failed.extend(&deltas[n..]);
                }
            }
        }
        let store = &self.store;
        stream::iter(dead)
            .for_each_concurrent(self.concurrency.max(1), |connection| async move {
                match store.remove_connection(&connection).await {
                    Ok(removed) => info!(connection_id = connection, removed, "pruned gone connection"),
                    Err(err) => warn!(connection_id = connection, error = %err, "could not prune gone connection"),
                }
            })
            .await;

        let mut response = DynamoDbEventResponse::default();
        let mut failed: Vec<usize> = failed.into_iter().collect();
        failed.sort_by(|a, b| pending[*a].sequence_number.cmp(&pending[*b].sequence_number));
        response.batch_item_failures = failed
            .into_iter()
            .map(|i| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(pending[i].sequence_number.clone());
                failure
            })
            .collect();
        info!(
            deltas = pending.len(),
            delivered,
            gone,
            failed_connections = failures,
            failed_records = response.batch_item_failures.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fan-out done"
        );
        response
    }

    async fn subscribers(&self, channel: &str) -> Result<Vec<String>, StoreError> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (ids, next) = self.store.subscribers_page(channel, start).await?;
            all.extend(ids);
            match next {
                Some(key) => start = Some(key),
                None => return Ok(all),
            }
        }
    }

    async fn deliver(&self, connection: &str, deltas: &[usize], pending: &[Pending]) -> Outcome {
        for (n, index) in deltas.iter().enumerate() {
            match post_with_retry(&self.push, connection, &pending[*index].frame, self.retry).await {
                Ok(()) => {}
                Err(PushError::Gone) => return Outcome::Gone,
                Err(err) => return Outcome::Failed(n, err),
            }
        }
        Outcome::Delivered(deltas.len())
    }
}

/// Keeps the records that are new deltas; anything else is logged and skipped, so one bad
/// record cannot block the stream.
fn decode(records: Vec<EventRecord>) -> Vec<Pending> {
    let mut pending = Vec::with_capacity(records.len());
    let mut seen: HashMap<(String, u64, String), ()> = HashMap::new();
    for record in records {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        if record.event_name != "INSERT" {
            continue;
        }
        let is_delta = record
            .change
            .keys
            .get("sk")
            .and_then(|v| match v {
                serde_dynamo::AttributeValue::S(s) => Some(s.starts_with(DELTA_PREFIX)),
                _ => None,
            })
            .unwrap_or(false);
        if !is_delta {
            continue;
        }
        let delta = serde_dynamo::from_item::<_, DeltaItem>(record.change.new_image)
            .map_err(|e| e.to_string())
            .and_then(|item| Delta::try_from(item).map_err(|e| e.to_string()));
        match delta {
            Ok(delta) => {
                // A record delivered twice in one batch is sent once.
                if seen
                    .insert((delta.channel.clone(), delta.seq, delta.epoch.clone()), ())
                    .is_some()
                {
                    continue;
                }
                let frame = delta.to_frame();
                pending.push(Pending {
                    sequence_number,
                    delta,
                    frame,
                });
            }
            Err(reason) => error!(sequence_number, %reason, "skipping undecodable stream record"),
        }
    }
    pending
}
