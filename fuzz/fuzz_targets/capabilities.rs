//! A token's `channels` claim and a channel name, split at the first NUL byte (which
//! JSON text cannot contain). A claim that parses answers `grants` for every action
//! without panicking, grants nothing its patterns do not name, and `*` grants its
//! actions on every valid channel.

#![no_main]

use std::collections::BTreeMap;

use deltacast::auth::{Action, Capabilities};
use deltacast::protocol::Channel;
use libfuzzer_sys::fuzz_target;

const ACTIONS: [Action; 4] = [
    Action::Subscribe,
    Action::Publish,
    Action::History,
    Action::Presence,
];

/// Valid channels every claim is also asked about.
const CHANNELS: [&str; 4] = ["a", "chat:lobby", "user:alice", "news.sport-1_@x"];

fuzz_target!(|bytes: &[u8]| {
    let (claim, channel) = match bytes.iter().position(|&b| b == 0) {
        Some(at) => (&bytes[..at], &bytes[at + 1..]),
        None => (bytes, &[][..]),
    };
    let Ok(claim) = std::str::from_utf8(claim) else {
        return;
    };
    let channel = String::from_utf8_lossy(channel);
    let Ok(caps) = Capabilities::from_json(claim) else {
        return;
    };
    // The claim as plain data, the same way `from_json` reads it (a repeated key keeps
    // its last value).
    let patterns: BTreeMap<String, Vec<String>> =
        serde_json::from_str(claim).expect("an accepted claim is a map of lists");

    assert_eq!(
        Capabilities::from_json(&caps.to_json()).as_ref(),
        Ok(&caps),
        "capabilities do not round-trip through JSON"
    );
    for name in std::iter::once(channel.as_ref()).chain(CHANNELS) {
        let valid = Channel::parse(name).is_ok();
        for action in ACTIONS {
            let granted = caps.grants(name, action);
            let named = patterns.iter().any(|(pattern, actions)| {
                actions.iter().any(|a| a == action.name())
                    && match pattern.strip_suffix('*') {
                        Some(prefix) => name.starts_with(prefix),
                        None => pattern == name,
                    }
            });
            assert_eq!(
                granted, named,
                "grants({name:?}, {action}) is {granted}, but the claim says {named}"
            );
            if valid
                && patterns
                    .get("*")
                    .is_some_and(|a| a.iter().any(|a| a == action.name()))
            {
                assert!(granted, "`*` does not grant {action} on {name:?}");
            }
        }
    }
});
