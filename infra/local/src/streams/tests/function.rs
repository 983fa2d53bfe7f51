//! A function for tests: it decodes every event as the fan-out does
//! (`aws_lambda_events::dynamodb::Event`), remembers which records it was given (by sort
//! key), and fails on purpose as told.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::invoke::{Invoke, InvokeError};
use crate::streams::PollOptions;
use crate::template::StreamTrigger;

/// A scripted function; clones share their state.
#[derive(Clone, Default)]
pub(super) struct TestFunction(Arc<State>);

#[derive(Default)]
struct State {
    calls: Mutex<Vec<Vec<String>>>,
    events: Mutex<Vec<Value>>,
    /// Sort key → how many more times to report it in `batchItemFailures`.
    report: Mutex<HashMap<String, u32>>,
    /// Sort keys that make an invocation fail with a function error.
    poison: Mutex<HashSet<String>>,
    /// Answer this instead of computing `batchItemFailures`.
    reply: Mutex<Option<Value>>,
    /// Invocations to refuse as unavailable before working.
    unavailable: AtomicU32,
    /// Invocations refused as unavailable so far.
    refusals: AtomicU32,
}

impl TestFunction {
    /// Reports the record with sort key `sk` as failed, the next `times` times.
    pub fn report_failure(&self, sk: &str, times: u32) -> &Self {
        self.0.report.lock().unwrap().insert(sk.to_owned(), times);
        self
    }

    /// Fails every invocation whose batch holds `sk`.
    pub fn poison(&self, sk: &str) -> &Self {
        self.0.poison.lock().unwrap().insert(sk.to_owned());
        self
    }

    /// Answers `reply` to every invocation.
    pub fn reply(&self, reply: Value) -> &Self {
        *self.0.reply.lock().unwrap() = Some(reply);
        self
    }

    /// Refuses the next `times` invocations as unavailable.
    pub fn unavailable(&self, times: u32) -> &Self {
        self.0.unavailable.store(times, Ordering::SeqCst);
        self
    }

    /// How many invocations were refused as unavailable.
    pub fn refusals(&self) -> u32 {
        self.0.refusals.load(Ordering::SeqCst)
    }

    /// The sort keys of each invocation's records.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.0.calls.lock().unwrap().clone()
    }

    /// Every sort key delivered, in delivery order, invocation after invocation.
    pub fn delivered(&self) -> Vec<String> {
        self.calls().concat()
    }

    /// The raw events received.
    pub fn events(&self) -> Vec<Value> {
        self.0.events.lock().unwrap().clone()
    }
}

impl Invoke for TestFunction {
    async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let refused = self
            .0
            .unavailable
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refused {
            self.0.refusals.fetch_add(1, Ordering::SeqCst);
            return Err(InvokeError::Unavailable("scripted".into()));
        }
        let decoded: aws_lambda_events::dynamodb::Event = serde_json::from_value(event.clone())
            .expect("the trigger sends a Lambda DynamoDB event");
        let keys: Vec<(String, String)> = decoded
            .records
            .iter()
            .map(|record| {
                let sk = match record.change.keys.get("sk") {
                    Some(serde_dynamo::AttributeValue::S(sk)) => sk.clone(),
                    other => panic!("record without a string sk: {other:?}"),
                };
                let sequence = record
                    .change
                    .sequence_number
                    .clone()
                    .expect("SequenceNumber");
                (sk, sequence)
            })
            .collect();
        self.0
            .calls
            .lock()
            .unwrap()
            .push(keys.iter().map(|(sk, _)| sk.clone()).collect());
        self.0.events.lock().unwrap().push(event);

        let poison = self.0.poison.lock().unwrap();
        if let Some((sk, _)) = keys.iter().find(|(sk, _)| poison.contains(sk)) {
            return Err(InvokeError::Function {
                error_type: "Poison".into(),
                error_message: format!("cannot process {sk}"),
            });
        }
        if let Some(reply) = self.0.reply.lock().unwrap().clone() {
            return Ok(reply);
        }
        let mut report = self.0.report.lock().unwrap();
        let failures: Vec<Value> = keys
            .iter()
            .filter(|(sk, _)| match report.get_mut(sk) {
                Some(times) if *times > 0 => {
                    *times -= 1;
                    true
                }
                _ => false,
            })
            .map(|(_, sequence)| json!({"itemIdentifier": sequence}))
            .collect();
        Ok(json!({"batchItemFailures": failures}))
    }
}

/// The template's trigger settings, adjustable.
pub(super) fn trigger() -> StreamTrigger {
    StreamTrigger {
        function: "FanoutFunction".into(),
        batch_size: 100,
        batching_window: Duration::ZERO,
        maximum_retry_attempts: 10,
        maximum_record_age: Some(Duration::from_secs(3600)),
        bisect_on_error: true,
        report_batch_item_failures: true,
        starting_position: "TRIM_HORIZON".into(),
        parallelization_factor: 1,
        filters: Vec::new(),
    }
}

/// Fast polling, and an on-failure file of the test's own.
pub(super) fn options() -> PollOptions {
    PollOptions {
        poll_interval: Duration::from_millis(5),
        on_failure_path: on_failure_path(),
        duplicate_batch_rate: 0.0,
        region: "us-east-1".into(),
    }
}

fn on_failure_path() -> PathBuf {
    std::env::temp_dir()
        .join("deltacast-streams-tests")
        .join(format!("{:016x}.jsonl", rand::random::<u64>()))
}

/// The on-failure messages written so far.
pub(super) fn on_failure_lines(options: &PollOptions) -> Vec<Value> {
    std::fs::read_to_string(&options.on_failure_path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

/// Waits (at most `limit`) until `done` holds.
pub(super) async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}
