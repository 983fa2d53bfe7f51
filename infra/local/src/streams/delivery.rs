//! Delivering one batch: invoke, read the answer, retry, bisect, give up. Returns only
//! when every record of the batch has either been processed or been given up on, which
//! is what keeps a shard in order.
//!
//! The rules, from the Lambda developer guide (DynamoDB Streams error handling and
//! partial batch responses):
//! - A function error, or a `batchItemFailures` entry whose `itemIdentifier` is null,
//!   empty or not in the batch, fails the whole batch. An empty or absent list (or no
//!   response) is success. Responses are only read with `ReportBatchItemFailures`.
//! - Otherwise Lambda checkpoints before the lowest reported sequence number and retries
//!   from there; that is a retry (and with bisecting on, the batch is "bisected at the
//!   returned sequence number": the same thing).
//! - With `BisectBatchOnFunctionError`, a failed batch is split in two and the halves are
//!   retried, the first one first; "splitting a batch does not count towards the retry
//!   quota", so the halves carry on with the retries their batch had used. A batch of one
//!   cannot be split: it is retried, which counts.
//! - After `MaximumRetryAttempts` retries (-1: no limit), or once records are older than
//!   `MaximumRecordAgeInSeconds` (checked before every attempt, so records that are too
//!   old are never sent), Lambda gives up on them, reports them to the on-failure
//!   destination and moves on. Without a maximum age (-1), or with one past it, records
//!   still expire with the stream's 24 hour retention: that is where even unlimited
//!   retries end.
//! - A function that cannot be invoked at all ([`InvokeError::Unavailable`], a throttle
//!   included) is like a throttle in AWS: retried until the records age out, without
//!   counting.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::Value;
use tracing::{error, info, warn};

use super::on_failure::{self, Condition, Discard, LastResponse};
use super::options::PollOptions;
use super::record::{self, StreamRecord};
use super::stats::TriggerStats;
use crate::invoke::{Invoke, InvokeError};
use crate::template::StreamTrigger;

/// The longest pause between two attempts at the same records.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long DynamoDB Streams keeps a record: the oldest a record can be when delivered.
pub(crate) const STREAM_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// Everything one shard's deliveries need.
pub(crate) struct Delivery<'a, I> {
    pub invoker: &'a I,
    pub trigger: &'a StreamTrigger,
    pub options: &'a PollOptions,
    pub stats: &'a TriggerStats,
    pub stream_arn: &'a str,
    pub shard_id: &'a str,
    pub function_arn: &'a str,
}

/// How one invocation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every record processed.
    Success,
    /// Records before this index processed; retry from it.
    PartialFailure { first_failed: usize },
    /// The whole batch failed.
    BatchFailure(Failure),
    /// The function could not be invoked.
    NotInvoked(String),
}

/// Why a whole batch failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The function returned an error, timed out or crashed.
    Function(String),
    /// The response's `batchItemFailures` was unusable.
    Response(String),
}

impl Failure {
    fn last_response(&self) -> LastResponse {
        match self {
            Failure::Function(_) => LastResponse::FunctionError,
            Failure::Response(_) => LastResponse::ReportedFailure,
        }
    }
}

/// Reads an invocation's result the way Lambda does.
pub(crate) fn interpret(
    result: Result<Value, InvokeError>,
    records: &[StreamRecord],
    report_batch_item_failures: bool,
) -> Outcome {
    let response = match result {
        Ok(response) => response,
        Err(InvokeError::Unavailable(reason)) => return Outcome::NotInvoked(reason),
        Err(err) => return Outcome::BatchFailure(Failure::Function(err.to_string())),
    };
    if !report_batch_item_failures {
        return Outcome::Success;
    }
    let failures = match response.get("batchItemFailures") {
        None | Some(Value::Null) => return Outcome::Success,
        Some(Value::Array(failures)) => failures,
        Some(other) => {
            return Outcome::BatchFailure(Failure::Response(format!(
                "batchItemFailures is not a list: {other}"
            )));
        }
    };
    let mut first_failed: Option<usize> = None;
    for failure in failures {
        let identifier = failure
            .get("itemIdentifier")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(index) = records
            .iter()
            .position(|r| !identifier.is_empty() && r.sequence_number == identifier)
        else {
            return Outcome::BatchFailure(Failure::Response(format!(
                "itemIdentifier {} is not a sequence number of the batch",
                failure.get("itemIdentifier").unwrap_or(&Value::Null)
            )));
        };
        first_failed = Some(first_failed.map_or(index, |first| first.min(index)));
    }
    match first_failed {
        None => Outcome::Success,
        Some(first_failed) => Outcome::PartialFailure { first_failed },
    }
}

/// Some records of the batch, and their history.
struct Attempt {
    records: Vec<StreamRecord>,
    /// Retries used (bisecting does not use any).
    retries: u32,
    /// Invocations these records were part of.
    invocations: u32,
    last_response: Option<LastResponse>,
}

/// The pause before the `n`th consecutive attempt at the same records: the poll interval,
/// doubling, at most [`MAX_BACKOFF`].
pub(crate) fn backoff(poll_interval: Duration, n: u32) -> Duration {
    let base = poll_interval.max(Duration::from_millis(10));
    base.saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(MAX_BACKOFF)
}

