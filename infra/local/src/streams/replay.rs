//! Reading back records the trigger gave up on. An on-failure record says where they are
//! (a shard and the first and last sequence numbers), not what they were, so replaying
//! one means reading that range of the shard again, while the stream still has it (24
//! hours), and building the very event the trigger built: the same conversion (`record`)
//! and the same `FilterCriteria`, since the range also holds records the trigger's
//! filters left out (other functions' records, on a shared stream).

use std::cmp::Ordering;

use chrono::Utc;
use serde_json::Value;

use super::filter::FilterCriteria;
use super::record::{self, StreamRecord};
use super::source::{Position, ShardSource, SourceError};

/// GetRecords returns at most this many records.
const PAGE_SIZE: i32 = 1000;

/// Empty GetRecords answers in a row after which an open shard counts as read to its tip.
const EMPTY_PAGES: u32 = 3;

/// Where records given up on are: an on-failure record's `DDBStreamBatchInfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordRange {
    /// `streamArn`.
    pub stream_arn: String,
    /// `shardId`.
    pub shard_id: String,
    /// `startSequenceNumber`: the first record given up on.
    pub first: String,
    /// `endSequenceNumber`: the last one.
    pub last: String,
}

/// The event that replays a range.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// `{"Records": [...]}`, as the trigger sends it.
    pub event: Value,
    /// How many records the event holds.
    pub records: usize,
    /// Records of the range the trigger would not deliver (filtered out, or not
    /// convertible).
    pub left_out: usize,
}

/// A range that could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The records (or their shard) are no longer in the stream, which keeps them 24 hours.
    #[error("the records have left the stream (it keeps them 24 hours): {0}")]
    LeftTheStream(String),
    /// The stream answered, but without the whole range.
    #[error("the stream does not hold the whole range: {0}")]
    Incomplete(String),
    /// A Streams call failed (DynamoDB unreachable, throttling, ...); trying again may work.
    #[error("reading the stream failed: {0}")]
    Stream(String),
}

/// Reads `range` from DynamoDB Streams and builds the event the trigger would send,
/// keeping only the records `filters` match; `region` is the function's (`awsRegion`).
pub async fn read_range(
    streams: &aws_sdk_dynamodbstreams::Client,
    range: &RecordRange,
    filters: &FilterCriteria,
    region: &str,
) -> Result<Replay, ReplayError> {
    read(streams, range, filters, region).await
}

/// [`read_range`] over any [`ShardSource`]: an iterator at the first sequence number,
/// then pages until the last one.
pub(super) async fn read<S: ShardSource>(
    source: &S,
    range: &RecordRange,
    filters: &FilterCriteria,
    region: &str,
) -> Result<Replay, ReplayError> {
    let start = Position::At(range.first.clone());
    let mut iterator = Some(
        source
            .iterator(&range.stream_arn, &range.shard_id, &start)
            .await
            .map_err(failed)?,
    );
    let mut kept: Vec<StreamRecord> = Vec::new();
    let mut left_out = 0;
    let mut seen_first = false;
    let mut empty_pages = 0;
    while let Some(current) = iterator.take() {
        let page = source.records(&current, PAGE_SIZE).await.map_err(failed)?;
        if page.records.is_empty() {
            empty_pages += 1;
            if empty_pages >= EMPTY_PAGES {
                break;
            }
        } else {
            empty_pages = 0;
        }
        let read_at = Utc::now();
        for sdk in &page.records {
            let Some(sequence) = sdk.dynamodb().and_then(|d| d.sequence_number()) else {
                left_out += 1;
                continue;
            };
            if !seen_first {
                if compare(sequence, &range.first) != Ordering::Equal {
                    return Err(ReplayError::Incomplete(format!(
                        "the shard's first record from {} is {sequence}",
                        range.first
                    )));
                }
                seen_first = true;
            }
            if compare(sequence, &range.last) == Ordering::Greater {
                return Err(ReplayError::Incomplete(format!(
                    "no record {} between {} and {sequence}",
                    range.last, range.first
                )));
            }
            match StreamRecord::from_stream(sdk, &range.stream_arn, region, read_at) {
                Ok(record) if filters.matches(&record.event) => kept.push(record),
                // What the trigger skips too: filtered out, or nothing a function could get.
                Ok(_) | Err(_) => left_out += 1,
            }
            if compare(sequence, &range.last) == Ordering::Equal {
                return Ok(Replay {
                    event: record::event(&kept),
                    records: kept.len(),
                    left_out,
                });
            }
        }
        iterator = page.next_iterator;
    }
    Err(ReplayError::Incomplete(if seen_first {
        format!("the shard ends before {}", range.last)
    } else {
        format!("no record {} in the shard", range.first)
    }))
}

