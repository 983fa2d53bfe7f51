//! The whole trigger against DynamoDB Local, which the test run starts outside the tests
//! (`infra/dynamodb-local/dynamodb-local start 8123`) and names in
//! `DELTACAST_TEST_DYNAMODB`. Each test has a table of its own.

use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::function::{TestFunction, eventually, on_failure_lines, options, trigger};
use crate::streams::{PollOptions, StreamError, TriggerStats, run_trigger, run_trigger_with_stats};
use crate::template::{StackSpec, StreamTrigger};

const DYNAMODB_VARIABLE: &str = "DELTACAST_TEST_DYNAMODB";
/// Hang guard of every wait; a passing test never comes near it.
const WAIT: Duration = Duration::from_secs(30);

fn endpoint() -> String {
    std::env::var(DYNAMODB_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{DYNAMODB_VARIABLE} is not set: start DynamoDB Local with \
             `infra/dynamodb-local/dynamodb-local start 8123` and run the tests with \
             {DYNAMODB_VARIABLE}=http://127.0.0.1:8123"
        )
    })
}

fn spec() -> StackSpec {
    StackSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml"))
        .expect("template.yaml")
}

/// The template's trigger of the fan-out (the one filtered to delta inserts).
fn fanout_trigger() -> StreamTrigger {
    spec()
        .stream_triggers
        .into_iter()
        .find(|t| t.function == "FanoutFunction")
        .expect("the fan-out's trigger")
}

/// A table of the test's own, made from the template (stream NEW_IMAGE).
struct Table {
    dynamodb: aws_sdk_dynamodb::Client,
    streams: aws_sdk_dynamodbstreams::Client,
    name: String,
    stream_arn: String,
}

impl Table {
    async fn create() -> Self {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "local",
                "local",
                None,
                None,
                "deltacast-streams-tests",
            ))
            .endpoint_url(endpoint())
            .load()
            .await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let name = format!("streams-{:016x}", rand::random::<u64>());
        spec()
            .table
            .create(&dynamodb, &name)
            .await
            .expect("table created");
        let stream_arn = dynamodb
            .describe_table()
            .table_name(&name)
            .send()
            .await
            .expect("describe table")
            .table
            .and_then(|t| t.latest_stream_arn)
            .expect("the table has a stream");
        Self {
            streams: aws_sdk_dynamodbstreams::Client::new(&config),
            dynamodb,
            name,
            stream_arn,
        }
    }

    async fn put(&self, sk: &str) {
        self.put_body(sk, &format!("body of {sk}")).await;
    }

    async fn put_body(&self, sk: &str, body: &str) {
        self.dynamodb
            .put_item()
            .table_name(&self.name)
            .item("pk", AttributeValue::S("c#news".into()))
            .item("sk", AttributeValue::S(sk.into()))
            .item("body", AttributeValue::S(body.into()))
            .send()
            .await
            .expect("put");
    }

    async fn delete(&self, sk: &str) {
        self.dynamodb
            .delete_item()
            .table_name(&self.name)
            .key("pk", AttributeValue::S("c#news".into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .expect("delete");
    }

    /// Starts the trigger in a task of its own.
    fn start(
        &self,
        trigger: StreamTrigger,
        function: &TestFunction,
        options: &PollOptions,
    ) -> Running {
        let shutdown = CancellationToken::new();
        let stats = TriggerStats::new();
        let task = tokio::spawn(run_trigger_with_stats(
            self.streams.clone(),
            self.stream_arn.clone(),
            trigger,
            function.clone(),
            options.clone(),
            shutdown.clone(),
            stats.clone(),
        ));
        Running {
            shutdown,
            stats,
            task,
        }
    }
}

struct Running {
    shutdown: CancellationToken,
    stats: TriggerStats,
    task: JoinHandle<Result<(), StreamError>>,
}

impl Running {
    /// Waits until the trigger reads the table's shard (so LATEST is now).
    async fn reading(&self) {
        assert!(
            eventually(WAIT, || self.stats.counts().shards_started >= 1).await,
            "the trigger never started reading: {:?}",
            self.stats.counts()
        );
    }

    /// Stops the trigger; it must end (within the hang guard) and without error.
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("the trigger stops")
            .expect("the trigger task does not panic")
            .expect("the trigger ends without error");
    }
}

