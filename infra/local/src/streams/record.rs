//! One stream record in the shape Lambda hands it to the function (and filters it in):
//! `{"eventID", "eventName", "eventVersion", "eventSource", "awsRegion", "dynamodb":
//! {...}, "eventSourceARN"}`, attribute values in DynamoDB JSON, built from the SDK's
//! `Record` with `serde_dynamo`.

use std::time::Duration;

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record};
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};

/// A record read from a shard, ready to be filtered and delivered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct StreamRecord {
    /// `dynamodb.SequenceNumber`: the record's position in its shard.
    pub sequence_number: String,
    /// `dynamodb.ApproximateCreationDateTime`, as the stream gave it.
    pub created: Option<DateTime<Utc>>,
    /// When the record entered the stream, as late as the evidence allows (see
    /// [`arrival`]); ages are counted from here.
    pub arrival: DateTime<Utc>,
    /// The record as the function receives it.
    pub event: Value,
}

/// A stream record that cannot be turned into a Lambda record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordError {
    /// DynamoDB left out something every record has.
    #[error("stream record has no {0}")]
    Missing(&'static str),
    /// An attribute of a type this SDK does not know.
    #[error("attribute {0} has a type the SDK does not know")]
    UnknownAttributeType(String),
    /// serde_dynamo could not write the attribute as JSON.
    #[error("attribute {name} cannot be written as JSON: {message}")]
    Encoding {
        /// The attribute.
        name: String,
        /// Why.
        message: String,
    },
}

impl StreamRecord {
    /// Builds the Lambda record; `read_at` is when the trigger read it from the shard.
    pub fn from_stream(
        record: &Record,
        stream_arn: &str,
        region: &str,
        read_at: DateTime<Utc>,
    ) -> Result<Self, RecordError> {
        let change = record.dynamodb().ok_or(RecordError::Missing("dynamodb"))?;
        let sequence_number = change
            .sequence_number()
            .ok_or(RecordError::Missing("dynamodb.SequenceNumber"))?
            .to_owned();
        let created = change
            .approximate_creation_date_time()
            .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()));

        let mut dynamodb = Map::new();
        if let Some(created) = created {
            dynamodb.insert(
                "ApproximateCreationDateTime".into(),
                json!(created.timestamp_millis() as f64 / 1000.0),
            );
        }
        for (field, image) in [
            ("Keys", change.keys()),
            ("NewImage", change.new_image()),
            ("OldImage", change.old_image()),
        ] {
            if let Some(image) = image {
                dynamodb.insert(field.into(), image_json(image)?);
            }
        }
        dynamodb.insert("SequenceNumber".into(), json!(sequence_number));
        dynamodb.insert("SizeBytes".into(), json!(change.size_bytes().unwrap_or(0)));
        if let Some(view) = change.stream_view_type() {
            dynamodb.insert("StreamViewType".into(), json!(view.as_str()));
        }

        let mut event = Map::new();
        event.insert(
            "eventID".into(),
            json!(record.event_id().ok_or(RecordError::Missing("eventID"))?),
        );
        event.insert(
            "eventName".into(),
            json!(
                record
                    .event_name()
                    .ok_or(RecordError::Missing("eventName"))?
                    .as_str()
            ),
        );
        event.insert(
            "eventVersion".into(),
            json!(record.event_version().unwrap_or("1.1")),
        );
        event.insert("eventSource".into(), json!("aws:dynamodb"));
        // DynamoDB Local says `ddblocal`; the function sees the stack's region, as in AWS.
        event.insert("awsRegion".into(), json!(region));
        event.insert("dynamodb".into(), Value::Object(dynamodb));
        event.insert("eventSourceARN".into(), json!(stream_arn));
        if let Some(identity) = record.user_identity() {
            // TTL deletions carry {"type": "Service", "principalId": "dynamodb.amazonaws.com"}.
            event.insert(
                "userIdentity".into(),
                json!({"type": identity.r#type(), "principalId": identity.principal_id()}),
            );
        }

        Ok(Self {
            arrival: arrival(created, read_at),
            sequence_number,
            created,
            event: Value::Object(event),
        })
    }

    /// How long ago the record entered the stream.
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        (now - self.arrival).to_std().unwrap_or_default()
    }
}

