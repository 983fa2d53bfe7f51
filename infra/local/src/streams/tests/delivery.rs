//! Delivery of one batch: responses, retries, bisecting, giving up, duplicates.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use serde_json::json;

use super::function::{TestFunction, on_failure_lines, options, trigger};
use crate::invoke::InvokeError;
use crate::streams::delivery::{Delivery, Failure, Outcome, backoff, interpret};
use crate::streams::record::StreamRecord;
use crate::streams::record::tests::sdk_record;
use crate::streams::{PollOptions, TriggerCounts, TriggerStats};
use crate::template::StreamTrigger;

/// Hang guard of deliveries that end only when records age out.
const HANG_GUARD: Duration = Duration::from_secs(30);

const ARN: &str = "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/2026-01-01T00:00:00.000";

/// Records with sort keys `a`, `b`, ... and sequence numbers 101, 102, ...
fn records(n: usize) -> Vec<StreamRecord> {
    (0..n)
        .map(|i| {
            let sk = ((b'a' + i as u8) as char).to_string();
            let mut record = StreamRecord::from_stream(
                &sdk_record(&format!("{}", 101 + i), "c#1", &sk),
                ARN,
                "us-east-1",
                Utc::now(),
            )
            .unwrap();
            record.arrival = Utc::now();
            record
        })
        .collect()
}

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn deliver(
    function: &TestFunction,
    trigger: &StreamTrigger,
    options: &PollOptions,
    batch: Vec<StreamRecord>,
) -> TriggerCounts {
    let stats = TriggerStats::new();
    Delivery {
        invoker: function,
        trigger,
        options,
        stats: &stats,
        stream_arn: ARN,
        shard_id: "shardId-1",
        function_arn: "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction",
    }
    .deliver(batch)
    .await;
    stats.counts()
}

#[test]
fn responses_are_read_the_way_lambda_reads_them() {
    let batch = records(3);
    let ok = |response| interpret(Ok(response), &batch, true);
    assert_eq!(ok(json!(null)), Outcome::Success, "no response");
    assert_eq!(ok(json!({})), Outcome::Success, "empty response");
    assert_eq!(ok(json!({"batchItemFailures": null})), Outcome::Success);
    assert_eq!(ok(json!({"batchItemFailures": []})), Outcome::Success);
    assert_eq!(
        ok(json!({"batchItemFailures": [{"itemIdentifier": "103"}, {"itemIdentifier": "102"}]})),
        Outcome::PartialFailure { first_failed: 1 },
        "the lowest sequence number wins"
    );
    for bad in [json!(""), json!(null), json!("999"), json!(102)] {
        assert!(
            matches!(
                ok(
                    json!({"batchItemFailures": [{"itemIdentifier": "103"}, {"itemIdentifier": bad}]})
                ),
                Outcome::BatchFailure(Failure::Response(_))
            ),
            "itemIdentifier {bad} fails the whole batch"
        );
    }
    assert!(matches!(
        ok(json!({"batchItemFailures": "102"})),
        Outcome::BatchFailure(Failure::Response(_))
    ));
    assert_eq!(
        interpret(
            Ok(json!({"batchItemFailures": [{"itemIdentifier": "999"}]})),
            &batch,
            false
        ),
        Outcome::Success,
        "without ReportBatchItemFailures the response is not read"
    );
    let error = InvokeError::Function {
        error_type: "E".into(),
        error_message: "boom".into(),
    };
    assert!(matches!(
        interpret(Err(error), &batch, true),
        Outcome::BatchFailure(Failure::Function(_))
    ));
    assert!(matches!(
        interpret(
            Err(InvokeError::Timeout(Duration::from_secs(3))),
            &batch,
            true
        ),
        Outcome::BatchFailure(Failure::Function(_))
    ));
    assert!(matches!(
        interpret(
            Err(InvokeError::Unavailable("stopping".into())),
            &batch,
            true
        ),
        Outcome::NotInvoked(_)
    ));
}

