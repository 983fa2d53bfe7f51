//! The fan-out handler with coalescing and v1 subscribers side by side (DynamoDB Local
//! subscriptions, a recording push): what each gets, the 32 KB limit on real frames, and
//! the records a failed `deltas` frame reports.

use aws_lambda_events::streams::DynamoDbEventResponse;
use deltacast::push::PushError;
use deltacast_tests::events;
use serde_json::{Value, json};

use crate::frames::MAX_FRAME_BYTES;
use crate::testing::{FailingWhen, fanout_with_delivery, with_push};

const EPOCH: &str = "19a5b2c3d4e9f2c";

/// A stream record of the fixture's shape: delta `seq` of `chat:lobby` (epoch [`EPOCH`])
/// with a string of `data_bytes` characters as its data, and a sequence number of its own.
fn delta_record(seq: u64, data_bytes: usize) -> Value {
    record_in(EPOCH, seq, data_bytes)
}

/// [`delta_record`] in `epoch`.
fn record_in(epoch: &str, seq: u64, data_bytes: usize) -> Value {
    let mut record = events::stream_records().remove(0);
    let sk = json!({"S": format!("d#{epoch}#{seq:012}")});
    let image = &mut record["dynamodb"]["NewImage"];
    image["sk"] = sk.clone();
    image["ep"] = json!({"S": epoch});
    image["seq"] = json!({"N": seq.to_string()});
    image["id"] = json!({"S": format!("m{seq}")});
    image["data"] = json!({"S": json!("x".repeat(data_bytes)).to_string()});
    record["dynamodb"]["Keys"]["sk"] = sk;
    record["dynamodb"]["SequenceNumber"] = json!(sequence_number(seq));
    record
}

fn sequence_number(seq: u64) -> String {
    format!("44215845000000000174504{seq:05}")
}

/// Records of `chat:lobby` deltas `seqs`, each with `data_bytes` of data.
fn batch(seqs: impl IntoIterator<Item = u64>, data_bytes: usize) -> Vec<Value> {
    seqs.into_iter()
        .map(|seq| delta_record(seq, data_bytes))
        .collect()
}

