//! The trigger against a scripted stream: shard lineage, starting positions, iterator
//! expiry, batching, and a stream that does not exist.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_dynamodbstreams::primitives::DateTime as SmithyTime;
use aws_sdk_dynamodbstreams::types::Record;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::function::{TestFunction, eventually, options, trigger};
use crate::streams::record::tests::sdk_record;
use crate::streams::source::{Page, Position, ShardInfo, ShardSource, SourceError};
use crate::streams::{
    PollOptions, Shard, ShardState, StreamError, TriggerStats, forget_trimmed, run,
};
use crate::template::StreamTrigger;

const ARN: &str = "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x";

/// A stream whose shards and records the test writes. Iterators are `shard|index`.
#[derive(Default)]
struct ScriptedStream {
    shards: Mutex<BTreeMap<String, ScriptedShard>>,
    /// Iterators handed out: (shard, position).
    positions: Mutex<Vec<(String, Position)>>,
    /// The next GetRecords answers ExpiredIterator.
    expire_next: AtomicBool,
    reads: AtomicU32,
    missing: AtomicBool,
    /// DescribeStream calls from now on never answer.
    hang_listings: AtomicBool,
    /// DescribeStream calls that are hanging.
    hung_listings: AtomicU32,
    next_sequence: AtomicU32,
}

struct ScriptedShard {
    parent: Option<String>,
    closed: bool,
    records: Vec<Record>,
}

impl ScriptedStream {
    fn add_shard(&self, id: &str, parent: Option<&str>) {
        self.shards.lock().unwrap().insert(
            id.to_owned(),
            ScriptedShard {
                parent: parent.map(str::to_owned),
                closed: false,
                records: Vec::new(),
            },
        );
    }

    /// Appends a record with sort key `sk` to `shard`.
    fn write(&self, shard: &str, sk: &str) {
        let sequence = 100 + self.next_sequence.fetch_add(1, Ordering::SeqCst);
        let mut record = sdk_record(&format!("{sequence:021}"), "c#1", sk);
        if let Some(change) = record.dynamodb.as_mut() {
            change.approximate_creation_date_time =
                Some(SmithyTime::from_secs(chrono::Utc::now().timestamp()));
        }
        self.shards
            .lock()
            .unwrap()
            .get_mut(shard)
            .expect("shard")
            .records
            .push(record);
    }

    fn close(&self, shard: &str) {
        self.shards
            .lock()
            .unwrap()
            .get_mut(shard)
            .expect("shard")
            .closed = true;
    }

    fn positions(&self) -> Vec<(String, Position)> {
        self.positions.lock().unwrap().clone()
    }
}

impl ShardSource for ScriptedStream {
    async fn shards(&self, _stream_arn: &str) -> Result<Vec<ShardInfo>, SourceError> {
        if self.missing.load(Ordering::SeqCst) {
            return Err(SourceError::NotFound("no such stream".into()));
        }
        if self.hang_listings.load(Ordering::SeqCst) {
            self.hung_listings.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        Ok(self
            .shards
            .lock()
            .unwrap()
            .iter()
            .map(|(id, shard)| ShardInfo {
                id: id.clone(),
                parent: shard.parent.clone(),
                closed: shard.closed,
            })
            .collect())
    }

    async fn iterator(
        &self,
        _stream_arn: &str,
        shard_id: &str,
        position: &Position,
    ) -> Result<String, SourceError> {
        self.positions
            .lock()
            .unwrap()
            .push((shard_id.to_owned(), position.clone()));
        let shards = self.shards.lock().unwrap();
        let shard = shards
            .get(shard_id)
            .ok_or_else(|| SourceError::NotFound(shard_id.into()))?;
        let index = match position {
            Position::TrimHorizon => 0,
            Position::Latest => shard.records.len(),
            Position::After(sequence) => {
                shard
                    .records
                    .iter()
                    .position(|r| {
                        r.dynamodb().and_then(|d| d.sequence_number()) == Some(sequence.as_str())
                    })
                    .expect("a sequence number of the shard")
                    + 1
            }
            Position::At(sequence) => shard
                .records
                .iter()
                .position(|r| {
                    r.dynamodb().and_then(|d| d.sequence_number()) == Some(sequence.as_str())
                })
                .expect("a sequence number of the shard"),
        };
        Ok(format!("{shard_id}|{index}"))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, SourceError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if self.expire_next.swap(false, Ordering::SeqCst) {
            return Err(SourceError::ExpiredIterator("scripted expiry".into()));
        }
        let (shard_id, index) = iterator.split_once('|').expect("scripted iterator");
        let index: usize = index.parse().expect("index");
        let shards = self.shards.lock().unwrap();
        let shard = shards
            .get(shard_id)
            .ok_or_else(|| SourceError::NotFound(shard_id.into()))?;
        let end = (index + limit as usize).min(shard.records.len());
        let records = shard.records[index..end].to_vec();
        let next_iterator = if shard.closed && end == shard.records.len() {
            None
        } else {
            Some(format!("{shard_id}|{end}"))
        };
        Ok(Page {
            records,
            next_iterator,
        })
    }
}

/// Hang guard of the waits in these tests; a passing test never comes near it.
const WAIT: Duration = Duration::from_secs(20);

/// Runs the trigger over `stream` until `done` holds (or 30 s pass), then stops it.
async fn run_until(
    stream: &ScriptedStream,
    trigger: &StreamTrigger,
    function: &TestFunction,
    options: &PollOptions,
    stats: &TriggerStats,
    mut script: impl AsyncFnMut(),
    done: impl Fn() -> bool,
) -> bool {
    let shutdown = CancellationToken::new();
    let trigger_task = run(stream, ARN, trigger, function, options, &shutdown, stats);
    let test = async {
        script().await;
        let finished = eventually(Duration::from_secs(30), &done).await;
        shutdown.cancel();
        finished
    };
    let (result, finished) = tokio::join!(trigger_task, test);
    result.expect("the trigger runs until it is stopped");
    finished
}

#[tokio::test]
async fn a_child_shard_is_read_only_after_its_parent() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    stream.add_shard("shard-2", Some("shard-1"));
    for sk in ["p1", "p2", "p3"] {
        stream.write("shard-1", sk);
    }
    stream.close("shard-1");
    for sk in ["c1", "c2"] {
        stream.write("shard-2", sk);
    }
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        batch_size: 2,
        ..trigger()
    };
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger,
        &function,
        &options(),
        &stats,
        async || {},
        || function.delivered().len() == 5,
    )
    .await;
    assert!(done, "{:?}", function.calls());
    assert_eq!(
        function.calls(),
        [vec!["p1", "p2"], vec!["p3"], vec!["c1", "c2"]]
    );
    let counts = stats.counts();
    assert_eq!(
        (counts.shards_started, counts.shards_finished),
        (2, 1),
        "the closed parent is finished"
    );
}

