//! What Lambda sends to a stream mapping's on-failure destination when it gives up on
//! records: not the records, only where they are (`DDBStreamBatchInfo`), with the
//! invocation's context. The local stack appends each one as a line of JSON to a file.

use std::io::Write;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::record::StreamRecord;

/// Why records were given up on (`requestContext.condition`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// `MaximumRetryAttempts` retries failed.
    RetryAttemptsExhausted,
    /// The records are older than `MaximumRecordAgeInSeconds`.
    RecordAgeExceeded,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
        }
    }
}

/// How the last invocation of the records ended, for `responseContext`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LastResponse {
    /// The function failed (`functionError: "Unhandled"`).
    FunctionError,
    /// The function answered, but reported the records as failed.
    ReportedFailure,
}

/// Records given up on, and the circumstances.
pub(crate) struct Discard<'a> {
    pub condition: Condition,
    /// Invocations that included these records.
    pub invoke_count: u32,
    /// `None` when the records were never delivered (then there is no `responseContext`).
    pub last_response: Option<LastResponse>,
    pub records: &'a [StreamRecord],
    pub shard_id: &'a str,
    pub stream_arn: &'a str,
    pub function_arn: &'a str,
}

impl Discard<'_> {
    /// The destination message.
    pub fn to_json(&self, now: DateTime<Utc>) -> Value {
        let first = self.records.first();
        let last = self.records.last();
        let arrival = |record: Option<&StreamRecord>| {
            record
                .map(|r| r.created.unwrap_or(r.arrival))
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        };
        let mut message = json!({
            "requestContext": {
                "requestId": crate::runtime::uuid_v4(),
                "functionArn": self.function_arn,
                "condition": self.condition.as_str(),
                "approximateInvokeCount": self.invoke_count,
            },
            "version": "1.0",
            "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
            "DDBStreamBatchInfo": {
                "shardId": self.shard_id,
                "startSequenceNumber": first.map(|r| r.sequence_number.as_str()),
                "endSequenceNumber": last.map(|r| r.sequence_number.as_str()),
                "approximateArrivalOfFirstRecord": arrival(first),
                "approximateArrivalOfLastRecord": arrival(last),
                "batchSize": self.records.len(),
                "streamArn": self.stream_arn,
            }
        });
        if let Some(response) = self.last_response {
            let mut context = json!({"statusCode": 200, "executedVersion": "$LATEST"});
            if response == LastResponse::FunctionError {
                context["functionError"] = json!("Unhandled");
            }
            message["responseContext"] = context;
        }
        message
    }
}

/// Appends `message` as one line, on a blocking thread. A single `write_all` of the whole
/// line to a file opened for appending, and a blocking task runs to its end even when the
/// trigger is stopped mid-way: never half a line.
pub(crate) async fn append(path: &Path, message: &Value) -> std::io::Result<()> {
    let path = path.to_owned();
    let mut line = message.to_string();
    line.push('\n');
    tokio::task::spawn_blocking(move || append_line(&path, &line))
        .await
        .map_err(std::io::Error::other)?
}

fn append_line(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let _lock = lock(path)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

/// Holds the on-failure file's lock (an exclusive advisory lock on a file beside it,
/// `.<name>.lock`) until dropped: the trigger appends and `redrive` rewrites under it, so
/// a line appended while a redrive runs is never lost to its rename.
pub(crate) fn lock(path: &Path) -> std::io::Result<std::fs::File> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_file_name(format!(".{name}.lock")))?;
    file.lock()?;
    Ok(file)
}

/// The function's ARN as Lambda would write it, with the stream's account.
pub(crate) fn function_arn(region: &str, stream_arn: &str, function: &str) -> String {
    let account = stream_arn
        .split(':')
        .nth(4)
        .filter(|account| !account.is_empty())
        .unwrap_or(crate::invoke::LOCAL_ACCOUNT);
    format!("arn:aws:lambda:{region}:{account}:function:{function}")
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn an_append_waits_while_a_redrive_holds_the_files_lock() {
        let dir = std::env::temp_dir().join(format!("on-failure-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("failures.jsonl");
        let held = lock(&path).unwrap();
        let (done, appended) = std::sync::mpsc::channel();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                append_line(&path, "{}\n").unwrap();
                done.send(()).unwrap();
            })
        };
        assert!(
            appended
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "appended while the lock was held"
        );
        drop(held);
        appended
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("appended once the lock is free");
        writer.join().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{}\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn record(sequence: &str, created: DateTime<Utc>) -> StreamRecord {
        StreamRecord {
            sequence_number: sequence.into(),
            created: Some(created),
            arrival: created,
            event: json!({}),
        }
    }

    #[test]
    fn the_message_has_lambdas_shape() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let records = [record("101", t0), record("102", t0 + TimeDelta::seconds(3))];
        let discard = Discard {
            condition: Condition::RetryAttemptsExhausted,
            invoke_count: 3,
            last_response: Some(LastResponse::FunctionError),
            records: &records,
            shard_id: "shardId-1",
            stream_arn: "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x",
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction",
        };
        let message = discard.to_json(t0 + TimeDelta::milliseconds(10_500));
        assert_eq!(
            message["requestContext"]["condition"],
            "RetryAttemptsExhausted"
        );
        assert_eq!(message["requestContext"]["approximateInvokeCount"], 3);
        assert_eq!(
            message["requestContext"]["requestId"]
                .as_str()
                .unwrap()
                .len(),
            36
        );
        assert_eq!(
            message["responseContext"],
            json!({"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"})
        );
        assert_eq!(message["version"], "1.0");
        assert_eq!(message["timestamp"], "2023-11-14T22:13:30.500Z");
        assert_eq!(
            message["DDBStreamBatchInfo"],
            json!({
                "shardId": "shardId-1",
                "startSequenceNumber": "101",
                "endSequenceNumber": "102",
                "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20Z",
                "approximateArrivalOfLastRecord": "2023-11-14T22:13:23Z",
                "batchSize": 2,
                "streamArn": "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x",
            })
        );

        let never_delivered = Discard {
            condition: Condition::RecordAgeExceeded,
            invoke_count: 0,
            last_response: None,
            ..discard
        };
        let message = never_delivered.to_json(t0);
        assert_eq!(message["requestContext"]["condition"], "RecordAgeExceeded");
        assert!(message.get("responseContext").is_none());
    }

    #[tokio::test]
    async fn lines_are_appended() {
        let dir =
            std::env::temp_dir().join(format!("deltacast-on-failure-{:x}", rand::random::<u64>()));
        let path = dir.join("nested").join("failures.jsonl");
        append(&path, &json!({"a": 1})).await.unwrap();
        append(&path, &json!({"b": 2})).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_function_arn_takes_the_streams_account() {
        assert_eq!(
            function_arn(
                "us-east-1",
                "arn:aws:dynamodb:ddblocal:123456789012:table/t/stream/x",
                "F"
            ),
            "arn:aws:lambda:us-east-1:123456789012:function:F"
        );
        assert_eq!(
            function_arn("us-east-1", "nonsense", "F"),
            "arn:aws:lambda:us-east-1:000000000000:function:F"
        );
    }
}