/// A Streams failure, sorted: gone for good, or worth another try.
fn failed(err: SourceError) -> ReplayError {
    match err {
        SourceError::Trimmed(message) | SourceError::NotFound(message) => {
            ReplayError::LeftTheStream(brief(&message))
        }
        SourceError::ExpiredIterator(message) | SourceError::Other(message) => {
            ReplayError::Stream(brief(&message))
        }
    }
}

/// The SDK's message without the raw request and response it appends (` (ServiceError {
/// ... })`): a report line, not a debug dump.
fn brief(message: &str) -> String {
    message
        .split_once(" (ServiceError")
        .or_else(|| message.split_once(" (DispatchFailure"))
        .map_or(message, |(head, _)| head)
        .to_owned()
}

/// Orders sequence numbers: decimal numbers too long for any integer type, compared
/// without their leading zeros by length and then digit by digit.
fn compare(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use aws_sdk_dynamodbstreams::types::Record;
    use serde_json::json;

    use super::*;
    use crate::streams::record::tests::sdk_record;
    use crate::streams::source::{Page, ShardInfo};

    const ARN: &str = "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x";

    /// One shard of records, read `page` at a time; iterators are record indexes.
    struct Shard {
        records: Vec<Record>,
        page: usize,
        closed: bool,
        trimmed: bool,
        iterators: Mutex<Vec<Position>>,
    }

    impl Shard {
        /// Records with sequence numbers 101, 102, ... and the given sort keys.
        fn new(sort_keys: &[&str]) -> Self {
            Self {
                records: sort_keys
                    .iter()
                    .enumerate()
                    .map(|(i, sk)| sdk_record(&sequence(101 + i), "c#1", sk))
                    .collect(),
                page: 1000,
                closed: false,
                trimmed: false,
                iterators: Mutex::new(Vec::new()),
            }
        }
    }

    fn sequence(n: usize) -> String {
        format!("{n:021}")
    }

    fn range(first: usize, last: usize) -> RecordRange {
        RecordRange {
            stream_arn: ARN.into(),
            shard_id: "shard-1".into(),
            first: sequence(first),
            last: sequence(last),
        }
    }

    impl ShardSource for Shard {
        async fn shards(&self, _: &str) -> Result<Vec<ShardInfo>, SourceError> {
            Ok(Vec::new())
        }

        async fn iterator(
            &self,
            _: &str,
            _: &str,
            position: &Position,
        ) -> Result<String, SourceError> {
            self.iterators.lock().unwrap().push(position.clone());
            if self.trimmed {
                return Err(SourceError::Trimmed("TrimmedDataAccessException".into()));
            }
            let Position::At(at) = position else {
                panic!("replay reads at a sequence number, not {position:?}");
            };
            let index = self
                .records
                .iter()
                .position(|r| {
                    r.dynamodb()
                        .and_then(|d| d.sequence_number())
                        .is_some_and(|s| compare(s, at) != Ordering::Less)
                })
                .unwrap_or(self.records.len());
            Ok(index.to_string())
        }

        async fn records(&self, iterator: &str, limit: i32) -> Result<Page, SourceError> {
            let index: usize = iterator.parse().expect("an index");
            let end = (index + self.page.min(limit as usize)).min(self.records.len());
            let next_iterator =
                (!(self.closed && end == self.records.len())).then(|| end.to_string());
            Ok(Page {
                records: self.records[index..end].to_vec(),
                next_iterator,
            })
        }
    }

    fn sort_keys(replay: &Replay) -> Vec<String> {
        replay.event["Records"]
            .as_array()
            .expect("Records")
            .iter()
            .map(|r| {
                r["dynamodb"]["Keys"]["sk"]["S"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn everything() -> FilterCriteria {
        FilterCriteria::new(&[]).expect("no filters")
    }

    #[tokio::test]
    async fn the_range_is_read_from_its_first_to_its_last_record_across_pages() {
        let mut shard = Shard::new(&["d#1", "d#2", "d#3", "d#4", "d#5"]);
        shard.page = 2;
        let replay = read(&shard, &range(102, 104), &everything(), "us-east-1")
            .await
            .expect("read back");
        assert_eq!(sort_keys(&replay), ["d#2", "d#3", "d#4"]);
        assert_eq!(replay.records, 3);
        assert_eq!(replay.left_out, 0);
        assert_eq!(
            *shard.iterators.lock().unwrap(),
            [Position::At(sequence(102))]
        );
        let first = &replay.event["Records"][0];
        assert_eq!(first["eventSourceARN"], ARN, "as the trigger sends it");
        assert_eq!(first["awsRegion"], "us-east-1");
        assert_eq!(first["dynamodb"]["SequenceNumber"], sequence(102));
    }

    #[tokio::test]
    async fn records_the_triggers_filters_leave_out_are_left_out_again() {
        let shard = Shard::new(&["d#1", "state", "x#other", "d#2"]);
        let filters = FilterCriteria::new(&[json!({
            "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}
        })])
        .expect("a pattern");
        let replay = read(&shard, &range(101, 104), &filters, "us-east-1")
            .await
            .expect("read back");
        assert_eq!(sort_keys(&replay), ["d#1", "d#2"]);
        assert_eq!(replay.left_out, 2);
    }

    #[tokio::test]
    async fn trimmed_records_have_left_the_stream() {
        let mut shard = Shard::new(&["d#1"]);
        shard.trimmed = true;
        let err = read(&shard, &range(101, 101), &everything(), "us-east-1")
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::LeftTheStream(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_range_the_shard_does_not_hold_whole_is_incomplete() {
        // The first record is gone: the shard starts later.
        let shard = Shard::new(&["d#1", "d#2"]);
        let err = read(&shard, &range(100, 102), &everything(), "us-east-1")
            .await
            .unwrap_err();
        assert!(matches!(err, ReplayError::Incomplete(_)), "{err:?}");

        // The last record never comes: a closed shard ends, an open one runs dry.
        for closed in [true, false] {
            let mut shard = Shard::new(&["d#1", "d#2"]);
            shard.closed = closed;
            let err = read(&shard, &range(101, 109), &everything(), "us-east-1")
                .await
                .unwrap_err();
            assert!(matches!(err, ReplayError::Incomplete(_)), "{err:?}");
        }
    }

    #[test]
    fn sdk_messages_lose_their_raw_response() {
        assert_eq!(
            brief(
                "service error: ResourceNotFoundException: Stream does not exist (ServiceError(ServiceError { raw: Response { .. } }))"
            ),
            "service error: ResourceNotFoundException: Stream does not exist"
        );
        assert_eq!(brief("throttled"), "throttled");
    }

    #[test]
    fn sequence_numbers_compare_as_numbers_of_any_length() {
        assert_eq!(compare("000000000000000000101", "101"), Ordering::Equal);
        assert_eq!(compare("99", "100"), Ordering::Less);
        assert_eq!(
            compare(
                "4421584500000000017450439092",
                "4421584500000000017450439091"
            ),
            Ordering::Greater
        );
        assert_eq!(compare("0", "000"), Ordering::Equal);
    }
}