#[tokio::test]
async fn latest_reads_only_new_records_and_later_shards_from_the_trim_horizon() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-0", None);
    stream.write("shard-0", "old-closed");
    stream.close("shard-0");
    stream.add_shard("shard-1", Some("shard-0"));
    stream.write("shard-1", "before-start");
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        starting_position: "LATEST".into(),
        ..trigger()
    };
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger,
        &function,
        &options(),
        &stats,
        async || {
            assert!(eventually(WAIT, || stats.counts().shards_started == 1).await);
            stream.write("shard-1", "after-start");
            // Roll over: shard-1 closes, shard-2 takes the writes.
            stream.close("shard-1");
            stream.add_shard("shard-2", Some("shard-1"));
            stream.write("shard-2", "in-new-shard");
        },
        || function.delivered().len() >= 2,
    )
    .await;
    assert!(done, "{:?}", function.calls());
    assert_eq!(function.delivered(), ["after-start", "in-new-shard"]);
    assert_eq!(
        stream.positions(),
        [
            ("shard-1".to_owned(), Position::Latest),
            ("shard-2".to_owned(), Position::TrimHorizon)
        ],
        "the closed shard is not read at all"
    );
}

#[tokio::test]
async fn an_expired_iterator_is_replaced_after_the_last_record_read() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    stream.write("shard-1", "a");
    let function = TestFunction::default();
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger(),
        &function,
        &options(),
        &stats,
        async || {
            assert!(eventually(WAIT, || function.delivered().len() == 1).await);
            stream.expire_next.store(true, Ordering::SeqCst);
            let reads = stream.reads.load(Ordering::SeqCst);
            assert!(eventually(WAIT, || stream.reads.load(Ordering::SeqCst) > reads + 1).await);
            stream.write("shard-1", "b");
        },
        || function.delivered().len() >= 2,
    )
    .await;
    assert!(done);
    assert_eq!(
        function.delivered(),
        ["a", "b"],
        "nothing lost, nothing repeated"
    );
    assert_eq!(
        stream.positions()[1],
        (
            "shard-1".to_owned(),
            Position::After(format!("{:021}", 100))
        )
    );
}

#[tokio::test]
async fn the_batching_window_gathers_records() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        batch_size: 10,
        batching_window: Duration::from_secs(3),
        ..trigger()
    };
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger,
        &function,
        &options(),
        &stats,
        async || {
            assert!(eventually(WAIT, || stats.counts().shards_started == 1).await);
            // Each record is read by a GetRecords of its own before the next is written.
            for sk in ["a", "b", "c"] {
                stream.write("shard-1", sk);
                let reads = stream.reads.load(Ordering::SeqCst);
                assert!(eventually(WAIT, || stream.reads.load(Ordering::SeqCst) > reads).await);
            }
        },
        || function.delivered().len() == 3,
    )
    .await;
    assert!(done);
    assert_eq!(
        function.calls(),
        [vec!["a", "b", "c"]],
        "one batch, not three"
    );
}