impl<I: Invoke> Delivery<'_, I> {
    /// Delivers `batch` until each record is processed or given up on.
    pub async fn deliver(&self, batch: Vec<StreamRecord>) {
        let mut queue = VecDeque::from([Attempt {
            records: batch,
            retries: 0,
            invocations: 0,
            last_response: None,
        }]);
        let max_age = self
            .trigger
            .maximum_record_age
            .map_or(STREAM_RETENTION, |age| age.min(STREAM_RETENTION));
        let mut unavailable = 0;
        while let Some(mut attempt) = queue.pop_front() {
            let now = Utc::now();
            let expired = attempt
                .records
                .iter()
                .take_while(|r| r.age(now) > max_age)
                .count();
            if expired > 0 {
                let rest = attempt.records.split_off(expired);
                self.give_up(&attempt, Condition::RecordAgeExceeded).await;
                if rest.is_empty() {
                    continue;
                }
                attempt.records = rest;
            }

            let outcome = self.invoke(&attempt).await;
            if !matches!(outcome, Outcome::NotInvoked(_)) {
                attempt.invocations += 1;
            }
            match outcome {
                Outcome::NotInvoked(reason) => {
                    unavailable += 1;
                    warn!(
                        function = %self.trigger.function,
                        shard_id = self.shard_id,
                        reason,
                        "function unavailable; will try again"
                    );
                    tokio::time::sleep(backoff(self.options.poll_interval, unavailable)).await;
                    queue.push_front(attempt);
                    continue;
                }
                Outcome::Success => {
                    unavailable = 0;
                    self.stats.add_succeeded(attempt.records.len());
                    self.maybe_duplicate(&attempt.records).await;
                }
                Outcome::PartialFailure { first_failed } => {
                    unavailable = 0;
                    self.stats.add_succeeded(first_failed);
                    let rest = attempt.records.split_off(first_failed);
                    let attempt = Attempt {
                        records: rest,
                        last_response: Some(LastResponse::ReportedFailure),
                        ..attempt
                    };
                    self.retry_or_give_up(&mut queue, attempt).await;
                }
                Outcome::BatchFailure(failure) => {
                    unavailable = 0;
                    attempt.last_response = Some(failure.last_response());
                    if self.trigger.bisect_on_error && attempt.records.len() > 1 {
                        self.stats.add_bisect();
                        let second = attempt.records.split_off(attempt.records.len() / 2);
                        queue.push_front(Attempt {
                            records: second,
                            ..attempt
                        });
                        queue.push_front(Attempt {
                            records: std::mem::take(&mut attempt.records),
                            ..attempt
                        });
                    } else {
                        self.retry_or_give_up(&mut queue, attempt).await;
                    }
                }
            }
        }
    }

    async fn retry_or_give_up(&self, queue: &mut VecDeque<Attempt>, attempt: Attempt) {
        let limit = self.trigger.maximum_retry_attempts;
        if limit < 0 || i64::from(attempt.retries) < limit {
            self.stats.add_retry();
            let retries = attempt.retries + 1;
            tokio::time::sleep(backoff(self.options.poll_interval, retries)).await;
            queue.push_front(Attempt { retries, ..attempt });
        } else {
            self.give_up(&attempt, Condition::RetryAttemptsExhausted)
                .await;
        }
    }

    /// Invokes the function with `attempt`'s records; logs and counts the invocation.
    async fn invoke(&self, attempt: &Attempt) -> Outcome {
        let records = &attempt.records;
        let started = Instant::now();
        let result = self.invoker.invoke(record::event(records)).await;
        let outcome = interpret(result, records, self.trigger.report_batch_item_failures);
        let duration_ms = started.elapsed().as_millis() as u64;
        if matches!(outcome, Outcome::NotInvoked(_)) {
            return outcome;
        }
        self.stats.add_invocation(records.len());
        let description = match &outcome {
            Outcome::Success => "ok".to_owned(),
            Outcome::PartialFailure { first_failed } => {
                format!(
                    "batch item failures from {}",
                    records[*first_failed].sequence_number
                )
            }
            Outcome::BatchFailure(Failure::Function(error)) => format!("function error: {error}"),
            Outcome::BatchFailure(Failure::Response(error)) => {
                format!("whole batch failed: {error}")
            }
            Outcome::NotInvoked(reason) => reason.clone(),
        };
        info!(
            function = %self.trigger.function,
            shard_id = self.shard_id,
            records = records.len(),
            first_sequence_number = records.first().map(|r| r.sequence_number.as_str()),
            retry = attempt.retries,
            outcome = %description,
            duration_ms,
            "stream batch invoked"
        );
        outcome
    }

    /// Fault injection: a second delivery of a batch that succeeded, as Lambda's
    /// at-least-once delivery may do. Its outcome does not matter.
    async fn maybe_duplicate(&self, records: &[StreamRecord]) {
        // Written so that a NaN or negative rate never duplicates.
        let duplicate = rand::random::<f64>() < self.options.duplicate_batch_rate;
        if !duplicate {
            return;
        }
        self.stats.add_duplicate();
        let result = self.invoker.invoke(record::event(records)).await;
        let outcome = interpret(result, records, self.trigger.report_batch_item_failures);
        info!(
            function = %self.trigger.function,
            shard_id = self.shard_id,
            records = records.len(),
            outcome = ?outcome,
            "stream batch invoked again (duplicate delivery, fault injection)"
        );
    }

    async fn give_up(&self, attempt: &Attempt, condition: Condition) {
        let records = &attempt.records;
        self.stats.add_given_up(records.len());
        let message = Discard {
            condition,
            invoke_count: attempt.invocations,
            last_response: attempt.last_response,
            records,
            shard_id: self.shard_id,
            stream_arn: self.stream_arn,
            function_arn: self.function_arn,
        }
        .to_json(Utc::now());
        warn!(
            function = %self.trigger.function,
            shard_id = self.shard_id,
            condition = condition.as_str(),
            records = records.len(),
            invocations = attempt.invocations,
            on_failure = %message,
            "gave up on stream records"
        );
        if let Err(err) = on_failure::append(&self.options.on_failure_path, &message).await {
            error!(
                path = %self.options.on_failure_path.display(),
                error = %err,
                "could not record the given-up records"
            );
        }
    }
}
