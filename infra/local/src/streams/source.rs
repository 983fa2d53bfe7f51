//! The three DynamoDB Streams calls the trigger makes (DescribeStream, GetShardIterator,
//! GetRecords), behind [`ShardSource`] so that shard lineage, iterator expiry and
//! trimming can be tested against a scripted stream as well as against DynamoDB Local.
//! Service errors are sorted into the few cases the trigger treats differently.

use std::future::Future;

use aws_sdk_dynamodbstreams::Client;
use aws_sdk_dynamodbstreams::error::DisplayErrorContext;
use aws_sdk_dynamodbstreams::operation::describe_stream::DescribeStreamError;
use aws_sdk_dynamodbstreams::operation::get_records::GetRecordsError;
use aws_sdk_dynamodbstreams::operation::get_shard_iterator::GetShardIteratorError;
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType};

/// A shard as DescribeStream lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    /// `ShardId`.
    pub id: String,
    /// `ParentShardId`: read that one to its end first.
    pub parent: Option<String>,
    /// The shard has an `EndingSequenceNumber`: it takes no new records.
    pub closed: bool,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Position {
    /// The oldest record still in the shard.
    TrimHorizon,
    /// Just after the newest record.
    Latest,
    /// Just after this sequence number.
    After(String),
    /// At this sequence number (reading back records given up on).
    At(String),
}

/// One GetRecords answer.
#[derive(Clone, Debug, Default)]
pub(crate) struct Page {
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Where to read next; `None` once a closed shard has been read to its end.
    pub next_iterator: Option<String>,
}

/// A failed Streams call, sorted by what the trigger does about it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SourceError {
    /// The stream or shard does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// The shard iterator is older than 15 minutes; get a new one.
    #[error("shard iterator expired: {0}")]
    ExpiredIterator(String),
    /// The records asked for are past the retention period.
    #[error("records trimmed: {0}")]
    Trimmed(String),
    /// Anything else (throttling, network, DynamoDB Local restarting, ...): try again.
    #[error("{0}")]
    Other(String),
}

/// A DynamoDB stream, as far as the trigger reads one.
pub(crate) trait ShardSource: Sync {
    /// Every shard of the stream (all DescribeStream pages).
    fn shards(
        &self,
        stream_arn: &str,
    ) -> impl Future<Output = Result<Vec<ShardInfo>, SourceError>> + Send;

    /// A shard iterator at `position`.
    fn iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &Position,
    ) -> impl Future<Output = Result<String, SourceError>> + Send;

    /// Up to `limit` records from `iterator`.
    fn records(
        &self,
        iterator: &str,
        limit: i32,
    ) -> impl Future<Output = Result<Page, SourceError>> + Send;
}

impl ShardSource for Client {
    async fn shards(&self, stream_arn: &str) -> Result<Vec<ShardInfo>, SourceError> {
        let mut shards = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .describe_stream()
                .stream_arn(stream_arn)
                .set_exclusive_start_shard_id(start.take())
                .send()
                .await
                .map_err(|err| {
                    let message = DisplayErrorContext(&err).to_string();
                    match err.into_service_error() {
                        DescribeStreamError::ResourceNotFoundException(_) => {
                            SourceError::NotFound(message)
                        }
                        _ => SourceError::Other(message),
                    }
                })?;
            let Some(description) = output.stream_description() else {
                return Ok(shards);
            };
            shards.extend(description.shards().iter().filter_map(|shard| {
                Some(ShardInfo {
                    id: shard.shard_id()?.to_owned(),
                    parent: shard.parent_shard_id().map(str::to_owned),
                    closed: shard
                        .sequence_number_range()
                        .and_then(|range| range.ending_sequence_number())
                        .is_some(),
                })
            }));
            match description.last_evaluated_shard_id() {
                Some(last) => start = Some(last.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    async fn iterator(
        &self,
        stream_arn: &str,
        shard_id: &str,
        position: &Position,
    ) -> Result<String, SourceError> {
        let request = self
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard_id);
        let request = match position {
            Position::TrimHorizon => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Position::Latest => request.shard_iterator_type(ShardIteratorType::Latest),
            Position::After(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(sequence),
            Position::At(sequence) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(sequence),
        };
        let output = request.send().await.map_err(|err| {
            let message = DisplayErrorContext(&err).to_string();
            match err.into_service_error() {
                GetShardIteratorError::ResourceNotFoundException(_) => {
                    SourceError::NotFound(message)
                }
                GetShardIteratorError::TrimmedDataAccessException(_) => {
                    SourceError::Trimmed(message)
                }
                _ => SourceError::Other(message),
            }
        })?;
        output
            .shard_iterator()
            .map(str::to_owned)
            .ok_or_else(|| SourceError::Other("GetShardIterator returned no iterator".into()))
    }

    async fn records(&self, iterator: &str, limit: i32) -> Result<Page, SourceError> {
        let output = self
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(|err| {
                let message = DisplayErrorContext(&err).to_string();
                match err.into_service_error() {
                    GetRecordsError::ExpiredIteratorException(_) => {
                        SourceError::ExpiredIterator(message)
                    }
                    GetRecordsError::TrimmedDataAccessException(_) => SourceError::Trimmed(message),
                    GetRecordsError::ResourceNotFoundException(_) => SourceError::NotFound(message),
                    _ => SourceError::Other(message),
                }
            })?;
        Ok(Page {
            next_iterator: output.next_shard_iterator().map(str::to_owned),
            records: output.records.unwrap_or_default(),
        })
    }
}