/// When a record entered the stream. DynamoDB Local rounds `ApproximateCreationDateTime`
/// down to the minute, which would make fresh records look up to a minute old; when the
/// time is minute-aligned, the end of that minute and the moment the trigger read the
/// record are both upper bounds, and the earlier of them is the closer one.
fn arrival(created: Option<DateTime<Utc>>, read_at: DateTime<Utc>) -> DateTime<Utc> {
    match created {
        None => read_at,
        Some(created) if created.timestamp_subsec_nanos() == 0 && created.timestamp() % 60 == 0 => {
            (created + TimeDelta::seconds(60)).min(read_at).max(created)
        }
        Some(created) => created,
    }
}

/// The event one invocation receives.
pub(crate) fn event(records: &[StreamRecord]) -> Value {
    json!({"Records": records.iter().map(|r| &r.event).collect::<Vec<_>>()})
}

fn image_json(
    image: &std::collections::HashMap<String, AttributeValue>,
) -> Result<Value, RecordError> {
    let mut object = Map::new();
    for (name, value) in image {
        // serde_dynamo's conversion panics on a type the SDK does not know; refuse first.
        if !known(value) {
            return Err(RecordError::UnknownAttributeType(name.clone()));
        }
        let value = serde_dynamo::AttributeValue::from(value.clone());
        let value = serde_json::to_value(&value).map_err(|err| RecordError::Encoding {
            name: name.clone(),
            message: err.to_string(),
        })?;
        object.insert(name.clone(), value);
    }
    Ok(Value::Object(object))
}

