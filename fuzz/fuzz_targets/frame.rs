//! Client frames, as API Gateway hands them to the `$default` route: any UTF-8 text.
//! Whatever arrives, parsing never panics, and what it returns can be trusted: an
//! accepted frame holds only names and ids that re-validate and `data` that is JSON
//! within its limit; a refused one says why briefly, without echoing the frame back.

#![no_main]

use deltacast::protocol::{Channel, ClientMessage, ErrorCode, FrameLimits, MessageId};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;
use serde_json::Value;

/// Longest error message a client may be sent, in characters.
const MAX_MESSAGE_CHARS: usize = 300;

fuzz_target!(|bytes: &[u8]| {
    // API Gateway only passes text frames, and those are UTF-8.
    let Ok(frame) = std::str::from_utf8(bytes) else {
        return;
    };
    let limits = FrameLimits::default();
    match ClientMessage::parse(frame, &limits) {
        Ok(message) => accepted(frame, &message, &limits),
        Err(error) => {
            assert!(
                matches!(error.code, ErrorCode::BadRequest | ErrorCode::TooLarge),
                "unexpected code {:?}",
                error.code
            );
            assert!(!error.message.is_empty(), "empty error message");
            let chars = error.message.chars().count();
            assert!(
                chars <= MAX_MESSAGE_CHARS,
                "error message is {chars} characters: {:?}",
                error.message
            );
            if let Some(id) = &error.id {
                MessageId::parse(id.as_str()).expect("echoed id re-validates");
            }
            if let Some(channel) = &error.channel {
                Channel::parse(channel.as_str()).expect("echoed channel re-validates");
            }
        }
    }
});

fn accepted(frame: &str, message: &ClientMessage, limits: &FrameLimits) {
    if let Some(channel) = message.channel() {
        Channel::parse(channel.as_str()).expect("accepted channel re-validates");
    }
    if let Some(id) = message.id() {
        MessageId::parse(id.as_str()).expect("accepted id re-validates");
    }
    // Serde's own reading of the frame, to compare against where it has one (it has
    // none for text a `Value` cannot hold, such as lone surrogate escapes).
    let value = serde_json::from_str::<Value>(frame).ok();
    if let Some(value) = &value {
        assert_eq!(value["action"], message.action(), "action differs");
    }
    if let ClientMessage::Publish { data, .. } = message {
        let text = data.get();
        serde_json::from_str::<IgnoredAny>(text).expect("accepted data is JSON");
        assert!(
            text.len() <= limits.max_data_bytes,
            "data is {} bytes, over the limit",
            text.len()
        );
        if let Some(value) = &value {
            let kept: Value = serde_json::from_str(text).expect("data reads as the frame did");
            assert_eq!(kept, value["data"], "compacting changed the data");
        }
    }
}
