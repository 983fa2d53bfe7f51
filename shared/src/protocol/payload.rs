//! A delta's payload. It is kept as the client wrote it (less insignificant whitespace)
//! and never read into numbers, so a 20-digit integer or `1.10` reaches every
//! subscriber exactly as published instead of rounded through `f64`.
//!
//! Its nesting is measured here too, by a byte scan rather than by parsing: a payload is
//! only ever held as text, and a recursive parser given 5,000 nested arrays would be the
//! very stack overflow the depth limit exists to spare every subscriber.

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

/// How deeply `json` nests arrays and objects: 0 for a scalar, 1 for `[]` or `{"a":1}`,
/// 2 for `[[]]`. Brackets inside strings (escaped quotes included) do not count. One
/// pass over the bytes, no recursion, so any depth is measured safely. `json` must be
/// valid JSON (as a [`Payload`] is).
pub(super) fn nesting_depth(json: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in json.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
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

    fn nested(depth: usize) -> String {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn depth_counts_arrays_and_objects_and_not_scalars() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth(r#""x""#), 0);
        assert_eq!(nesting_depth("null"), 0);
        assert_eq!(nesting_depth("[]"), 1);
        assert_eq!(nesting_depth(r#"{"a":1}"#), 1);
        assert_eq!(nesting_depth(r#"{"a":[1,{"b":[]}],"c":{}}"#), 4);
        assert_eq!(nesting_depth(&nested(32)), 32);
        assert_eq!(nesting_depth(&nested(33)), 33);
    }

    #[test]
    fn depth_is_the_deepest_branch_not_the_bracket_count() {
        let wide = format!("[{}]", vec![nested(3); 100].join(","));
        assert_eq!(nesting_depth(&wide), 4);
    }

    #[test]
    fn brackets_inside_strings_do_not_count() {
        assert_eq!(nesting_depth(r#"["[[[[{{{{"]"#), 1);
        assert_eq!(nesting_depth(r#"{"k[":"}}]]"}"#), 1);
        // An escaped quote does not end the string, so the brackets after it are text.
        assert_eq!(nesting_depth(r#"["a\"[[[[","b"]"#), 1);
        // A string ending in an escaped backslash still ends at its quote.
        assert_eq!(nesting_depth(r#"["a\\",[["b"]]]"#), 3);
    }

    #[test]
    fn five_thousand_levels_are_measured_without_recursion() {
        assert_eq!(nesting_depth(&nested(5_000)), 5_000);
    }
}