#[test]
fn backoff_doubles_up_to_a_second() {
    let poll = Duration::from_millis(100);
    assert_eq!(backoff(poll, 1), Duration::from_millis(100));
    assert_eq!(backoff(poll, 2), Duration::from_millis(200));
    assert_eq!(backoff(poll, 4), Duration::from_millis(800));
    assert_eq!(backoff(poll, 5), Duration::from_secs(1));
    assert_eq!(backoff(poll, 1000), Duration::from_secs(1));
}

#[tokio::test]
async fn a_successful_batch_is_invoked_once() {
    let function = TestFunction::default();
    let counts = deliver(&function, &trigger(), &options(), records(3)).await;
    assert_eq!(function.calls(), [keys(&["a", "b", "c"])]);
    assert_eq!(counts.invocations, 1);
    assert_eq!(counts.records_succeeded, 3);
    assert_eq!(counts.retries, 0);
}

#[tokio::test]
async fn batch_item_failures_retry_from_the_lowest_failed_record() {
    let function = TestFunction::default();
    function.report_failure("d", 1).report_failure("c", 1);
    let counts = deliver(&function, &trigger(), &options(), records(5)).await;
    assert_eq!(
        function.calls(),
        [keys(&["a", "b", "c", "d", "e"]), keys(&["c", "d", "e"])],
        "a and b were checkpointed and are not sent again"
    );
    assert_eq!(counts.retries, 1);
    assert_eq!(
        counts.bisects, 0,
        "a partial failure is not bisected further"
    );
    assert_eq!(counts.records_succeeded, 5);
}

#[tokio::test]
async fn reported_failures_that_never_clear_are_given_up_after_the_retries() {
    let function = TestFunction::default();
    function.report_failure("b", u32::MAX);
    let trigger = StreamTrigger {
        maximum_retry_attempts: 2,
        ..trigger()
    };
    let options = options();
    let counts = deliver(&function, &trigger, &options, records(3)).await;
    assert_eq!(
        function.calls(),
        [keys(&["a", "b", "c"]), keys(&["b", "c"]), keys(&["b", "c"])]
    );
    assert_eq!(
        (
            counts.retries,
            counts.records_succeeded,
            counts.records_given_up
        ),
        (2, 1, 2)
    );
    let lines = on_failure_lines(&options);
    assert_eq!(lines.len(), 1);
    let info = &lines[0]["DDBStreamBatchInfo"];
    assert_eq!(
        (
            info["startSequenceNumber"].as_str(),
            info["endSequenceNumber"].as_str()
        ),
        (Some("102"), Some("103"))
    );
    assert_eq!(info["batchSize"], 2);
    assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 3);
    assert!(
        lines[0]["responseContext"].get("functionError").is_none(),
        "the function answered"
    );
}

