//! The server frames the generator reads, parsed without copying where the text allows:
//! one struct for every `type` (delta, deltas, subscribed, history, ack, error) and the
//! gateway's untyped "Internal server error", plus the part of `data` the generator wrote
//! itself. A `deltas` frame (coalesced delivery) and a `history` reply carry their deltas
//! in `deltas`, each the object of a `delta` frame without its `type`.

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
    /// On `rate_limited` and `in_flight`: how long to wait before sending again, ms.
    #[serde(rename = "retryAfterMs", default)]
    pub(crate) retry_after_ms: Option<u64>,
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

    #[test]
    fn coalesced_deltas_parse_in_order() {
        let text = r#"{"type":"deltas","channel":"load:x:0","deltas":[{"channel":"load:x:0","seq":4,"epoch":"e1","id":"x.0.3","from":"u","ts":1,"data":{"tag":"x.0.3","t":7,"pad":"x"}},{"channel":"load:x:0","seq":5,"epoch":"e1","id":"x.1.3","from":"u","ts":1,"data":{"tag":"x.1.3","t":8}}]}"#;
        let frame: Frame = serde_json::from_str(text).unwrap();
        assert_eq!(frame.kind.as_deref(), Some("deltas"));
        assert_eq!(frame.channel.as_deref(), Some("load:x:0"));
        let deltas = frame.deltas.unwrap();
        let seqs: Vec<_> = deltas.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, [Some(4), Some(5)]);
        assert_eq!(deltas[1].id.as_deref(), Some("x.1.3"));
        assert_eq!(deltas[1].data.as_ref().unwrap().t, Some(8));
        assert!(deltas[0].kind.is_none(), "elements carry no type");
    }

    #[test]
    fn refusals_carry_retry_after() {
        let text = r#"{"type":"error","code":"in_flight","message":"a publish with this id is being stored","id":"x.0.1","channel":"load:x:0","retryAfterMs":250}"#;
        let frame: Frame = serde_json::from_str(text).unwrap();
        assert_eq!(frame.code.as_deref(), Some("in_flight"));
        assert_eq!(frame.retry_after_ms, Some(250));
        let old: Frame =
            serde_json::from_str(r#"{"type":"error","code":"rate_limited","id":"x.0.2"}"#).unwrap();
        assert_eq!(old.retry_after_ms, None, "retryAfterMs is optional");
    }
}
