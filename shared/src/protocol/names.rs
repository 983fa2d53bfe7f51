//! The names every frame carries: channel names and message ids. Each is validated once,
//! where it enters, so storage, fan-out and capability checks can trust it; a refusal
//! states the form the name must have, with the configured length limit.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest channel name the protocol allows.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest message or request id the protocol allows.
pub const MAX_ID_LEN: usize = 64;
/// The characters a channel name may hold, as error messages list them.
pub const CHANNEL_CHARACTERS: &str = "A-Z a-z 0-9 _ - : . @";
/// The characters a message or request id may hold, as error messages list them.
pub const ID_CHARACTERS: &str = "A-Z a-z 0-9 _ - : .";

/// A validated channel name: 1–128 characters of `A-Za-z0-9_-:.@`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Channel(String);

impl Channel {
    /// Validates `name` as a channel name.
    pub fn parse(name: &str) -> Result<Self, String> {
        Self::parse_within(name, MAX_CHANNEL_LEN)
    }

    /// Validates `name` as a channel name of at most `max` characters.
    pub fn parse_within(name: &str, max: usize) -> Result<Self, String> {
        let max = max.min(MAX_CHANNEL_LEN);
        match problem(name, max, is_channel_char) {
            None => Ok(Self(name.to_owned())),
            Some(problem) => Err(format!(
                "channel must be {}; got {problem}",
                Self::form(max)
            )),
        }
    }

    /// The form a channel name of at most `max` characters has, as refusals state it.
    pub fn form(max: usize) -> String {
        format!("a string of 1-{max} characters from {CHANNEL_CHARACTERS}")
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `c` may appear in a channel name.
pub fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '@')
}

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')
}

/// What is wrong with `name` as a name of 1 to `max` characters that `allowed` accepts:
/// the first bad character, else the length; `None` when it is fine.
fn problem(name: &str, max: usize, allowed: fn(char) -> bool) -> Option<String> {
    if name.is_empty() {
        return Some("an empty string".into());
    }
    if let Some(bad) = name.chars().find(|c| !allowed(*c)) {
        return Some(format!("the character {bad:?}"));
    }
    // Every allowed character is ASCII, so bytes and characters agree here.
    (name.len() > max).then(|| format!("{} characters", name.len()))
}

/// A validated message or request id: 1–64 characters of `A-Za-z0-9_-:.`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(String);

impl MessageId {
    /// Validates `id` as a message or request id.
    pub fn parse(id: &str) -> Result<Self, String> {
        Self::parse_within(id, MAX_ID_LEN)
    }

    /// Validates `id` as a message or request id of at most `max` characters.
    pub fn parse_within(id: &str, max: usize) -> Result<Self, String> {
        let max = max.min(MAX_ID_LEN);
        match problem(id, max, is_id_char) {
            None => Ok(Self(id.to_owned())),
            Some(problem) => Err(format!("id must be {}; got {problem}", Self::form(max))),
        }
    }

    /// The form an id of at most `max` characters has, as refusals state it.
    pub fn form(max: usize) -> String {
        format!("a string of 1-{max} characters from {ID_CHARACTERS}")
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_validated() {
        for ok in [
            "a",
            "chat:lobby",
            "user:alice@example.com",
            "x.y-z_1",
            &"c".repeat(128),
        ] {
            Channel::parse(ok).unwrap();
        }
        for bad_name in [
            "",
            "has space",
            "slash/no",
            "star*",
            "ümlaut",
            &"c".repeat(129),
        ] {
            assert!(Channel::parse(bad_name).is_err(), "{bad_name:?} accepted");
        }
    }

    #[test]
    fn a_refused_name_states_the_form_and_what_was_wrong() {
        let form = "a string of 1-128 characters from A-Z a-z 0-9 _ - : . @";
        assert_eq!(
            Channel::parse("").unwrap_err(),
            format!("channel must be {form}; got an empty string")
        );
        assert_eq!(
            Channel::parse("a b").unwrap_err(),
            format!("channel must be {form}; got the character ' '")
        );
        assert_eq!(
            Channel::parse_within("123456789", 8).unwrap_err(),
            "channel must be a string of 1-8 characters from A-Z a-z 0-9 _ - : . @; got 9 characters"
        );
        assert_eq!(
            MessageId::parse("a@b").unwrap_err(),
            "id must be a string of 1-64 characters from A-Z a-z 0-9 _ - : .; got the character '@'"
        );
        assert_eq!(
            MessageId::parse_within("12345", 4).unwrap_err(),
            "id must be a string of 1-4 characters from A-Z a-z 0-9 _ - : .; got 5 characters"
        );
    }

    #[test]
    fn a_configured_limit_never_exceeds_the_protocol_limit() {
        assert!(Channel::parse_within(&"c".repeat(129), 1000).is_err());
        assert!(MessageId::parse_within(&"i".repeat(65), 1000).is_err());
    }
}