#[tokio::test]
async fn a_failed_batch_is_retried_whole_then_given_up() {
    let function = TestFunction::default();
    function.poison("a");
    let trigger = StreamTrigger {
        maximum_retry_attempts: 2,
        bisect_on_error: false,
        ..trigger()
    };
    let options = options();
    let counts = deliver(&function, &trigger, &options, records(2)).await;
    assert_eq!(
        function.calls(),
        vec![keys(&["a", "b"]); 3],
        "the first try and two retries"
    );
    assert_eq!(
        (counts.invocations, counts.retries, counts.records_given_up),
        (3, 2, 2)
    );
    let lines = on_failure_lines(&options);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(
        line["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(line["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        line["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction"
    );
    assert_eq!(line["responseContext"]["functionError"], "Unhandled");
    assert_eq!(line["DDBStreamBatchInfo"]["batchSize"], 2);
    assert_eq!(line["DDBStreamBatchInfo"]["shardId"], "shardId-1");
    assert_eq!(line["DDBStreamBatchInfo"]["streamArn"], ARN);
}

#[tokio::test]
async fn zero_retry_attempts_means_one_invocation() {
    let function = TestFunction::default();
    function.reply(json!({"batchItemFailures": [{"itemIdentifier": ""}]}));
    let trigger = StreamTrigger {
        maximum_retry_attempts: 0,
        bisect_on_error: false,
        ..trigger()
    };
    let options = options();
    let counts = deliver(&function, &trigger, &options, records(3)).await;
    assert_eq!(function.calls().len(), 1);
    assert_eq!(
        counts.records_given_up, 3,
        "an empty itemIdentifier fails the whole batch"
    );
    assert_eq!(
        on_failure_lines(&options)[0]["DDBStreamBatchInfo"]["batchSize"],
        3
    );
}

#[tokio::test]
async fn bisecting_isolates_a_poison_record_without_using_retries() {
    let function = TestFunction::default();
    function.poison("c");
    let trigger = StreamTrigger {
        maximum_retry_attempts: 1,
        ..trigger()
    };
    let options = options();
    let counts = deliver(&function, &trigger, &options, records(4)).await;
    assert_eq!(
        function.calls(),
        [
            keys(&["a", "b", "c", "d"]),
            keys(&["a", "b"]),
            keys(&["c", "d"]),
            keys(&["c"]),
            keys(&["c"]),
            keys(&["d"]),
        ],
        "halves in order; the single poison record gets its one retry; d comes after it"
    );
    assert_eq!(counts.bisects, 2);
    assert_eq!(counts.retries, 1, "splitting does not count as a retry");
    assert_eq!((counts.records_succeeded, counts.records_given_up), (3, 1));
    let lines = on_failure_lines(&options);
    assert_eq!(lines.len(), 1);
    let info = &lines[0]["DDBStreamBatchInfo"];
    assert_eq!(
        (
            info["startSequenceNumber"].as_str(),
            info["batchSize"].as_u64()
        ),
        (Some("103"), Some(1))
    );
    assert_eq!(info["endSequenceNumber"], "103");
    assert_eq!(
        lines[0]["requestContext"]["approximateInvokeCount"], 4,
        "every invocation that held c"
    );
}

#[tokio::test]
async fn records_older_than_the_maximum_age_are_given_up_without_being_sent() {
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        maximum_record_age: Some(Duration::from_secs(60)),
        ..trigger()
    };
    let options = options();
    let mut batch = records(3);
    batch[0].arrival = Utc::now() - TimeDelta::seconds(120);
    batch[1].arrival = Utc::now() - TimeDelta::seconds(61);
    let counts = deliver(&function, &trigger, &options, batch).await;
    assert_eq!(function.calls(), [keys(&["c"])]);
    assert_eq!(counts.records_given_up, 2);
    let lines = on_failure_lines(&options);
    assert_eq!(lines[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 0);
    assert!(lines[0].get("responseContext").is_none(), "never invoked");
    assert_eq!(lines[0]["DDBStreamBatchInfo"]["batchSize"], 2);
}

#[tokio::test]
async fn records_that_age_out_while_retried_are_given_up() {
    let function = TestFunction::default();
    function.poison("a");
    let trigger = StreamTrigger {
        maximum_retry_attempts: -1,
        maximum_record_age: Some(Duration::from_secs(1)),
        bisect_on_error: false,
        ..trigger()
    };
    let options = options();
    let counts = tokio::time::timeout(
        HANG_GUARD,
        deliver(&function, &trigger, &options, records(1)),
    )
    .await
    .expect("infinite retries end when the record is too old");
    assert!(counts.retries >= 1, "{counts:?}");
    let lines = on_failure_lines(&options);
    assert_eq!(lines[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(lines[0]["responseContext"]["functionError"], "Unhandled");
}

#[tokio::test]
async fn an_unavailable_function_is_retried_without_counting() {
    let function = TestFunction::default();
    function.unavailable(2);
    let trigger = StreamTrigger {
        maximum_retry_attempts: 0,
        ..trigger()
    };
    let counts = deliver(&function, &trigger, &options(), records(2)).await;
    assert_eq!(function.calls(), [keys(&["a", "b"])]);
    assert_eq!(
        (counts.invocations, counts.retries, counts.records_given_up),
        (1, 0, 0)
    );
}

#[tokio::test]
async fn duplicate_rate_one_invokes_every_successful_batch_twice() {
    let function = TestFunction::default();
    let options = PollOptions {
        duplicate_batch_rate: 1.0,
        ..options()
    };
    let counts = deliver(&function, &trigger(), &options, records(2)).await;
    assert_eq!(function.calls(), vec![keys(&["a", "b"]); 2]);
    assert_eq!((counts.invocations, counts.duplicate_invocations), (1, 1));
}

#[tokio::test]
async fn out_of_range_duplicate_rates_never_or_always_duplicate() {
    for (rate, duplicates) in [(f64::NAN, 0), (-1.0, 0), (7.0, 1)] {
        let function = TestFunction::default();
        let options = PollOptions {
            duplicate_batch_rate: rate,
            ..options()
        };
        let counts = deliver(&function, &trigger(), &options, records(1)).await;
        assert_eq!(
            (counts.invocations, counts.duplicate_invocations),
            (1, duplicates),
            "rate {rate}"
        );
        assert_eq!(function.calls().len() as u64, 1 + duplicates, "rate {rate}");
    }
}

#[tokio::test]
async fn without_a_maximum_age_records_expire_with_the_stream() {
    // A maximum age of -1 (none), or one past the stream's 24 h retention, ends there.
    for maximum_record_age in [None, Some(Duration::from_secs(7 * 24 * 3600))] {
        let function = TestFunction::default();
        let trigger = StreamTrigger {
            maximum_retry_attempts: -1,
            maximum_record_age,
            ..trigger()
        };
        let options = options();
        let mut batch = records(2);
        batch[0].arrival = Utc::now() - TimeDelta::hours(25);
        let counts = deliver(&function, &trigger, &options, batch).await;
        assert_eq!(function.calls(), [keys(&["b"])], "{maximum_record_age:?}");
        assert_eq!(counts.records_given_up, 1);
        let lines = on_failure_lines(&options);
        assert_eq!(lines[0]["requestContext"]["condition"], "RecordAgeExceeded");
        assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 0);
    }
}

/// A record that reaches the stream's retention (24 h) `margin` from now.
fn expiring_record(margin: Duration) -> Vec<StreamRecord> {
    let mut batch = records(1);
    let age = TimeDelta::hours(24) - TimeDelta::from_std(margin).expect("a short margin");
    batch[0].arrival = Utc::now() - age;
    batch
}

#[tokio::test]
async fn unlimited_retries_end_when_the_stream_expires_the_record() {
    let function = TestFunction::default();
    function.poison("a");
    let trigger = StreamTrigger {
        maximum_retry_attempts: -1,
        maximum_record_age: None,
        bisect_on_error: false,
        ..trigger()
    };
    let options = options();
    let counts = tokio::time::timeout(
        HANG_GUARD,
        deliver(
            &function,
            &trigger,
            &options,
            expiring_record(Duration::from_secs(2)),
        ),
    )
    .await
    .expect("a poison record is retried until it expires, not for ever");
    assert!(counts.retries >= 1, "{counts:?}");
    assert_eq!(counts.records_given_up, 1);
    let lines = on_failure_lines(&options);
    assert_eq!(lines[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert_eq!(lines[0]["responseContext"]["functionError"], "Unhandled");
}

#[tokio::test]
async fn an_unavailable_function_is_retried_until_the_stream_expires_the_record() {
    let function = TestFunction::default();
    function.unavailable(u32::MAX);
    let trigger = StreamTrigger {
        maximum_record_age: None,
        ..trigger()
    };
    let options = options();
    let counts = tokio::time::timeout(
        HANG_GUARD,
        deliver(
            &function,
            &trigger,
            &options,
            expiring_record(Duration::from_secs(2)),
        ),
    )
    .await
    .expect("an unavailable function is retried until the record expires, not for ever");
    assert!(function.refusals() >= 1, "the function was asked");
    assert_eq!((counts.invocations, counts.records_given_up), (0, 1));
    let lines = on_failure_lines(&options);
    assert_eq!(lines[0]["requestContext"]["condition"], "RecordAgeExceeded");
    assert!(lines[0].get("responseContext").is_none(), "never invoked");
}