/// Each frame's seqs: one for a `delta` frame, its elements' for a `deltas` frame.
fn seqs_by_frame(frames: &[Value]) -> Vec<Vec<u64>> {
    frames
        .iter()
        .map(|frame| match frame["type"].as_str() {
            Some("delta") => vec![frame["seq"].as_u64().unwrap()],
            Some("deltas") => frame["deltas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["seq"].as_u64().unwrap())
                .collect(),
            other => panic!("not a delta frame: {other:?}"),
        })
        .collect()
}

fn failed_ids(response: &DynamoDbEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn a_coalescing_subscriber_gets_one_deltas_frame_and_a_v1_subscriber_one_frame_each() {
    // GIVEN a coalescing and a v1 subscriber of chat:lobby, and a batch of 20 deltas
    // arriving out of seq order
    let fanout =
        fanout_with_delivery(&[("packed", "chat:lobby", true), ("v1", "chat:lobby", false)]).await;
    let mut records = batch(1..=20, 200);
    records.swap(3, 11);
    // WHEN the fan-out delivers them
    let response = fanout.handle(events::stream_event(records)).await;
    assert!(response.batch_item_failures.is_empty());
    // THEN the v1 subscriber gets exactly today's frames: one `delta` frame each, in order
    let v1 = fanout.push.texts("v1");
    assert_eq!(v1.len(), 20);
    let v1_frames = fanout.push.frames("v1");
    assert!(v1_frames.iter().all(|f| f["type"] == "delta"));
    assert_eq!(
        seqs_by_frame(&v1_frames).concat(),
        (1..=20).collect::<Vec<_>>()
    );
    // AND the coalescing one gets them all in one `deltas` frame, in seq order, each
    // element the v1 frame's object without `type`
    let co = fanout.push.frames("packed");
    assert_eq!(co.len(), 1, "{co:?}");
    assert_eq!(co[0]["type"], "deltas");
    assert_eq!(co[0]["channel"], "chat:lobby");
    let elements = co[0]["deltas"].as_array().unwrap();
    for (element, v1_frame) in elements.iter().zip(&v1_frames) {
        let mut without_type = v1_frame.clone();
        without_type.as_object_mut().unwrap().remove("type");
        assert_eq!(element, &without_type);
    }
    assert_eq!(seqs_by_frame(&co), [(1..=20).collect::<Vec<_>>()]);
}

#[tokio::test]
async fn a_coalescing_connection_gets_each_channel_in_its_own_frames_and_a_lone_delta_as_delta() {
    // GIVEN a connection coalescing chat:lobby and not news, and the fixture's batch
    // (chat:lobby 1 and 2, news 7)
    let fanout = fanout_with_delivery(&[("c1", "chat:lobby", true), ("c1", "news", false)]).await;
    let response = fanout.handle(events::stream_batch()).await;
    assert!(response.batch_item_failures.is_empty());
    let frames = fanout.push.frames("c1");
    assert_eq!(
        frames.iter().map(|f| f["type"].clone()).collect::<Vec<_>>(),
        ["deltas", "delta"]
    );
    assert_eq!(seqs_by_frame(&frames), [vec![1, 2], vec![7]]);
    // AND a batch holding a single delta is sent as the same `delta` frame v1 gets
    let alone =
        fanout_with_delivery(&[("packed", "chat:lobby", true), ("v1", "chat:lobby", false)]).await;
    alone.handle(events::stream_event(batch([5], 10))).await;
    assert_eq!(alone.push.texts("packed"), alone.push.texts("v1"));
}

#[tokio::test]
async fn coalesced_frames_hold_at_most_32768_bytes() {
    // GIVEN 10 deltas of about 5 KB: six fit in 32 KB, seven do not
    let fanout = fanout_with_delivery(&[("packed", "chat:lobby", true)]).await;
    let response = fanout
        .handle(events::stream_event(batch(1..=10, 5_000)))
        .await;
    assert!(response.batch_item_failures.is_empty());
    let texts = fanout.push.texts("packed");
    assert!(
        texts.iter().all(|t| t.len() <= MAX_FRAME_BYTES),
        "{:?}",
        texts.iter().map(String::len).collect::<Vec<_>>()
    );
    assert!(
        texts[0].len() > MAX_FRAME_BYTES - 5_200,
        "the first frame is full"
    );
    assert_eq!(
        seqs_by_frame(&fanout.push.frames("packed")),
        [vec![1, 2, 3, 4, 5, 6], vec![7, 8, 9, 10]]
    );
}

#[tokio::test]
async fn a_failed_deltas_frame_fails_its_first_delta_and_everything_after_it() {
    // GIVEN a coalescing and a v1 subscriber, and 10 deltas that go to the coalescing one
    // in two frames (1-6, 7-10); every post of the frame holding seq 8 fails
    let fanout =
        fanout_with_delivery(&[("packed", "chat:lobby", true), ("v1", "chat:lobby", false)]).await;
    let push = FailingWhen {
        push: &fanout.push,
        fail: |connection: &str, frame: &str| {
            (connection == "packed" && frame.contains(r#""seq":8,"#))
                .then(|| PushError::Failed("500".into()))
        },
    };
    let failing = with_push(&fanout, push);
    // WHEN the batch is delivered
    let response = failing
        .handle(events::stream_event(batch(1..=10, 5_000)))
        .await;
    // THEN the failed frame's deltas are reported from its first (seq 7, not seq 8), so
    // Lambda retries from there; the first frame was delivered
    assert_eq!(
        failed_ids(&response),
        (7..=10).map(sequence_number).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs_by_frame(&fanout.push.frames("packed")),
        [vec![1, 2, 3, 4, 5, 6]]
    );
    // AND the v1 subscriber got every delta, one frame each
    assert_eq!(fanout.push.frames("v1").len(), 10);
}

#[tokio::test]
async fn a_gone_coalescing_connection_is_pruned_without_failing_the_batch() {
    // GIVEN a coalescing connection that is gone (410), whose frames are noted
    let fanout =
        fanout_with_delivery(&[("packed", "chat:lobby", true), ("v1", "chat:lobby", false)]).await;
    let tried = std::sync::Mutex::new(Vec::<Value>::new());
    let push = FailingWhen {
        push: &fanout.push,
        fail: |connection: &str, frame: &str| {
            (connection == "packed").then(|| {
                tried
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(frame).unwrap());
                PushError::Gone
            })
        },
    };
    let gone = with_push(&fanout, push);
    // WHEN a batch of 10 deltas is delivered
    let response = gone.handle(events::stream_event(batch(1..=10, 100))).await;
    // THEN its one `deltas` frame was tried once, the batch does not fail, and the
    // connection is removed; the v1 subscriber got everything
    assert!(
        response.batch_item_failures.is_empty(),
        "410 is not a failure"
    );
    let tried = tried.lock().unwrap().clone();
    assert_eq!(seqs_by_frame(&tried), [(1..=10).collect::<Vec<_>>()]);
    assert_eq!(
        deltacast_tests::items_naming(&fanout.store, "packed").await,
        0
    );
    assert_eq!(fanout.push.frames("v1").len(), 10);
}

#[tokio::test]
async fn a_deltas_frame_that_cannot_be_delivered_is_skipped_and_the_next_one_sent() {
    // GIVEN the first frame (seqs 1-6) is refused as a bad request
    let fanout = fanout_with_delivery(&[("packed", "chat:lobby", true)]).await;
    fanout.push.fail_next(
        "packed",
        vec![PushError::Rejected("HTTP 400 BadRequestException".into())],
    );
    let response = fanout
        .handle(events::stream_event(batch(1..=10, 5_000)))
        .await;
    // THEN it is not retried and does not hold up the shard; the next frame goes out
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(fanout.push.attempts("packed"), 2);
    assert_eq!(
        seqs_by_frame(&fanout.push.frames("packed")),
        [vec![7, 8, 9, 10]]
    );
}

#[tokio::test]
async fn a_new_epoch_starts_a_new_frame() {
    // GIVEN the old epoch's last two deltas, then the history starting over
    let fanout = fanout_with_delivery(&[("packed", "chat:lobby", true)]).await;
    let records = vec![
        record_in("zz-old", 8, 10),
        record_in("zz-old", 9, 10),
        record_in("aa-new", 1, 10),
        record_in("aa-new", 2, 10),
    ];
    let response = fanout.handle(events::stream_event(records)).await;
    assert!(response.batch_item_failures.is_empty());
    // THEN each epoch has its own frame, the old one first
    let frames = fanout.push.frames("packed");
    assert_eq!(seqs_by_frame(&frames), [vec![8, 9], vec![1, 2]]);
    assert_eq!(frames[0]["deltas"][1]["epoch"], "zz-old");
    assert_eq!(frames[1]["deltas"][0]["epoch"], "aa-new");
}
