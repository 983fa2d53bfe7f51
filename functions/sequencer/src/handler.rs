//! Sequences a batch of stream records (the inbox items that are the sequencer's: queued on a
//! busy channel, handed over or taken over; see `store::inbox`): the records are
//! grouped by channel, in stream order, and each channel's messages go to
//! [`Store::sequence`] together, channels concurrently. Each publisher then gets its
//! answer (an `ack`, `conflict` or `rate_limited`) on the connection that sent the message.
//!
//! A channel whose sequencing fails (storage unavailable) reports its records in
//! `batchItemFailures`, so Lambda delivers them again; sequencing them again is safe (the
//! store finds the messages it already stored). An answer that cannot be posted is only
//! logged: the message is stored, and a publisher that missed its ack sends the same id
//! again and is answered from the store.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use aws_lambda_events::dynamodb::Event;
use aws_lambda_events::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use deltacast::answers;
use deltacast::config::{RateLimit, StateSettings};
use deltacast::metrics::{self, PublishOutcome};
use deltacast::protocol::ErrorCode;
use deltacast::push::{Push, PushError, RetryPolicy, post_with_retry};
use deltacast::store::items::InboxItem;
use deltacast::store::{MemberRecord, OpRecord};
use deltacast::store::{Sequenced, Store};
use deltacast::stream::{StreamMembers, StreamOps, StreamPublish, members_of, ops_of, publish_of};
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
    /// Live state's settings (the fold's patch rate and document limit).
    pub state: StateSettings,
}

/// Counts the publishes this batch answers, by outcome (`Publishes`), and logs what the
/// channel's seqs became: one line per channel, one per message (its id, seq and
/// publisher's connection), so a message can be followed from its publish to its delivery.
fn count(channel: &str, outcomes: &[(InboxItem, Sequenced)]) {
    let seqs = outcomes.iter().filter_map(|(_, outcome)| match outcome {
        Sequenced::Published(p) => Some(p.seq),
        _ => None,
    });
    info!(
        channel,
        answered = outcomes.len(),
        first_seq = seqs.clone().min(),
        last_seq = seqs.max(),
        "sequenced"
    );
    for (item, outcome) in outcomes {
        let (result, seq) = match outcome {
            Sequenced::Published(p) if p.duplicate => (PublishOutcome::Duplicate, Some(p.seq)),
            Sequenced::Published(p) => (PublishOutcome::Ok, Some(p.seq)),
            Sequenced::Conflict(_) => (PublishOutcome::Refused(ErrorCode::Conflict), None),
            Sequenced::RateLimited { .. } => {
                (PublishOutcome::Refused(ErrorCode::RateLimited), None)
            }
        };
        info!(
            channel,
            id = item.id,
            seq,
            connection_id = item.conn,
            outcome = result.as_str(),
            "sequenced message"
        );
        metrics::publish(result);
    }
}

