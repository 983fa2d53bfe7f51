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
use deltacast::store::{Store, StoreError};
use deltacast::stream::{StreamDelta, delta_of};
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
        failed.sort_by(|a, b| {
            pending[*a]
                .sequence_number
                .cmp(&pending[*b].sequence_number)
        });
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
            match post_with_retry(&self.push, connection, &pending[*index].frame, self.retry).await
            {
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
        match delta_of(record) {
            StreamDelta::NotADelta => {}
            StreamDelta::Delta(delta) => {
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
            StreamDelta::Malformed(reason) => {
                error!(sequence_number, %reason, "skipping undecodable stream record")
            }
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::protocol::Channel;
    use deltacast::push::RetryPolicy;
    use deltacast_tests::push::RecordingPush;
    use deltacast_tests::{events, fresh_store, items_naming};
    use serde_json::{Value, json};
    use std::time::Duration;

    async fn fanout_with(subscriptions: &[(&str, &str)]) -> Fanout<RecordingPush> {
        let store = fresh_store().await;
        for (connection, channel) in subscriptions {
            store
                .put_connection(&events::new_connection(connection, "user"))
                .await
                .unwrap();
            store
                .subscribe(
                    connection,
                    "user",
                    &Channel::parse(channel).unwrap(),
                    deltacast::clock::now_ms(),
                    100,
                )
                .await
                .unwrap();
        }
        Fanout {
            store,
            push: RecordingPush::new(),
            concurrency: 8,
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(1),
            },
        }
    }

    fn seqs(frames: &[Value]) -> Vec<(String, u64)> {
        frames
            .iter()
            .map(|f| {
                (
                    f["channel"].as_str().unwrap().to_owned(),
                    f["seq"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn failed_ids(response: &DynamoDbEventResponse) -> Vec<&str> {
        response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_deref().unwrap())
            .collect()
    }

    #[tokio::test]
    async fn delivers_each_channels_deltas_in_seq_order() {
        let fanout = fanout_with(&[
            ("c1", "chat:lobby"),
            ("c2", "chat:lobby"),
            ("c2", "news"),
            ("c3", "news"),
        ])
        .await;
        let response = fanout.handle(events::stream_batch()).await;
        assert!(response.batch_item_failures.is_empty());
        let lobby = |n| ("chat:lobby".to_owned(), n);
        let news = ("news".to_owned(), 7);
        assert_eq!(
            seqs(&fanout.push.frames("c1")),
            [lobby(1), lobby(2)],
            "sorted by seq"
        );
        assert_eq!(
            seqs(&fanout.push.frames("c2")),
            [lobby(1), lobby(2), news.clone()]
        );
        assert_eq!(seqs(&fanout.push.frames("c3")), [news]);
        assert_eq!(
            fanout.push.frames("c1")[0],
            json!({"type": "delta", "channel": "chat:lobby", "seq": 1, "epoch": "19a5b2c3d4e9f2c",
                   "id": "msg-1", "from": "alice", "ts": 1794384942100u64, "data": {"text": "first"}})
        );
    }

    #[tokio::test]
    async fn a_gone_connection_is_pruned_and_the_rest_still_delivered() {
        let fanout = fanout_with(&[
            ("alive", "chat:lobby"),
            ("dead", "chat:lobby"),
            ("dead", "news"),
        ])
        .await;
        fanout.push.set_gone("dead");
        let response = fanout.handle(events::stream_batch()).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "410 is not a failure"
        );
        assert_eq!(fanout.push.frames("alive").len(), 2);
        assert_eq!(
            items_naming(&fanout.store, "dead").await,
            0,
            "the target is removed, subscriptions too"
        );
        assert_eq!(fanout.push.attempts("dead"), 1, "no retry after 410");
        assert!(
            items_naming(&fanout.store, "alive").await > 0,
            "the others are kept"
        );
    }

    #[tokio::test]
    async fn throttled_posts_are_retried_within_the_invocation() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        fanout.push.fail_next(
            "c1",
            vec![PushError::Throttled, PushError::Failed("502".into())],
        );
        let response = fanout.handle(events::stream_batch()).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(seqs(&fanout.push.frames("c1")).len(), 2);
        assert_eq!(fanout.push.attempts("c1"), 4);
    }

    #[tokio::test]
    async fn persistent_failures_report_the_undelivered_records() {
        let fanout = fanout_with(&[("ok", "chat:lobby"), ("flaky", "chat:lobby")]).await;
        let batch = events::stream_batch();
        let response = {
            // seq 1 goes through; seq 2 fails every attempt.
            struct AfterFirst<'a>(&'a RecordingPush);
            impl Push for AfterFirst<'_> {
                async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
                    if connection_id == "flaky" && frame.contains("\"seq\":2") {
                        return Err(PushError::Failed("500".into()));
                    }
                    self.0.post(connection_id, frame).await
                }
            }
            let failing = Fanout {
                store: fanout.store.clone(),
                push: AfterFirst(&fanout.push),
                concurrency: 8,
                retry: fanout.retry,
            };
            failing.handle(batch).await
        };
        assert_eq!(
            failed_ids(&response),
            ["4421584500000000017450439092"],
            "only seq 2's record"
        );
        assert_eq!(
            seqs(&fanout.push.frames("flaky")),
            [("chat:lobby".to_owned(), 1)]
        );
        assert_eq!(
            seqs(&fanout.push.frames("ok")).len(),
            2,
            "other connections are unaffected"
        );
    }

    #[tokio::test]
    async fn skips_records_that_are_not_new_deltas() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        let batch: Value = serde_json::from_str(
            &std::fs::read_to_string(
                deltacast_tests::workspace_root().join("tests/fixtures/stream-batch.json"),
            )
            .unwrap(),
        )
        .unwrap();
        let mut records = batch["Records"].as_array().unwrap().clone();
        let mut modify = records[0].clone();
        modify["eventName"] = json!("MODIFY");
        let mut subscription = records[0].clone();
        subscription["dynamodb"]["Keys"]["sk"] = json!({"S": "s#c9"});
        let mut broken = records[1].clone();
        broken["dynamodb"]["NewImage"]["data"] = json!({"S": "{not json"});
        let duplicate = records[1].clone();
        records = vec![modify, subscription, broken, duplicate.clone(), duplicate];
        let response = fanout.handle(events::stream_event(records)).await;
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(
            seqs(&fanout.push.frames("c1")),
            [("chat:lobby".to_owned(), 1)],
            "one copy of seq 1 only"
        );
    }
}