#[tokio::test]
async fn a_slow_shard_listing_does_not_pause_the_readers() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    stream.write("shard-1", "a");
    let function = TestFunction::default();
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger(),
        &function,
        &options(),
        &stats,
        async || {
            assert!(eventually(WAIT, || function.delivered().len() == 1).await);
            // The next DescribeStream (a second later) never answers.
            stream.hang_listings.store(true, Ordering::SeqCst);
            assert!(eventually(WAIT, || stream.hung_listings.load(Ordering::SeqCst) > 0).await);
            stream.write("shard-1", "b");
        },
        || function.delivered().len() >= 2,
    )
    .await;
    assert!(done, "{:?}", function.calls());
    assert_eq!(function.delivered(), ["a", "b"]);
}

#[test]
fn finished_shards_are_forgotten_once_no_longer_listed() {
    let shard = |state| Shard {
        parent: None,
        start: Position::TrimHorizon,
        state,
    };
    let mut shards = BTreeMap::from([
        ("trimmed".to_owned(), shard(ShardState::Finished)),
        ("closed".to_owned(), shard(ShardState::Finished)),
        ("reading".to_owned(), shard(ShardState::Reading)),
        ("waiting".to_owned(), shard(ShardState::Waiting)),
    ]);
    let listed = |id: &str| ShardInfo {
        id: id.to_owned(),
        parent: None,
        closed: true,
    };
    forget_trimmed(&mut shards, &[]);
    assert_eq!(shards.len(), 4, "an empty listing forgets nothing");
    forget_trimmed(&mut shards, &[listed("closed")]);
    assert_eq!(
        shards.keys().collect::<Vec<_>>(),
        ["closed", "reading", "waiting"],
        "a finished shard still listed is kept, or it would be read again; unfinished \
         ones are kept until their readers are done"
    );
}

#[tokio::test]
async fn filtered_out_records_are_dropped_and_counted() {
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    for sk in ["d#1", "s#conn", "d#2", "s#other"] {
        stream.write("shard-1", sk);
    }
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        filters: vec![json!({"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}})],
        ..trigger()
    };
    let stats = TriggerStats::new();
    let done = run_until(
        &stream,
        &trigger,
        &function,
        &options(),
        &stats,
        async || {},
        || stats.counts().records_filtered_out == 2 && function.delivered().len() == 2,
    )
    .await;
    assert!(done);
    assert_eq!(function.delivered(), ["d#1", "d#2"]);
}

#[tokio::test]
async fn a_missing_stream_is_an_error() {
    let stream = ScriptedStream::default();
    stream.missing.store(true, Ordering::SeqCst);
    let result = run(
        &stream,
        ARN,
        &trigger(),
        &TestFunction::default(),
        &options(),
        &CancellationToken::new(),
        &TriggerStats::new(),
    )
    .await;
    assert!(matches!(result, Err(StreamError::StreamNotFound(arn)) if arn == ARN));
}

#[tokio::test]
async fn settings_lambda_would_refuse_are_errors() {
    let stream = ScriptedStream::default();
    for (trigger, expected) in [
        (
            StreamTrigger {
                batch_size: 0,
                ..trigger()
            },
            "BatchSize",
        ),
        (
            StreamTrigger {
                starting_position: "AT_TIMESTAMP".into(),
                ..trigger()
            },
            "StartingPosition",
        ),
        (
            StreamTrigger {
                maximum_retry_attempts: -2,
                ..trigger()
            },
            "MaximumRetryAttempts",
        ),
        (
            StreamTrigger {
                filters: vec![json!({"eventName": "INSERT"})],
                ..trigger()
            },
            "eventName",
        ),
    ] {
        let err = run(
            &stream,
            ARN,
            &trigger,
            &TestFunction::default(),
            &options(),
            &CancellationToken::new(),
            &TriggerStats::new(),
        )
        .await
        .expect_err("refused");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[tokio::test]
async fn shutdown_interrupts_a_long_wait() {
    // GIVEN a trigger that has read its shard to the tip and waits 10 s (the poll
    // interval) before it reads again. (Retry backoffs are capped at a second, too short
    // to tell apart from a slow machine.)
    let stream = ScriptedStream::default();
    stream.add_shard("shard-1", None);
    stream.write("shard-1", "a");
    let function = TestFunction::default();
    let options = PollOptions {
        poll_interval: Duration::from_secs(10),
        ..options()
    };
    let trigger = trigger();
    let shutdown = CancellationToken::new();
    let stats = TriggerStats::new();
    let running = run(
        &stream, ARN, &trigger, &function, &options, &shutdown, &stats,
    );
    let stop = async {
        assert!(eventually(WAIT, || function.delivered().len() == 1).await);
        // The read after the record's found nothing: now in the 10 s wait.
        assert!(eventually(WAIT, || stream.reads.load(Ordering::SeqCst) >= 2).await);
        // WHEN it is stopped
        shutdown.cancel();
        tokio::time::Instant::now()
    };
    let (result, cancelled_at) = tokio::join!(running, stop);

    // THEN it stops without waiting for the end of the wait
    assert!(result.is_ok());
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(function.calls().len(), 1);
}
