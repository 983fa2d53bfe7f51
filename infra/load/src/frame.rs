//! The server frames the generator reads, parsed without copying where the text allows:
//! one struct for every `type` (delta, subscribed, history, ack, error) and the gateway's
//! untyped "Internal server error", plus the part of `data` the generator wrote itself.

use std::borrow::Cow;

use serde::Deserialize;

/// One frame from the server; borrowed where the text allows it.
#[derive(Deserialize)]
pub(crate) struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(crate) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) channel: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(borrow, default)]
    pub(crate) epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(crate) message: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) recovered: Option<bool>,
    #[serde(default)]
    pub(crate) more: Option<bool>,
    #[serde(borrow, default)]
    pub(crate) data: Option<Payload<'a>>,
    #[serde(borrow, default)]
    pub(crate) deltas: Option<Vec<Frame<'a>>>,
}

/// The `data` this generator publishes (other fields, the padding, are skipped).
#[derive(Deserialize)]
pub(crate) struct Payload<'a> {
    #[serde(borrow, default)]
    pub(crate) tag: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) t: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_without_their_padding() {
        let text = r#"{"type":"delta","channel":"load:x:0","seq":3,"epoch":"e1","id":"x.0.1","from":"u","ts":1,"data":{"tag":"x.0.1","t":42,"pad":"xxxx"}}"#;
        let frame: Frame = serde_json::from_str(text).unwrap();
        assert_eq!(frame.seq, Some(3));
        let data = frame.data.unwrap();
        assert_eq!(data.tag.as_deref(), Some("x.0.1"));
        assert_eq!(data.t, Some(42));
        let crash: Frame = serde_json::from_str(
            r#"{"message": "Internal server error", "connectionId": "c", "requestId": "r"}"#,
        )
        .unwrap();
        assert!(crash.kind.is_none());
    }
}
