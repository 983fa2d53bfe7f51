//! Delivers a batch of stream records (new delta items) to subscribers.
//!
//! DynamoDB Streams orders records per item only, and every delta is its own item, so the
//! batch is sorted by (channel, epoch, seq) here (epochs in the order they first appear)
//! and each connection gets its deltas of a channel one after another, in seq order.
//! Connections are served concurrently, up to `concurrency` posts in flight.
//!
//! A subscription made with `coalesce` gets its consecutive deltas of one channel and one
//! epoch in as few `deltas` frames of at most 32 KB as it takes (`frames.rs`); any other
//! gets one `delta` frame per delta, as always.
//!
//! What a failed post means for its record (for a `deltas` frame: for each of its deltas,
//! so a frame that fails fails its first delta and everything after it):
//! - 410: the connection is gone; it is removed with its subscriptions, nothing fails.
//! - 429, 5xx, timeouts: retried with backoff; if it still fails, its delta (and the
//!   connection's later ones) are reported in `batchItemFailures`. Lambda retries from
//!   the first of them, and clients drop the re-sent seqs.
//! - 403: the function may not post at all (role or endpoint misconfigured), so the
//!   record fails too and ends up in the on-failure queue rather than being dropped.
//! - Any other 4xx (a frame over the limit, a malformed request): sending it again cannot
//!   help and would hold up the shard, so it is logged and skipped for that connection;
//!   the client sees a seq gap and fetches `history`.
//!
//! A subscription whose token has expired gets no deltas; its connection is told once
//! instead (`expiry.rs`). State channels' patches come in the same stream and are
//! delivered beside the deltas (`patches.rs`).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use aws_lambda_events::dynamodb::{Event, EventRecord};
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use deltacast::clock;
use deltacast::metrics;
use deltacast::protocol::Delta;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::Store;
use deltacast::stream::{StreamDelta, delta_of};
use futures::{StreamExt, stream};
use tracing::{debug, error, info, warn};

use crate::frames::{self, MAX_FRAME_BYTES, Part};
use crate::patches;

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
    /// The record's place in the batch, which is stream order.
    position: usize,
    sequence_number: String,
    delta: Delta,
    /// Its `delta` frame.
    frame: String,
    /// Its JSON object, as an element of a `deltas` frame.
    element: String,
}

/// One delta of a connection's share of the batch.
struct Entry {
    /// Its index in the batch's `pending`.
    index: usize,
    /// Whether the connection subscribed to its channel with `coalesce`.
    coalesce: bool,
}

/// What happened to one connection's share of the batch.
enum Outcome {
    /// Delivered this many deltas in `frames` frames; skipped this many that can never
    /// be delivered.
    Delivered {
        delivered: usize,
        skipped: usize,
        frames: usize,
    },
    Gone,
    /// Delivered `delivered` deltas in `frames` frames, then failed on the frame starting
    /// with the delta at `from` in the connection's list.
    Failed {
        delivered: usize,
        frames: usize,
        from: usize,
        error: PushError,
    },
}

impl<P: Push> Fanout<P> {
    /// Delivers the batch; returns the records to retry.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let started = Instant::now();
        let records = event.records.len();
        let created = creation_times(&event.records);
        let patches = patches::collect(&event.records);
        let mut pending = decode(event.records);
        metrics::stream_batch(records, oldest_age_ms(&created, &pending, clock::now_ms()));
        // A channel's history can start over (a new epoch, seqs from 1) between two of
        // its records; the new epoch's deltas come after the old one's in the stream.
        let mut epoch_order: HashMap<(String, String), usize> = HashMap::new();
        for p in &pending {
            epoch_order
                .entry((p.delta.channel.clone(), p.delta.epoch.clone()))
                .or_insert(p.position);
        }
        pending.sort_by_cached_key(|p| {
            let epoch = epoch_order[&(p.delta.channel.clone(), p.delta.epoch.clone())];
            (p.delta.channel.clone(), epoch, p.delta.seq)
        });