impl<P: Push> Sequencer<P> {
    /// Sequences the batch; returns the records to deliver again.
    pub async fn handle(&self, event: Event) -> DynamoDbEventResponse {
        let started = Instant::now();
        metrics::stream_batch(event.records.len(), None);
        // channel → its messages, with each one's place in the batch, in stream order; and
        // each record's sequence number, by place.
        let mut channels: BTreeMap<String, Vec<(usize, InboxItem)>> = BTreeMap::new();
        let mut numbers: Vec<String> = Vec::new();
        // Claims handed over or taken over (MODIFY): their publisher is acked even when the
        // message was stored already (a retry's claim whose first writer stored it late).
        // A claim queued at once (INSERT) found stored was acked when this sequencer stored
        // it: the stream delivered its batch again.
        let mut taken_over: HashSet<String> = HashSet::new();
        // State channel → its op records, with each one's place in the batch.
        let mut states: BTreeMap<String, Vec<(usize, OpRecord)>> = BTreeMap::new();
        // Channel → its presence member records.
        let mut presences: BTreeMap<String, Vec<(usize, MemberRecord)>> = BTreeMap::new();
        for (position, record) in event.records.into_iter().enumerate() {
            numbers.push(record.change.sequence_number.clone().unwrap_or_default());
            match members_of(&record) {
                StreamMembers::Member(channel, member) => {
                    presences
                        .entry(channel)
                        .or_default()
                        .push((position, *member));
                    continue;
                }
                StreamMembers::Malformed(reason) => {
                    error!(%reason, "unreadable member item; skipped");
                    continue;
                }
                StreamMembers::NotMembers => {}
            }
            match ops_of(&record) {
                StreamOps::Ops(ops) => {
                    let channel = ops.item.channel_and_shard().map(|(c, _)| c.to_owned());
                    states
                        .entry(channel.unwrap_or_default())
                        .or_default()
                        .push((position, *ops));
                    continue;
                }
                StreamOps::Malformed(reason) => {
                    error!(%reason, "unreadable op item; skipped");
                    continue;
                }
                StreamOps::NotOps => {}
            }
            let modify = record.event_name == "MODIFY";
            match publish_of(record) {
                StreamPublish::Publish(item) => match item.channel() {
                    Some(channel) => {
                        if modify {
                            taken_over.insert(item.sk.clone());
                        }
                        channels
                            .entry(channel.to_owned())
                            .or_default()
                            .push((position, *item));
                    }
                    None => error!("inbox item without a channel; skipped"),
                },
                StreamPublish::Malformed(reason) => {
                    error!(%reason, "unreadable inbox item; skipped")
                }
                StreamPublish::NotAPublish => {}
            }
        }
        let taken_over = &taken_over;
        let folds = crate::fold::fold_all(&self.store, &self.push, self.retry, &self.state, states);
        let presence = crate::fold::fold_presences(&self.store, &self.state, presences);
        let sequenced = stream::iter(channels)
            .map(|(channel, records)| async move {
                let (positions, items): (Vec<usize>, Vec<InboxItem>) = records.into_iter().unzip();
                match self.store.sequence(&channel, items, self.channel_limit).await {
                    Ok(mut outcomes) => {
                        outcomes.retain(|(item, outcome)| {
                            !matches!(outcome, Sequenced::Published(p) if p.duplicate)
                                || taken_over.contains(&item.sk)
                        });
                        count(&channel, &outcomes);
                        (self.answer_all(&outcomes).await, Vec::new())
                    }
                    Err(err) => {
                        error!(channel, error = %err, "could not sequence; the records will come again");
                        (0, positions)
                    }
                }
            })
            .buffer_unordered(CHANNEL_CONCURRENCY)
            .collect::<Vec<(usize, Vec<usize>)>>();
        // Folds may wait for their channel's patch slot: they run beside the sequencing.
        let (folds, presence, results) = futures::join!(folds, presence, sequenced);
        let mut failed: Vec<usize> = folds.failed;
        failed.extend(presence.failed);
        let mut answered = 0;
        for (n, failures) in results {
            answered += n;
            failed.extend(failures);
        }
        // In stream order, so the first failure is the record Lambda resumes from.
        failed.sort_unstable();
        let mut response = DynamoDbEventResponse::default();
        response.batch_item_failures = failed
            .into_iter()
            .map(|position| {
                let mut failure = DynamoDbBatchItemFailure::default();
                failure.item_identifier = Some(numbers[position].clone());
                failure
            })
            .collect();
        info!(
            records = numbers.len(),
            answered,
            folded = folds.folded,
            members_folded = presence.folded,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use deltacast_tests::push::RecordingPush;
    use deltacast_tests::{all_items, events, fresh_store, lifetimes, sdk_config};
    use serde_json::Value;

    use super::*;

    fn sequencer(store: Store, channel_limit: Option<RateLimit>) -> Sequencer<RecordingPush> {
        Sequencer {
            store,
            push: RecordingPush::new(),
            channel_limit,
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(1),
            },
            state: StateSettings::default(),
        }
    }

    /// The `(type, id, seq)` of every frame `connection` received.
    fn answers(s: &Sequencer<RecordingPush>, connection: &str) -> Vec<(String, String, Value)> {
        s.push
            .frames(connection)
            .iter()
            .map(|f| {
                let kind = f["code"]
                    .as_str()
                    .or(f["type"].as_str())
                    .unwrap_or_default();
                (
                    kind.to_owned(),
                    f["id"].as_str().unwrap().to_owned(),
                    f["seq"].clone(),
                )
            })
            .collect()
    }

    /// What the fixture's records say was written: each image put in stream order, so the
    /// inbox holds what the stream shows (m1 as taken over by conn-C).
    async fn write_images(store: &Store) {
        for record in events::stream_inbox().records {
            let image = record.change.new_image;
            let item: deltacast::store::items::InboxItem =
                serde_dynamo::from_item(image).expect("an inbox item");
            store
                .client()
                .put_item()
                .table_name(store.table())
                .set_item(Some(serde_dynamo::to_item(&item).unwrap()))
                .send()
                .await
                .unwrap();
        }
    }

    fn ack(id: &str, seq: u64) -> (String, String, Value) {
        ("ack".into(), id.into(), seq.into())
    }

    #[tokio::test]
    async fn a_batch_is_sequenced_in_stream_order_and_each_publisher_acked_once() {
        // GIVEN the fixture batch: m1 (taken over by conn-C later in the batch) and m2
        let s = sequencer(fresh_store().await, None);
        write_images(&s.store).await;
        // WHEN it is handled
        let response = s.handle(events::stream_inbox()).await;
        // THEN m1 and m2 got seqs 1 and 2, acked to the connection that sent them last
        assert!(response.batch_item_failures.is_empty());
        assert_eq!(answers(&s, "conn-C"), [ack("m1", 1)]);
        assert_eq!(answers(&s, "conn-B"), [ack("m2", 2)]);
        assert!(answers(&s, "conn-A").is_empty(), "m1 was taken over");
        // AND delivered again, the batch stores nothing new (it only marks the channel busy
        // again); the claim taken over (a MODIFY) is acked again, the new publish (acked
        // the first time) is not
        let unmarked = |mut items: Vec<std::collections::HashMap<String, _>>| {
            items.iter_mut().for_each(|item| drop(item.remove("busy")));
            items
        };
        let before = all_items(&s.store).await;
        s.push.clear();
        s.handle(events::stream_inbox()).await;
        assert_eq!(answers(&s, "conn-C"), [ack("m1", 1)]);
        assert!(answers(&s, "conn-B").is_empty());
        assert_eq!(unmarked(all_items(&s.store).await), unmarked(before));
    }

    #[tokio::test]
    async fn a_channel_over_its_limit_is_told_when_to_retry() {
        // GIVEN a channel taking one publish at a time, one per 10 s
        let limit = RateLimit {
            per_second: 0.1,
            burst: 1.0,
        };
        let s = sequencer(fresh_store().await, Some(limit));
        write_images(&s.store).await;
        // WHEN the batch comes
        s.handle(events::stream_inbox()).await;
        // THEN m1 is stored and m2 refused, with about 10 s to wait
        assert_eq!(answers(&s, "conn-C"), [ack("m1", 1)]);
        let refusal = &s.push.frames("conn-B")[0];
        assert_eq!(refusal["code"], "rate_limited", "{refusal}");
        assert_eq!(refusal["channel"], "chat:lobby");
        let wait = refusal["retryAfterMs"].as_u64().expect("retryAfterMs");
        assert!((9_000..=10_000).contains(&wait), "{wait}");
        assert!(
            refusal["message"]
                .as_str()
                .unwrap()
                .contains("CHANNEL_RATE_LIMIT_PER_SECOND"),
            "{refusal}"
        );
        // AND when the batch comes again, m2 (refused, its inbox item gone) stays unstored
        s.push.clear();
        s.handle(events::stream_inbox()).await;
        assert!(answers(&s, "conn-B").is_empty());
        assert_eq!(answers(&s, "conn-C"), [ack("m1", 1)]);
    }

    #[tokio::test]
    async fn a_channel_that_cannot_be_sequenced_reports_its_records_for_another_delivery() {
        // GIVEN a store whose table does not exist (storage failing)
        let client = aws_sdk_dynamodb::Client::new(&sdk_config().await);
        let s = sequencer(Store::new(client, "no-such-table", lifetimes()), None);
        // WHEN the batch comes
        let response = s.handle(events::stream_inbox()).await;
        // THEN every record of the channel is reported, in stream order, and nobody acked
        let failed: Vec<String> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone().unwrap())
            .collect();
        assert_eq!(
            failed,
            [
                "4421584500000000017450439101",
                "4421584500000000017450439102",
                "4421584500000000017450439103"
            ]
        );
        assert!(answers(&s, "conn-B").is_empty());
    }
}
