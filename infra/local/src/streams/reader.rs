//! Reading one shard into batches: keeps the shard iterator (getting a new one where the
//! last read ended when it expires or fails), filters records as they are read, and
//! gathers up to `BatchSize` of them for at most `MaximumBatchingWindowInSeconds`.
//!
//! As the Lambda guide puts it, the function is invoked when the batch is full or the
//! batching window has passed; with no window, whatever one read returned is a batch.
//! Filtered-out records never reach a batch, and the iterator moves past them anyway.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::Utc;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use super::delivery::backoff;
use super::filter::FilterCriteria;
use super::record::StreamRecord;
use super::source::{Position, ShardSource, SourceError};
use super::stats::TriggerStats;

/// GetRecords returns at most this many records.
const GET_RECORDS_LIMIT: usize = 1000;

/// How a shard is read into batches.
pub(crate) struct BatchRules<'a> {
    pub batch_size: usize,
    pub batching_window: Duration,
    pub poll_interval: Duration,
    pub filters: &'a FilterCriteria,
    pub region: &'a str,
}

/// One shard being read.
pub(crate) struct ShardReader<'a, S> {
    source: &'a S,
    stream_arn: &'a str,
    shard_id: &'a str,
    rules: &'a BatchRules<'a>,
    stats: &'a TriggerStats,
    /// Where the first iterator starts.
    start: Position,
    iterator: Option<String>,
    /// The last sequence number read (filtered or not): a new iterator starts after it.
    last_read: Option<String>,
    /// Records read and kept, not yet handed out.
    buffer: VecDeque<StreamRecord>,
    started: bool,
    /// The shard is closed and read to its end, or gone.
    finished: bool,
    failures: u32,
}

impl<'a, S: ShardSource> ShardReader<'a, S> {
    /// A reader that starts at `start`.
    pub fn new(
        source: &'a S,
        stream_arn: &'a str,
        shard_id: &'a str,
        start: Position,
        rules: &'a BatchRules<'a>,
        stats: &'a TriggerStats,
    ) -> Self {
        Self {
            source,
            stream_arn,
            shard_id,
            rules,
            stats,
            start,
            iterator: None,
            last_read: None,
            buffer: VecDeque::new(),
            started: false,
            finished: false,
            failures: 0,
        }
    }

    /// The next batch, in shard order; `None` once the shard is finished.
    pub async fn next_batch(&mut self) -> Option<Vec<StreamRecord>> {
        let batch_size = self.rules.batch_size.max(1);
        let mut window_ends: Option<Instant> = None;
        loop {
            if self.buffer.len() >= batch_size
                || (self.finished && !self.buffer.is_empty())
                || window_ends.is_some_and(|end| Instant::now() >= end)
            {
                let n = self.buffer.len().min(batch_size);
                return Some(self.buffer.drain(..n).collect());
            }
            if self.finished {
                return None;
            }
            let Some(iterator) = self.iterator.clone() else {
                self.acquire().await;
                continue;
            };
            let limit = batch_size
                .saturating_sub(self.buffer.len())
                .clamp(1, GET_RECORDS_LIMIT) as i32;
            match self.source.records(&iterator, limit).await {
                Ok(page) => {
                    self.failures = 0;
                    let read_any = !page.records.is_empty();
                    self.iterator = page.next_iterator;
                    if self.iterator.is_none() {
                        debug!(shard_id = self.shard_id, "shard read to its end");
                        self.finished = true;
                    }
                    self.keep(&page.records);
                    if !self.buffer.is_empty() && window_ends.is_none() {
                        window_ends = Some(Instant::now() + self.rules.batching_window);
                    }
                    if !read_any && !self.finished {
                        // Caught up: wait for more, but not past the batching window.
                        let mut until = Instant::now() + self.rules.poll_interval;
                        if let Some(end) = window_ends {
                            until = until.min(end);
                        }
                        tokio::time::sleep_until(until).await;
                    }
                }
                Err(err) => self.failed(err, "GetRecords").await,
            }
        }
    }

    /// Converts and filters what a read returned.
    fn keep(&mut self, records: &[aws_sdk_dynamodbstreams::types::Record]) {
        let now = Utc::now();
        for record in records {
            let sequence = record.dynamodb().and_then(|d| d.sequence_number());
            if let Some(sequence) = sequence {
                self.last_read = Some(sequence.to_owned());
            }
            match StreamRecord::from_stream(record, self.stream_arn, self.rules.region, now) {
                Ok(record) if self.rules.filters.matches(&record.event) => {
                    self.buffer.push_back(record)
                }
                Ok(_) => self.stats.add_filtered_out(1),
                Err(err) => {
                    // Nothing the function could be given; Lambda would not get this far.
                    error!(shard_id = self.shard_id, sequence, error = %err, "skipping a stream record");
                    self.stats.add_given_up(1);
                }
            }
        }
    }

    /// Gets an iterator: after the last record read, or at the start. (A `LATEST` shard
    /// whose first iterator is lost before any record was read starts at the tip again;
    /// there is no sequence number to resume from.)
    async fn acquire(&mut self) {
        let position = match &self.last_read {
            Some(sequence) => Position::After(sequence.clone()),
            None => self.start.clone(),
        };
        match self
            .source
            .iterator(self.stream_arn, self.shard_id, &position)
            .await
        {
            Ok(iterator) => {
                self.failures = 0;
                self.iterator = Some(iterator);
                if !self.started {
                    self.started = true;
                    self.stats.add_shard_started();
                    debug!(shard_id = self.shard_id, ?position, "reading shard");
                }
            }
            Err(SourceError::Trimmed(message)) => {
                warn!(
                    shard_id = self.shard_id,
                    ?position,
                    message,
                    "records were trimmed before they were read; reading from the oldest one left"
                );
                self.start = Position::TrimHorizon;
                self.last_read = None;
            }
            Err(err) => self.failed(err, "GetShardIterator").await,
        }
    }

    /// A call failed: give the shard up if it is gone, otherwise get a new iterator after
    /// a pause (none for an expired iterator, the expected case).
    async fn failed(&mut self, err: SourceError, call: &str) {
        self.iterator = None;
        match err {
            SourceError::NotFound(message) => {
                warn!(
                    shard_id = self.shard_id,
                    call, message, "shard is gone; done with it"
                );
                self.finished = true;
            }
            SourceError::ExpiredIterator(message) => {
                debug!(
                    shard_id = self.shard_id,
                    message, "shard iterator expired; getting a new one"
                );
            }
            SourceError::Trimmed(message) => {
                warn!(
                    shard_id = self.shard_id,
                    call, message, "records were trimmed before they were read"
                );
                self.start = Position::TrimHorizon;
                self.last_read = None;
            }
            SourceError::Other(message) => {
                self.failures += 1;
                warn!(
                    shard_id = self.shard_id,
                    call, message, "stream read failed; will try again"
                );
                tokio::time::sleep(backoff(self.rules.poll_interval, self.failures)).await;
            }
        }
    }
}