        // connection id → its deltas, channel by channel in seq order.
        let mut plan: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        // Connections subscribed with a token that has expired: told, never delivered to.
        let mut expired: BTreeSet<String> = BTreeSet::new();
        let now = clock::now_secs();
        let mut failed: HashSet<usize> = HashSet::new();
        let mut start = 0;
        while start < pending.len() {
            let channel = pending[start].delta.channel.clone();
            let end = start
                + pending[start..]
                    .iter()
                    .take_while(|p| p.delta.channel == channel)
                    .count();
            match self.store.subscribers(&channel).await {
                Ok(subscribers) => {
                    info!(
                        channel,
                        epoch = pending[start].delta.epoch,
                        first_seq = pending[start].delta.seq,
                        last_seq = pending[end - 1].delta.seq,
                        subscribers = subscribers.len(),
                        "fanning out"
                    );
                    for subscriber in subscribers {
                        if subscriber.expired(now) {
                            expired.insert(subscriber.connection_id);
                        } else {
                            plan.entry(subscriber.connection_id).or_default().extend(
                                (start..end).map(|index| Entry {
                                    index,
                                    coalesce: subscriber.coalesce,
                                }),
                            );
                        }
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
        let outcomes: Vec<(String, Vec<Entry>, Outcome)> = stream::iter(plan)
            .map(|(connection, deltas)| async move {
                let outcome = self.deliver(&connection, &deltas, pending).await;
                (connection, deltas, outcome)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;

        let (mut delivered, mut skipped, mut gone, mut failures) = (0usize, 0, 0, 0);
        let mut posted = 0;
        let mut dead = Vec::new();
        for (connection, deltas, outcome) in outcomes {
            match outcome {
                Outcome::Delivered {
                    delivered: n,
                    skipped: s,
                    frames,
                } => {
                    delivered += n;
                    skipped += s;
                    posted += frames;
                }
                Outcome::Gone => {
                    gone += 1;
                    dead.push(connection);
                }
                Outcome::Failed {
                    delivered: n,
                    frames,
                    from,
                    error,
                } => {
                    delivered += n;
                    posted += frames;
                    failures += 1;
                    warn!(connection_id = connection, %error, "delivery failed after retries");
                    failed.extend(deltas[from..].iter().map(|entry| entry.index));
                }
            }
        }
        let patched = patches::deliver(
            &self.store,
            &self.push,
            self.retry,
            self.concurrency,
            patches,
        )
        .await;
        dead.extend(patched.gone);
        dead.sort_unstable();
        dead.dedup();
        let told = self.tell_expired(&expired, &mut dead).await;
        // Every connection found gone (410), told of its expiry or not; those removed
        // because they were told are not in `dead`.
        dead.sort_unstable();
        dead.dedup();
        metrics::connections_pruned(dead.len());
        let expired = expired.len();
        metrics::deliveries(delivered, posted);
        metrics::state_patches(patched.frames - patched.presence_frames);
        metrics::presence_patches(patched.presence_frames);
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
        // In stream order, so the first failure is the record Lambda resumes from.
        let mut failed: Vec<(usize, String)> = failed
            .into_iter()
            .map(|i| (pending[i].position, pending[i].sequence_number.clone()))
            .chain(patched.failed)
            .collect();
        failed.sort();
        response.batch_item_failures = failed
            .into_iter()
            .map(|(_, sequence_number)| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(sequence_number);
                failure
            })
            .collect();
        info!(
            deltas = pending.len(),
            delivered,
            frames = posted,
            patch_frames = patched.frames,
            skipped,
            gone,
            expired,
            told,
            failed_connections = failures,
            failed_records = response.batch_item_failures.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fan-out done"
        );
        response
    }

    /// Posts a connection's deltas, frame by frame, stopping at the first frame that
    /// fails (or at a 410).
    async fn deliver(&self, connection: &str, deltas: &[Entry], pending: &[Pending]) -> Outcome {
        let parts: Vec<Part<'_>> = deltas
            .iter()
            .map(|entry| {
                let p = &pending[entry.index];
                Part {
                    channel: &p.delta.channel,
                    epoch: &p.delta.epoch,
                    seq: p.delta.seq,
                    element_bytes: p.element.len(),
                    coalesce: entry.coalesce,
                }
            })
            .collect();
        let (mut skipped, mut posted) = (0, 0);
        for group in frames::group(&parts, MAX_FRAME_BYTES) {
            let first = &pending[deltas[group.start].index];
            let frame = if group.len() == 1 {
                Cow::Borrowed(first.frame.as_str())
            } else {
                let elements = deltas[group.clone()]
                    .iter()
                    .map(|entry| pending[entry.index].element.as_str());
                Cow::Owned(frames::deltas_frame(&first.delta.channel, elements))
            };
            match post_with_retry(&self.push, connection, &frame, self.retry).await {
                Ok(()) => {
                    posted += 1;
                    debug!(
                        connection_id = connection,
                        channel = first.delta.channel,
                        seq = first.delta.seq,
                        deltas = group.len(),
                        "delivered"
                    );
                }
                Err(PushError::Gone) => return Outcome::Gone,
                Err(err @ (PushError::TooLarge | PushError::Rejected(_))) => {
                    error!(
                        connection_id = connection,
                        channel = first.delta.channel,
                        seq = first.delta.seq,
                        deltas = group.len(),
                        error = %err,
                        "frame cannot be delivered to this connection; its deltas skipped"
                    );
                    skipped += group.len();
                }
                Err(error) => {
                    return Outcome::Failed {
                        delivered: group.start - skipped,
                        frames: posted,
                        from: group.start,
                        error,
                    };
                }
            }
        }
        Outcome::Delivered {
            delivered: deltas.len() - skipped,
            skipped,
            frames: posted,
        }
    }
}

/// When each record entered the stream, in milliseconds (DynamoDB Streams gives whole
/// seconds, rounded down).
fn creation_times(records: &[EventRecord]) -> Vec<u64> {
    records
        .iter()
        .map(|r| {
            u64::try_from(r.change.approximate_creation_date_time.timestamp_millis()).unwrap_or(0)
        })
        .collect()
}

/// How long ago the batch's oldest delta record was created (`FanoutLag`): the stream's
/// time is whole seconds in AWS (whole minutes in DynamoDB Local), and a delta was written
/// no earlier than its `ts`, which makes it exact. State and presence records carry no
/// such time, so they are left out; `None` when the batch has no delta.
fn oldest_age_ms(created: &[u64], pending: &[Pending], now_ms: u64) -> Option<u64> {
    pending
        .iter()
        .map(|p| {
            created
                .get(p.position)
                .copied()
                .unwrap_or(0)
                .max(p.delta.ts)
        })
        .filter(|at| *at > 0)
        .min()
        .map(|oldest| now_ms.saturating_sub(oldest))
}

/// Keeps the records that are new deltas; anything else is logged and skipped, so one bad
/// record cannot block the stream.
fn decode(records: Vec<EventRecord>) -> Vec<Pending> {
    let mut pending = Vec::with_capacity(records.len());
    let mut seen: HashSet<(String, u64, String)> = HashSet::new();
    for (position, record) in records.into_iter().enumerate() {
        let sequence_number = record.change.sequence_number.clone().unwrap_or_default();
        match delta_of(record) {
            StreamDelta::NotADelta => {}
            StreamDelta::Delta(delta) => {
                // A record delivered twice in one batch is sent once.
                if !seen.insert((delta.channel.clone(), delta.seq, delta.epoch.clone())) {
                    continue;
                }
                let frame = delta.to_frame();
                let element = serde_json::to_string(&delta).expect("a delta always serialises");
                pending.push(Pending {
                    position,
                    sequence_number,
                    delta,
                    frame,
                    element,
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
    use crate::testing::{FailingWhen, fanout_with, with_push};
    use deltacast_tests::{events, items_naming};
    use serde_json::{Value, json};

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
    async fn a_delivery_can_be_followed_in_the_logs_by_channel_seq_and_connection() {
        let fanout = fanout_with(&[("c1", "chat:lobby"), ("c2", "chat:lobby")]).await;
        let capture = deltacast_tests::logs::capture();
        let response = fanout.handle(events::stream_batch()).await;
        assert!(response.batch_item_failures.is_empty());
        let logged = capture.logs.text();
        let line = |needle: &str| {
            logged
                .lines()
                .find(|line| line.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in {logged}"))
                .to_owned()
        };
        let fanning = line("fanning out channel=\"chat:lobby\"");
        assert!(fanning.contains("first_seq=1"), "{fanning}");
        assert!(fanning.contains("subscribers=2"), "{fanning}");
        for connection in ["c1", "c2"] {
            let delivered = line(&format!("delivered connection_id=\"{connection}\""));
            assert!(delivered.contains("channel=\"chat:lobby\""), "{delivered}");
            assert!(delivered.contains("seq=1"), "{delivered}");
        }
    }

    #[test]
    fn the_lag_is_the_oldest_deltas_age_from_its_own_time() {
        let pending = |position, ts| {
            Pending {
            position,
            sequence_number: String::new(),
            delta: Delta {
                ts,
                ..serde_json::from_value(serde_json::json!({
                    "channel": "c", "epoch": "e", "seq": 1, "id": "m", "from": "a", "data": 1, "ts": 0
                }))
                .unwrap()
            },
            frame: String::new(),
            element: String::new(),
        }
        };
        // DynamoDB Local dates all three records to the minute (60.000 s); the deltas were
        // written at 60.400 s and 61.000 s at the earliest; record 1 is a state patch.
        let created = [60_000, 60_000, 60_000];
        let deltas = [pending(0, 60_400), pending(2, 61_000)];
        assert_eq!(
            oldest_age_ms(&created, &deltas, 62_000),
            Some(1_600),
            "the oldest delta, not the patch's minute"
        );
        assert_eq!(
            oldest_age_ms(&created, &[], 62_000),
            None,
            "no delta, no lag"
        );
        assert_eq!(
            oldest_age_ms(&[61_000], &[pending(0, 0)], 62_000),
            Some(1_000),
            "a delta without ts: the stream's time"
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
        // seq 1 goes through; seq 2 fails every attempt.
        let push = FailingWhen {
            push: &fanout.push,
            fail: |connection: &str, frame: &str| {
                (connection == "flaky" && frame.contains("\"seq\":2"))
                    .then(|| PushError::Failed("500".into()))
            },
        };
        let response = with_push(&fanout, push).handle(batch).await;
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
    async fn a_delta_that_can_never_be_delivered_is_skipped_for_that_connection() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        // seq 1 (posted first) is refused as a bad request; seq 2 goes through.
        fanout.push.fail_next(
            "c1",
            vec![PushError::Rejected("HTTP 400 BadRequestException".into())],
        );
        let response = fanout.handle(events::stream_batch()).await;
        assert!(
            response.batch_item_failures.is_empty(),
            "a request that cannot succeed must not hold up the shard"
        );
        assert_eq!(
            seqs(&fanout.push.frames("c1")),
            [("chat:lobby".to_owned(), 2)]
        );
        assert_eq!(fanout.push.attempts("c1"), 2, "no retry of a rejected post");
    }

    #[tokio::test]
    async fn forbidden_posts_fail_their_records_in_stream_order() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        fanout.push.fail_next("c1", vec![PushError::Forbidden]);
        let response = fanout.handle(events::stream_batch()).await;
        // seq 1 failed, so seq 2 after it is not sent either; the batch lists seq 2's
        // record first, so that is where Lambda must resume.
        assert_eq!(
            failed_ids(&response),
            [
                "4421584500000000017450439092",
                "4421584600000000017450439093"
            ]
        );
        assert!(fanout.push.frames("c1").is_empty());
    }

    #[tokio::test]
    async fn a_new_epoch_is_sent_after_the_old_one() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        let first = events::stream_records().remove(0);
        let record = |epoch: &str, seq: u64| {
            let mut record = first.clone();
            let sk = json!({"S": format!("d#{epoch}#{seq:012}")});
            record["dynamodb"]["Keys"]["sk"] = sk.clone();
            record["dynamodb"]["NewImage"]["sk"] = sk;
            record["dynamodb"]["NewImage"]["ep"] = json!({"S": epoch});
            record["dynamodb"]["NewImage"]["seq"] = json!({"N": seq.to_string()});
            record
        };
        // The old epoch's last delta, then the history starting over.
        let records = vec![
            record("zz-old", 9),
            record("aa-new", 1),
            record("aa-new", 2),
        ];
        let response = fanout.handle(events::stream_event(records)).await;
        assert!(response.batch_item_failures.is_empty());
        let sent: Vec<(String, u64)> = fanout
            .push
            .frames("c1")
            .iter()
            .map(|f| {
                (
                    f["epoch"].as_str().unwrap().to_owned(),
                    f["seq"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            sent,
            [
                ("zz-old".to_owned(), 9),
                ("aa-new".to_owned(), 1),
                ("aa-new".to_owned(), 2)
            ]
        );
    }

    #[tokio::test]
    async fn skips_records_that_are_not_new_deltas() {
        let fanout = fanout_with(&[("c1", "chat:lobby")]).await;
        let mut records = events::stream_records();
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
