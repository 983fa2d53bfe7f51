//! A delta's payload. It is kept as the client wrote it (less insignificant whitespace)
//! and never read into numbers, so a 20-digit integer or `1.10` reaches every
//! subscriber exactly as published instead of rounded through `f64`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A delta's payload: JSON text kept exactly as published (less insignificant
/// whitespace), so numbers are never rounded through `f64`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// Wraps JSON text; fails if it is not valid JSON.
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        RawValue::from_string(text).map(Self)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

/// Re-serialises raw JSON without insignificant whitespace, keeping every value's text
/// (numbers are not rounded through `f64`).
pub(super) fn compact(raw: &RawValue) -> Payload {
    let text = raw.get();
    if !text.bytes().any(|b| b.is_ascii_whitespace()) {
        return Payload(raw.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    Payload::from_json(out).expect("removing whitespace outside strings keeps JSON valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compacted(text: &str) -> String {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        compact(&raw).get().to_owned()
    }

    #[test]
    fn compacting_removes_whitespace_outside_strings_only() {
        assert_eq!(
            compacted(r#"{ "n" : 12345678901234567890123, "s":"a b\" c" }"#),
            r#"{"n":12345678901234567890123,"s":"a b\" c"}"#
        );
        assert_eq!(compacted("[1.10, \"x\\\\\" ,null]"), r#"[1.10,"x\\",null]"#);
    }
}