fn sks(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The sequence number the function saw for `sk`.
fn sequence_of(function: &TestFunction, sk: &str) -> String {
    function
        .events()
        .iter()
        .flat_map(|event| event["Records"].as_array().cloned().unwrap_or_default())
        .find(|record| record["dynamodb"]["Keys"]["sk"]["S"] == sk)
        .and_then(|record| {
            record["dynamodb"]["SequenceNumber"]
                .as_str()
                .map(str::to_owned)
        })
        .expect("the function saw the record")
}

#[tokio::test]
async fn only_delta_inserts_reach_the_function_with_the_templates_filter() {
    let table = Table::create().await;
    table.put("d#000000").await;
    let trigger = fanout_trigger();
    assert_eq!(trigger.starting_position, "LATEST");
    let function = TestFunction::default();
    let running = table.start(trigger, &function, &options());
    running.reading().await;

    table.put("d#000001").await; // INSERT of a delta: delivered
    table.put("s#connection").await; // INSERT of something else: filtered out
    // MODIFY: filtered out. (A put that changes nothing writes no stream record at all.)
    table.put_body("d#000001", "edited").await;
    table.delete("d#000001").await; // REMOVE: filtered out
    table.put("d#000002").await; // INSERT: delivered
    let stats = running.stats.clone();
    let all_seen = eventually(WAIT, || {
        function.delivered().len() >= 2 && stats.counts().records_filtered_out >= 3
    })
    .await;
    running.stop().await;

    assert!(all_seen, "{:?} {:?}", function.calls(), stats.counts());
    assert_eq!(
        function.delivered(),
        sks(&["d#000001", "d#000002"]),
        "LATEST skips d#000000"
    );
    assert_eq!(stats.counts().records_filtered_out, 3);
    let record = &function.events()[0]["Records"][0];
    assert_eq!(record["eventName"], "INSERT");
    assert_eq!(record["eventSource"], "aws:dynamodb");
    assert_eq!(record["eventVersion"], "1.1");
    assert_eq!(record["awsRegion"], "us-east-1");
    assert_eq!(
        record["eventSourceARN"],
        Value::from(table.stream_arn.clone())
    );
    assert_eq!(
        record["dynamodb"]["NewImage"]["body"]["S"],
        "body of d#000001"
    );
    assert_eq!(record["dynamodb"]["StreamViewType"], "NEW_IMAGE");
    assert!(record["dynamodb"]["ApproximateCreationDateTime"].is_f64());
}

#[tokio::test]
async fn records_arrive_in_shard_order_one_batch_at_a_time() {
    let table = Table::create().await;
    let written: Vec<String> = (0..10).map(|i| format!("d#{i:06}")).collect();
    for sk in &written {
        table.put(sk).await;
    }
    let function = TestFunction::default();
    let trigger = StreamTrigger {
        batch_size: 3,
        ..trigger()
    };
    let running = table.start(trigger, &function, &options());
    let all = eventually(WAIT, || function.delivered().len() >= 10).await;
    running.stop().await;

    assert!(all, "{:?}", function.calls());
    assert_eq!(function.delivered(), written);
    assert!(
        function.calls().iter().all(|call| call.len() <= 3),
        "{:?}",
        function.calls()
    );
}

#[tokio::test]
async fn batch_item_failures_retry_from_the_lowest_failed_record() {
    let table = Table::create().await;
    for i in 0..5 {
        table.put(&format!("d#{i}")).await;
    }
    let function = TestFunction::default();
    function.report_failure("d#3", 1).report_failure("d#2", 1);
    let trigger = StreamTrigger {
        batch_size: 5,
        ..trigger()
    };
    let running = table.start(trigger, &function, &options());
    let stats = running.stats.clone();
    let done = eventually(WAIT, || stats.counts().records_succeeded >= 5).await;
    running.stop().await;

    assert!(done, "{:?}", function.calls());
    assert_eq!(
        function.calls(),
        [
            sks(&["d#0", "d#1", "d#2", "d#3", "d#4"]),
            sks(&["d#2", "d#3", "d#4"])
        ],
        "d#0 and d#1 are not sent again"
    );
    assert_eq!(stats.counts().retries, 1);
}

#[tokio::test]
async fn bisecting_isolates_a_poison_record() {
    let table = Table::create().await;
    for i in 0..4 {
        table.put(&format!("d#{i}")).await;
    }
    let function = TestFunction::default();
    function.poison("d#2");
    let trigger = StreamTrigger {
        batch_size: 4,
        maximum_retry_attempts: 1,
        ..trigger()
    };
    let options = options();
    let running = table.start(trigger, &function, &options);
    let stats = running.stats.clone();
    let done = eventually(WAIT, || {
        stats.counts().records_succeeded == 3 && stats.counts().records_given_up == 1
    })
    .await;
    running.stop().await;

    assert!(done, "{:?} {:?}", function.calls(), stats.counts());
    assert_eq!(
        function.calls(),
        [
            sks(&["d#0", "d#1", "d#2", "d#3"]),
            sks(&["d#0", "d#1"]),
            sks(&["d#2", "d#3"]),
            sks(&["d#2"]),
            sks(&["d#2"]),
            sks(&["d#3"]),
        ]
    );
    let lines = on_failure_lines(&options);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let info = &lines[0]["DDBStreamBatchInfo"];
    let poison = sequence_of(&function, "d#2");
    assert_eq!(info["startSequenceNumber"].as_str(), Some(poison.as_str()));
    assert_eq!(info["endSequenceNumber"].as_str(), Some(poison.as_str()));
    assert_eq!(info["batchSize"], 1);
    assert_eq!(lines[0]["requestContext"]["approximateInvokeCount"], 4);
}

#[tokio::test]
async fn exhausted_retries_are_recorded_and_the_trigger_moves_on() {
    let table = Table::create().await;
    for i in 0..4 {
        table.put(&format!("d#{i}")).await;
    }
    let function = TestFunction::default();
    function.poison("d#0");
    let trigger = StreamTrigger {
        batch_size: 2,
        maximum_retry_attempts: 2,
        bisect_on_error: false,
        ..trigger()
    };
    let options = options();
    let running = table.start(trigger, &function, &options);
    let stats = running.stats.clone();
    let done = eventually(WAIT, || stats.counts().records_succeeded == 2).await;
    let shard_id = table
        .streams
        .describe_stream()
        .stream_arn(&table.stream_arn)
        .send()
        .await
        .expect("describe stream")
        .stream_description
        .and_then(|d| d.shards.and_then(|shards| shards.into_iter().next()))
        .and_then(|shard| shard.shard_id)
        .expect("a shard");
    running.stop().await;

    assert!(done, "{:?} {:?}", function.calls(), stats.counts());
    assert_eq!(
        function.calls(),
        [
            sks(&["d#0", "d#1"]),
            sks(&["d#0", "d#1"]),
            sks(&["d#0", "d#1"]),
            sks(&["d#2", "d#3"])
        ]
    );
    let lines = on_failure_lines(&options);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(
        line["requestContext"]["condition"],
        "RetryAttemptsExhausted"
    );
    assert_eq!(line["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(line["responseContext"]["functionError"], "Unhandled");
    let info = &line["DDBStreamBatchInfo"];
    assert_eq!(info["shardId"].as_str(), Some(shard_id.as_str()));
    assert_eq!(info["streamArn"].as_str(), Some(table.stream_arn.as_str()));
    assert_eq!(
        info["startSequenceNumber"].as_str(),
        Some(sequence_of(&function, "d#0").as_str())
    );
    assert_eq!(
        info["endSequenceNumber"].as_str(),
        Some(sequence_of(&function, "d#1").as_str())
    );
    assert_eq!(info["batchSize"], 2);
    assert!(
        info["approximateArrivalOfFirstRecord"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test]
async fn duplicate_rate_one_invokes_each_batch_twice() {
    let table = Table::create().await;
    table.put("d#0").await;
    let function = TestFunction::default();
    let options = PollOptions {
        duplicate_batch_rate: 1.0,
        ..options()
    };
    let running = table.start(trigger(), &function, &options);
    let done = eventually(WAIT, || function.calls().len() >= 2).await;
    let stats = running.stats.clone();
    running.stop().await;

    assert!(done);
    assert_eq!(function.calls(), [sks(&["d#0"]), sks(&["d#0"])]);
    assert_eq!(stats.counts().duplicate_invocations, 1);
}

#[tokio::test]
async fn shutdown_stops_the_trigger() {
    // GIVEN a running trigger that delivers what is written
    let table = Table::create().await;
    let function = TestFunction::default();
    let running = table.start(trigger(), &function, &options());
    running.reading().await;
    table.put("d#0").await;
    assert!(eventually(WAIT, || function.delivered().len() == 1).await);

    // WHEN it is stopped (and its task has ended)
    running.stop().await;

    // THEN nothing it left behind reads on: a later write is not delivered
    table.put("d#1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        function.calls(),
        [sks(&["d#0"])],
        "nothing is delivered after shutdown"
    );
}

#[tokio::test]
async fn a_stream_that_does_not_exist_is_an_error() {
    let table = Table::create().await;
    let missing = table.stream_arn.replace(&table.name, "no-such-table");
    let result = tokio::time::timeout(
        WAIT,
        run_trigger(
            table.streams.clone(),
            missing.clone(),
            trigger(),
            TestFunction::default(),
            options(),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the trigger gives up at once");
    assert!(
        matches!(result, Err(StreamError::StreamNotFound(ref arn)) if *arn == missing),
        "{result:?}"
    );
}
