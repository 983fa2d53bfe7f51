//! The `ops` of an `update` frame: read from their raw JSON (after a depth check on the
//! text, so that no parser recurses without bound) and checked by [`crate::state::check`],
//! whose refusals name the op, the field and the limit.

use serde_json::value::RawValue;

use super::payload::nesting_depth;
use crate::state::{MAX_DOCUMENT_DEPTH, MAX_OPS, Op, check};

/// Levels an `ops` array may nest: the array, an op, and its value's levels.
const MAX_OPS_NESTING: usize = MAX_DOCUMENT_DEPTH + 2;

/// What `ops` must be, as refusals state it.
pub(super) fn form() -> String {
    format!(
        "an array of 1 to {MAX_OPS} operations, each {{\"op\": \"inc\"|\"set\"|\"remove\"|\"merge\", \"path\": a JSON Pointer, ...}}"
    )
}

/// Reads and checks the `ops` of an `update`.
pub(super) fn read(raw: &RawValue) -> Result<Vec<Op>, String> {
    if !raw.get().starts_with('[') {
        return Err(format!("ops must be {}", form()));
    }
    let depth = nesting_depth(raw.get());
    if depth > MAX_OPS_NESTING {
        return Err(format!(
            "ops must be nested at most {MAX_OPS_NESTING} levels deep (a value at most {MAX_DOCUMENT_DEPTH}); got {depth}"
        ));
    }
    let ops: Vec<Op> = serde_json::from_str(raw.get()).map_err(|err| {
        let mut message = err.to_string();
        if let Some(at) = message.find(" at line ") {
            message.truncate(at);
        }
        format!("ops: {message}; each op is {}", op_forms())
    })?;
    check(&ops).map_err(|err| err.to_string())?;
    Ok(ops)
}

/// The four ops' shapes.
fn op_forms() -> &'static str {
    r#"{"op":"inc","path":P,"by":N}, {"op":"set","path":P,"value":V}, {"op":"remove","path":P} or {"op":"merge","path":P,"patch":V}"#
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn reads_ops_and_names_what_is_wrong() {
        let ops = read(&raw(
            r#"[{"op":"inc","path":"/a","by":2},{"op":"remove","path":"/b"}]"#,
        ))
        .unwrap();
        assert_eq!(ops.len(), 2);
        for (text, says) in [
            (r#"{"op":"inc"}"#, "ops must be an array"),
            ("[]", "ops must hold 1 to 32 operations (got 0)"),
            (r#"[{"op":"add","path":"/a"}]"#, "unknown variant `add`"),
            (
                r#"[{"op":"inc","path":"/a","by":1.5}]"#,
                "ops[0].by: inc adds integers only",
            ),
            (r#"[{"op":"set","path":"a","value":1}]"#, "ops[0].path"),
            (
                r#"[{"op":"set","path":"/a","value":1,"x":2}]"#,
                "unknown field `x`",
            ),
        ] {
            let err = read(&raw(text)).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
        let deep = format!(
            "[{{\"op\":\"set\",\"path\":\"/a\",\"value\":{}1{}}}]",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert!(
            read(&raw(&deep))
                .unwrap_err()
                .contains("nested at most 34 levels")
        );
    }
}