fn known(value: &AttributeValue) -> bool {
    match value {
        AttributeValue::M(map) => map.values().all(known),
        AttributeValue::L(list) => list.iter().all(known),
        other => !other.is_unknown(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use aws_sdk_dynamodbstreams::primitives::{Blob, DateTime as SmithyTime};
    use aws_sdk_dynamodbstreams::types::{
        Identity, OperationType, StreamRecord as SdkStreamRecord, StreamViewType,
    };

    use super::*;

    /// An SDK record the way DynamoDB Local returns an INSERT of (`pk`, `sk`).
    pub(crate) fn sdk_record(sequence: &str, pk: &str, sk: &str) -> Record {
        let key = |name: &str, value: &str| (name.to_owned(), AttributeValue::S(value.to_owned()));
        let keys: std::collections::HashMap<_, _> = [key("pk", pk), key("sk", sk)].into();
        let mut image = keys.clone();
        image.insert("n".into(), AttributeValue::N("7".into()));
        Record::builder()
            .event_id(format!("id-{sequence}"))
            .event_name(OperationType::Insert)
            .event_version("1.1")
            .event_source("aws:dynamodb")
            .aws_region("ddblocal")
            .dynamodb(
                SdkStreamRecord::builder()
                    .approximate_creation_date_time(SmithyTime::from_secs(1_700_000_040))
                    .set_keys(Some(keys))
                    .set_new_image(Some(image))
                    .sequence_number(sequence)
                    .size_bytes(30)
                    .stream_view_type(StreamViewType::NewImage)
                    .build(),
            )
            .build()
    }

    #[test]
    fn the_record_deserialises_as_a_lambda_dynamodb_event() {
        let mut sdk = sdk_record("000000000000000000101", "c#news", "d#000001");
        let mut change = sdk.dynamodb.take().unwrap();
        let mut old = change.keys.clone().unwrap();
        old.insert("blob".into(), AttributeValue::B(Blob::new(b"hi".to_vec())));
        old.insert(
            "nested".into(),
            AttributeValue::M(
                [(
                    "l".to_owned(),
                    AttributeValue::L(vec![AttributeValue::Bool(true), AttributeValue::Null(true)]),
                )]
                .into(),
            ),
        );
        old.insert(
            "set".into(),
            AttributeValue::Ns(vec!["1".into(), "2".into()]),
        );
        change.old_image = Some(old);
        sdk.dynamodb = Some(change);
        sdk.event_name = Some(OperationType::Modify);
        sdk.user_identity = Some(
            Identity::builder()
                .r#type("Service")
                .principal_id("dynamodb.amazonaws.com")
                .build(),
        );
        let arn = "arn:aws:dynamodb:ddblocal:000000000000:table/t/stream/2026-01-01T00:00:00.000";
        let record = StreamRecord::from_stream(&sdk, arn, "us-east-1", Utc::now()).unwrap();

        let event: aws_lambda_events::dynamodb::Event =
            serde_json::from_value(super::event(std::slice::from_ref(&record)))
                .expect("a Lambda DynamoDB event");
        let decoded = &event.records[0];
        assert_eq!(decoded.event_name, "MODIFY");
        assert_eq!(decoded.aws_region, "us-east-1");
        assert_eq!(decoded.event_source.as_deref(), Some("aws:dynamodb"));
        assert_eq!(decoded.event_version.as_deref(), Some("1.1"));
        assert_eq!(decoded.event_source_arn.as_deref(), Some(arn));
        assert_eq!(
            decoded.change.sequence_number.as_deref(),
            Some("000000000000000000101")
        );
        assert_eq!(decoded.change.size_bytes, 30);
        assert_eq!(
            decoded.change.approximate_creation_date_time.timestamp(),
            1_700_000_040
        );
        assert_eq!(decoded.change.keys.len(), 2);
        assert_eq!(decoded.change.new_image.len(), 3);
        assert_eq!(decoded.change.old_image.len(), 5);
        assert_eq!(
            decoded.user_identity.as_ref().unwrap().principal_id,
            "dynamodb.amazonaws.com"
        );
        assert_eq!(
            record.event["dynamodb"]["Keys"]["sk"],
            json!({"S": "d#000001"})
        );
        assert_eq!(record.event["dynamodb"]["NewImage"]["n"], json!({"N": "7"}));
        assert_eq!(
            record.event["dynamodb"]["OldImage"]["blob"],
            json!({"B": "aGk="})
        );
        assert_eq!(record.event["dynamodb"]["StreamViewType"], "NEW_IMAGE");
    }

    #[test]
    fn a_record_without_a_sequence_number_is_refused() {
        let mut sdk = sdk_record("1", "p", "s");
        sdk.dynamodb.as_mut().unwrap().sequence_number = None;
        let err = StreamRecord::from_stream(&sdk, "arn", "us-east-1", Utc::now()).unwrap_err();
        assert_eq!(err, RecordError::Missing("dynamodb.SequenceNumber"));
        let mut sdk = sdk_record("1", "p", "s");
        sdk.event_name = None;
        let err = StreamRecord::from_stream(&sdk, "arn", "us-east-1", Utc::now()).unwrap_err();
        assert_eq!(err, RecordError::Missing("eventName"));
    }

    #[test]
    fn minute_rounded_creation_times_are_not_taken_for_old_age() {
        let minute = DateTime::from_timestamp(1_700_000_040, 0).unwrap();
        let read = minute + TimeDelta::seconds(12);
        assert_eq!(
            arrival(Some(minute), read),
            read,
            "read promptly: the read time is closer"
        );
        let late = minute + TimeDelta::seconds(3600);
        assert_eq!(
            arrival(Some(minute), late),
            minute + TimeDelta::seconds(60),
            "backlog: end of the minute"
        );
        let precise = DateTime::from_timestamp(1_700_000_041, 500).unwrap();
        assert_eq!(arrival(Some(precise), late), precise);
        assert_eq!(arrival(None, read), read);
    }
}
