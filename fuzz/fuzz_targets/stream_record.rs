//! DynamoDB Streams records, as the fan-out reads them: any record that deserialises.
//! Reading one never panics, and a delta read from it becomes a `delta` frame that is
//! JSON and says the same channel and seq.

#![no_main]

use aws_lambda_events::dynamodb::EventRecord;
use deltacast::stream::{StreamDelta, delta_of};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The parts of a `delta` frame checked against the delta it came from.
#[derive(Deserialize)]
struct DeltaFrame {
    #[serde(rename = "type")]
    kind: String,
    channel: String,
    seq: u64,
    epoch: String,
    id: String,
    from: String,
    ts: u64,
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(record) = serde_json::from_slice::<EventRecord>(bytes) else {
        return;
    };
    match delta_of(record) {
        StreamDelta::NotADelta => {}
        StreamDelta::Malformed(reason) => assert!(!reason.is_empty(), "empty reason"),
        StreamDelta::Delta(delta) => {
            let frame = delta.to_frame();
            serde_json::from_str::<IgnoredAny>(&frame).expect("a delta frame is JSON");
            let read: DeltaFrame =
                serde_json::from_str(&frame).expect("a delta frame has the delta's fields");
            assert_eq!(read.kind, "delta");
            assert_eq!(read.channel, delta.channel, "channel differs");
            assert_eq!(read.seq, delta.seq, "seq differs");
            assert_eq!(read.epoch, delta.epoch, "epoch differs");
            assert_eq!(read.id, delta.id, "id differs");
            assert_eq!(read.from, delta.from, "from differs");
            assert_eq!(read.ts, delta.ts, "ts differs");
        }
    }
});
