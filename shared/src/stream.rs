//! Reading deltas out of DynamoDB Streams records, the fan-out's input. Anything that is
//! not a new delta item is told apart from a delta item that cannot be read, so the
//! fan-out can skip the first silently and log the second, and never stop the stream on
//! either.

use aws_lambda_events::dynamodb::EventRecord;

use crate::protocol::Delta;
use crate::store::items::{DeltaItem, INBOX_PREFIX, InboxItem};
use crate::store::state_items::{
    MEMBER_PREFIX, MemberItem, OP_PREFIX, OpItem, PRESENCE_SK, PresenceItem, STATE_SK, StateItem,
};
use crate::store::{MemberChange, MemberRecord, OpRecord};

/// What a stream record holds.
#[derive(Debug, PartialEq)]
pub enum StreamDelta {
    /// Not an INSERT of a delta item (the trigger's filter should have dropped it).
    NotADelta,
    /// A new delta.
    Delta(Delta),
    /// A delta item that cannot be read; why.
    Malformed(String),
}

/// Reads one record.
pub fn delta_of(record: EventRecord) -> StreamDelta {
    if record.event_name != "INSERT" || !DeltaItem::is_delta_key(&record.change.keys) {
        return StreamDelta::NotADelta;
    }
    match DeltaItem::from_image(record.change.new_image) {
        Err(err) => StreamDelta::Malformed(err.to_string()),
        Ok(item) => match Delta::try_from(item) {
            Ok(delta) => StreamDelta::Delta(delta),
            Err(err) => StreamDelta::Malformed(err.to_string()),
        },
    }
}

/// What a stream record of the inbox holds.
#[derive(Debug, PartialEq)]
pub enum StreamPublish {
    /// Not a new or taken-over inbox item (the trigger's filter should have dropped it).
    NotAPublish,
    /// A publish for the sequencer.
    Publish(Box<InboxItem>),
    /// An inbox item that cannot be read; why.
    Malformed(String),
}

/// Reads one record of the sequencer's input: an INSERT (a new publish) or a MODIFY (a
/// publish taken over after its lease) of an inbox item.
pub fn publish_of(record: EventRecord) -> StreamPublish {
    let inbox = matches!(
        record.change.keys.get("pk"),
        Some(serde_dynamo::AttributeValue::S(pk)) if pk.starts_with(INBOX_PREFIX)
    );
    if !inbox || !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return StreamPublish::NotAPublish;
    }
    match serde_dynamo::from_item::<_, InboxItem>(record.change.new_image) {
        Ok(item) => StreamPublish::Publish(Box::new(item)),
        Err(err) => StreamPublish::Malformed(err.to_string()),
    }
}

/// What a stream record of a state channel's ops holds.
#[derive(Debug)]
pub enum StreamOps {
    /// Not a written op item (the trigger's filter should have dropped it).
    NotOps,
    /// An update for the fold.
    Ops(Box<OpRecord>),
    /// An op item that cannot be read; why.
    Malformed(String),
}

/// Reads one record of the fold's input: an op item written (an INSERT, or a MODIFY when
/// an expired claim was taken again).
pub fn ops_of(record: &EventRecord) -> StreamOps {
    let ops = matches!(
        record.change.keys.get("pk"),
        Some(serde_dynamo::AttributeValue::S(pk)) if pk.starts_with(OP_PREFIX)
    );
    if !ops || !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return StreamOps::NotOps;
    }
    let item = match serde_dynamo::from_item::<_, OpItem>(record.change.new_image.clone()) {
        Ok(item) => item,
        Err(err) => return StreamOps::Malformed(err.to_string()),
    };
    let Some((_, shard)) = item.channel_and_shard() else {
        return StreamOps::Malformed(format!(
            "op item key {} names no channel and shard",
            item.pk
        ));
    };
    let Some(sequence_number) = record.change.sequence_number.clone() else {
        return StreamOps::Malformed("record without a sequence number".into());
    };
    StreamOps::Ops(Box::new(OpRecord {
        shard,
        sequence_number,
        item,
    }))
}

/// What a stream record of a channel's presence members holds.
#[derive(Debug)]
pub enum StreamMembers {
    /// Not a member item's record (the trigger's filter should have dropped it).
    NotMembers,
    /// A member change for the fold, with its channel.
    Member(String, Box<MemberRecord>),
    /// A member item that cannot be read; why.
    Malformed(String),
}

