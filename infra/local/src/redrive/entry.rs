//! One line of the on-failure file, read back: which function gave up on which records.
//! A line is Lambda's on-failure destination message (`streams::on_failure` writes it);
//! only the fields a replay needs are read, so the body of a message from the SQS queue
//! in AWS, saved as a line, reads the same.

use serde::Deserialize;

use crate::streams::RecordRange;

/// The region a function ARN without one is taken to be in (the local stack's).
const DEFAULT_REGION: &str = "us-east-1";

/// A line that names records to replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `requestContext.functionArn`, what the Invoke API is called with.
    pub function_arn: String,
    /// The function's logical id (the ARN's last part).
    pub function: String,
    /// The ARN's region: what the function sees in `awsRegion`.
    pub region: String,
    /// `DDBStreamBatchInfo`: where the records are.
    pub range: RecordRange,
}

/// Why a line names nothing to replay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not JSON, or JSON without the fields of an on-failure record.
    #[error("not an on-failure record of a DynamoDB stream: {0}")]
    Shape(String),
    /// `requestContext.functionArn` names no function.
    #[error("requestContext.functionArn {0:?} is not a Lambda function ARN")]
    FunctionArn(String),
}

#[derive(Deserialize)]
struct Message {
    #[serde(rename = "requestContext")]
    request_context: RequestContext,
    #[serde(rename = "DDBStreamBatchInfo")]
    batch: BatchInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestContext {
    function_arn: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchInfo {
    shard_id: String,
    start_sequence_number: String,
    end_sequence_number: String,
    stream_arn: String,
}

impl Entry {
    /// Reads one line of the on-failure file.
    pub fn parse(line: &str) -> Result<Self, EntryError> {
        let message: Message =
            serde_json::from_str(line).map_err(|err| EntryError::Shape(err.to_string()))?;
        let arn = message.request_context.function_arn;
        let (function, region) =
            function_of(&arn).ok_or_else(|| EntryError::FunctionArn(arn.clone()))?;
        Ok(Self {
            function,
            region,
            range: RecordRange {
                stream_arn: message.batch.stream_arn,
                shard_id: message.batch.shard_id,
                first: message.batch.start_sequence_number,
                last: message.batch.end_sequence_number,
            },
            function_arn: arn,
        })
    }
}

/// The function and region of `arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`.
fn function_of(arn: &str) -> Option<(String, String)> {
    let (head, rest) = arn.split_once(":function:")?;
    let name = rest.split(':').next().filter(|name| !name.is_empty())?;
    let region = head
        .split(':')
        .nth(3)
        .filter(|region| !region.is_empty())
        .unwrap_or(DEFAULT_REGION);
    Some((name.to_owned(), region.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A line as the stack's trigger writes it.
    fn line(function: &str, first: &str, last: &str) -> String {
        json!({
            "requestContext": {
                "requestId": "c7f1d4a2-0000-4000-8000-000000000000",
                "functionArn": format!("arn:aws:lambda:us-east-1:000000000000:function:{function}"),
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": 11,
            },
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST"},
            "version": "1.0",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "DDBStreamBatchInfo": {
                "shardId": "shardId-00000001",
                "startSequenceNumber": first,
                "endSequenceNumber": last,
                "approximateArrivalOfFirstRecord": "2026-01-01T00:00:00Z",
                "approximateArrivalOfLastRecord": "2026-01-01T00:00:00Z",
                "batchSize": 2,
                "streamArn": "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x",
            }
        })
        .to_string()
    }

    #[test]
    fn a_line_of_the_trigger_names_the_function_and_the_records() {
        let entry = Entry::parse(&line("FanoutFunction", "101", "102")).expect("an entry");
        assert_eq!(entry.function, "FanoutFunction");
        assert_eq!(entry.region, "us-east-1");
        assert_eq!(
            entry.function_arn,
            "arn:aws:lambda:us-east-1:000000000000:function:FanoutFunction"
        );
        assert_eq!(
            entry.range,
            RecordRange {
                stream_arn: "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/x".into(),
                shard_id: "shardId-00000001".into(),
                first: "101".into(),
                last: "102".into(),
            }
        );
    }

    #[test]
    fn lines_that_are_not_on_failure_records_are_refused_with_the_reason() {
        assert!(matches!(
            Entry::parse("not json"),
            Err(EntryError::Shape(_))
        ));
        assert!(matches!(
            Entry::parse(r#"{"requestContext": {"functionArn": "x"}}"#),
            Err(EntryError::Shape(message)) if message.contains("DDBStreamBatchInfo")
        ));
        let mut message: serde_json::Value =
            serde_json::from_str(&line("F", "1", "2")).expect("JSON");
        message["DDBStreamBatchInfo"]["startSequenceNumber"] = serde_json::Value::Null;
        assert!(matches!(
            Entry::parse(&message.to_string()),
            Err(EntryError::Shape(_))
        ));
        message = serde_json::from_str(&line("F", "1", "2")).expect("JSON");
        message["requestContext"]["functionArn"] = json!("arn:aws:sqs:us-east-1:0:queue");
        assert_eq!(
            Entry::parse(&message.to_string()),
            Err(EntryError::FunctionArn(
                "arn:aws:sqs:us-east-1:0:queue".into()
            ))
        );
    }

    #[test]
    fn the_region_and_name_come_from_the_arn_whatever_its_qualifier() {
        assert_eq!(
            function_of("arn:aws:lambda:eu-west-1:123456789012:function:Fanout:$LATEST"),
            Some(("Fanout".into(), "eu-west-1".into()))
        );
        assert_eq!(
            function_of("123456789012:function:Fanout"),
            Some(("Fanout".into(), "us-east-1".into()))
        );
        assert_eq!(function_of("arn:aws:lambda:us-east-1:1:function:"), None);
    }
}