/// Reads one record of the presence fold's input: a member item inserted (entered),
/// modified (updated) or removed (left).
pub fn members_of(record: &EventRecord) -> StreamMembers {
    let keys = &record.change.keys;
    let (Some(serde_dynamo::AttributeValue::S(pk)), Some(serde_dynamo::AttributeValue::S(sk))) =
        (keys.get("pk"), keys.get("sk"))
    else {
        return StreamMembers::NotMembers;
    };
    let Some(channel) = pk.strip_prefix(MEMBER_PREFIX) else {
        return StreamMembers::NotMembers;
    };
    let Some(sequence_number) = record.change.sequence_number.clone() else {
        return StreamMembers::Malformed("record without a sequence number".into());
    };
    let seen = |item: MemberItem| {
        let mut value = serde_json::json!({"sub": item.sub, "at": item.at});
        if let Some(data) = item.data.and_then(|d| serde_json::from_str(&d).ok()) {
            value["data"] = data;
        }
        value
    };
    let change = match record.event_name.as_str() {
        "REMOVE" => MemberChange::Left,
        name @ ("INSERT" | "MODIFY") => {
            match serde_dynamo::from_item::<_, MemberItem>(record.change.new_image.clone()) {
                Ok(item) if name == "INSERT" => MemberChange::Entered(seen(item)),
                Ok(item) => MemberChange::Updated(seen(item)),
                Err(err) => return StreamMembers::Malformed(err.to_string()),
            }
        }
        _ => return StreamMembers::NotMembers,
    };
    StreamMembers::Member(
        channel.to_owned(),
        Box::new(MemberRecord {
            sequence_number,
            member: sk.clone(),
            change,
        }),
    )
}

/// A state channel's change or a channel's presence change, as the fan-out sends it.
#[derive(Clone, Debug, PartialEq)]
pub struct StatePatch {
    /// The channel.
    pub channel: String,
    /// Whether it is the channel's presence (else its state document).
    pub presence: bool,
    /// The version it leads to (from `version - 1`).
    pub version: u64,
    /// The RFC 7396 merge patch, as JSON text; `None` for a presence `resync`.
    pub patch: Option<String>,
    /// A state document's whole value after the change, as JSON text (what a subscriber
    /// gets instead of several patches at once).
    pub value: Option<String>,
}

/// Reads a document item's record (a state channel's document, or a presence document):
/// `Some` when the write carries a patch (or a presence `resync`), `None` for anything
/// else; an unreadable document item is an error.
pub fn patch_of(record: &EventRecord) -> Result<Option<StatePatch>, String> {
    let sk = match record.change.keys.get("sk") {
        Some(serde_dynamo::AttributeValue::S(sk)) if sk == STATE_SK || sk == PRESENCE_SK => sk,
        _ => return Ok(None),
    };
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return Ok(None);
    }
    let image = record.change.new_image.clone();
    let (pk, version, patch, presence, value) = if sk == STATE_SK {
        let item: StateItem = serde_dynamo::from_item(image).map_err(|e| e.to_string())?;
        let Some(patch) = item.patch else {
            return Ok(None);
        };
        (item.pk, item.v, Some(patch), false, Some(item.val))
    } else {
        let item: PresenceItem = serde_dynamo::from_item(image).map_err(|e| e.to_string())?;
        if item.patch.is_none() && item.resync != Some(true) {
            return Ok(None);
        }
        (item.pk, item.v, item.patch, true, None)
    };
    let channel = pk
        .strip_prefix("h#")
        .ok_or_else(|| format!("document key {pk} names no channel"))?;
    Ok(Some(StatePatch {
        channel: channel.to_owned(),
        presence,
        version,
        patch,
        value,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn record(event_name: &str, sk: Value, image: Value) -> EventRecord {
        serde_json::from_value(json!({
            "eventID": "1", "eventName": event_name, "eventVersion": "1.1",
            "eventSource": "aws:dynamodb", "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1794384942,
                "Keys": {"pk": {"S": "h#c"}, "sk": sk},
                "NewImage": image,
                "SequenceNumber": "100", "SizeBytes": 10, "StreamViewType": "NEW_IMAGE"
            }
        }))
        .expect("a stream record")
    }

    fn image(seq: Value, data: Value) -> Value {
        json!({"pk": {"S": "h#chat"}, "sk": {"S": "d#e#000000000001"}, "seq": seq, "ep": {"S": "e"},
               "id": {"S": "m"}, "from": {"S": "alice"}, "ts": {"N": "5"}, "data": data, "ttl": {"N": "9"}})
    }

    #[test]
    fn reads_new_deltas_and_tells_the_rest_apart() {
        let sk = json!({"S": "d#e#000000000001"});
        let good = image(json!({"N": "1"}), json!({"S": "{\"a\":1}"}));
        let StreamDelta::Delta(delta) = delta_of(record("INSERT", sk.clone(), good.clone())) else {
            panic!("a delta")
        };
        assert_eq!(
            (delta.channel.as_str(), delta.seq, delta.data.get()),
            ("chat", 1, "{\"a\":1}")
        );
        assert_eq!(
            delta_of(record("MODIFY", sk.clone(), good.clone())),
            StreamDelta::NotADelta
        );
        assert_eq!(
            delta_of(record("INSERT", json!({"S": "s#conn"}), good)),
            StreamDelta::NotADelta
        );
        let not_json = image(json!({"N": "1"}), json!({"S": "{oops"}));
        assert!(matches!(
            delta_of(record("INSERT", sk.clone(), not_json)),
            StreamDelta::Malformed(_)
        ));
        let text_seq = image(json!({"S": "one"}), json!({"S": "1"}));
        assert!(matches!(
            delta_of(record("INSERT", sk, text_seq)),
            StreamDelta::Malformed(_)
        ));
    }

    /// The checked-in fuzz corpus (`tests/corpus/stream_record/`), replayed on every run.
    #[test]
    fn reads_new_and_taken_over_publishes_of_the_inbox_only() {
        let inbox = |event: &str, pk: &str, image: Value| {
            let mut record = record(event, json!({"S": "m#5:alice#m1"}), image);
            record
                .change
                .keys
                .insert("pk".into(), serde_dynamo::AttributeValue::S(pk.into()));
            record
        };
        let good = json!({"pk": {"S": "q#chat"}, "sk": {"S": "m#5:alice#m1"}, "id": {"S": "m1"},
            "from": {"S": "alice"}, "data": {"S": "[1]"}, "conn": {"S": "c1"}, "after": {"N": "3"},
            "ep": {"S": "e"}, "lease": {"N": "10"}, "ttl": {"N": "20"}});
        for event in ["INSERT", "MODIFY"] {
            let StreamPublish::Publish(item) = publish_of(inbox(event, "q#chat", good.clone()))
            else {
                panic!("{event}: a publish")
            };
            assert_eq!(
                (item.channel(), item.id.as_str(), item.after, item.exp),
                (Some("chat"), "m1", 3, None)
            );
        }
        assert_eq!(
            publish_of(inbox("REMOVE", "q#chat", good.clone())),
            StreamPublish::NotAPublish
        );
        assert_eq!(
            publish_of(inbox("INSERT", "h#chat", good)),
            StreamPublish::NotAPublish
        );
        let StreamPublish::Malformed(why) =
            publish_of(inbox("INSERT", "q#chat", json!({"pk": {"S": "q#chat"}})))
        else {
            panic!("malformed")
        };
        assert!(why.contains("missing field"), "{why}");
    }

    #[test]
    fn the_fuzz_corpus_decodes_without_panicking() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/corpus/stream_record");
        let mut deltas = 0;
        for entry in std::fs::read_dir(dir).expect("the corpus exists") {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            if let Ok(record) = serde_json::from_slice::<EventRecord>(&bytes)
                && let StreamDelta::Delta(delta) = delta_of(record)
            {
                // The JSON grammar (a Value would refuse numbers beyond f64, which are valid).
                serde_json::from_str::<serde::de::IgnoredAny>(&delta.to_frame())
                    .expect("frames are JSON");
                deltas += 1;
            }
        }
        assert!(deltas >= 3, "the corpus holds the fixture's deltas");
    }

    fn attribute() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            "\\PC{0,12}".prop_map(|s| json!({"S": s})),
            any::<i64>().prop_map(|n| json!({"N": n.to_string()})),
            "[0-9.e+-]{0,8}".prop_map(|n| json!({"N": n})),
            any::<bool>().prop_map(|b| json!({"BOOL": b})),
            Just(json!({"NULL": true})),
            prop::collection::vec(any::<u8>(), 0..6).prop_map(|bytes| {
                use base64::Engine;
                json!({"B": base64::engine::general_purpose::STANDARD.encode(bytes)})
            }),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|l| json!({"L": l})),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..3)
                    .prop_map(|m| json!({"M": m})),
            ]
        })
    }

    proptest! {
        /// Whatever a delta item's attributes hold, decoding never panics, and a decoded
        /// delta's frame is valid JSON.
        #[test]
        fn arbitrary_images_never_panic_the_decoder(
            fields in prop::collection::btree_map(
                prop::sample::select(vec!["pk", "sk", "seq", "ep", "id", "from", "ts", "data", "ttl", "x"]),
                attribute(),
                0..10,
            ),
            insert in any::<bool>(),
        ) {
            let image = Value::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
            let name = if insert { "INSERT" } else { "REMOVE" };
            if let StreamDelta::Delta(delta) = delta_of(record(name, json!({"S": "d#x#1"}), image)) {
                let frame: Value = serde_json::from_str(&delta.to_frame()).expect("frames are JSON");
                prop_assert_eq!(frame["seq"].as_u64(), Some(delta.seq));
            }
        }
    }
}
