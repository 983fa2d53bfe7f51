//! The operations a client sends to change a state channel's document, and their checks.
//! Everything that can be told from the message alone is checked here, before anything
//! is written; what depends on the document (its size) is checked when the op is folded
//! (`document.rs`).

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use thiserror::Error;

use super::path::{MAX_PATH_DEPTH, Path, PathError};

/// Most ops in one message.
pub const MAX_OPS: usize = 32;
/// The largest magnitude a number in a document may have: 2^53 - 1, the largest integer
/// JavaScript (and so every client) holds exactly.
pub const MAX_NUMBER: f64 = 9_007_199_254_740_991.0;
/// Most levels of nesting in a document, counted from its root.
pub const MAX_DOCUMENT_DEPTH: usize = 32;

/// One operation, as sent: `{"op": "inc", "path": "/votes/a", "by": 1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Op {
    /// Adds `by` to the number at `path` (a missing member counts as 0).
    Inc {
        /// JSON Pointer.
        path: String,
        /// The amount: an integer within ±[`MAX_NUMBER`] (integers add up exactly in any
        /// order; fractions would not).
        by: Number,
    },
    /// Puts `value` at `path`, creating the objects above it.
    Set {
        /// JSON Pointer.
        path: String,
        /// Any JSON value without `null`.
        value: Value,
    },
    /// Removes what is at `path`.
    Remove {
        /// JSON Pointer.
        path: String,
    },
    /// Applies an RFC 7396 merge patch to what is at `path` (`null` members remove).
    Merge {
        /// JSON Pointer.
        path: String,
        /// The merge patch.
        patch: Value,
    },
}

/// An op that passed its checks.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedOp {
    /// Where it applies.
    pub path: Path,
    /// What it does.
    pub kind: OpKind,
}

/// What a checked op does.
#[derive(Clone, Debug, PartialEq)]
pub enum OpKind {
    /// Adds to a number.
    Inc(Number),
    /// Replaces a value.
    Set(Value),
    /// Removes a value.
    Remove,
    /// Merges an RFC 7396 patch.
    Merge(Value),
}

/// Why a message's ops were refused; each names the field and the limit.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum OpError {
    /// No ops, or too many.
    #[error("ops must hold 1 to {MAX_OPS} operations (got {0})")]
    Count(usize),
    /// A bad path.
    #[error("ops[{index}].path: {error}")]
    Path {
        /// Which op.
        index: usize,
        /// Why.
        error: PathError,
    },
    /// `inc` by a fraction.
    #[error("ops[{index}].by: inc adds integers only (within ±2^53 - 1)")]
    IncNotInteger {
        /// Which op.
        index: usize,
    },
    /// A number out of range.
    #[error("ops[{index}]: numbers must be finite and within ±{MAX_NUMBER} (2^53 - 1)")]
    NumberRange {
        /// Which op.
        index: usize,
    },
    /// A `null` where a value is needed.
    #[error("ops[{index}].value: null is not a value (remove the member instead)")]
    Null {
        /// Which op.
        index: usize,
    },
    /// Nested too deep.
    #[error("ops[{index}]: the value would nest {depth} levels deep; at most {MAX_DOCUMENT_DEPTH}")]
    TooDeep {
        /// Which op.
        index: usize,
        /// Levels, counted from the document's root.
        depth: usize,
    },
    /// `inc` on the whole document, which is an object.
    #[error("ops[{index}].path: inc needs a member's path, not the whole document (\"\")")]
    IncAtRoot {
        /// Which op.
        index: usize,
    },
    /// `set` of a non-object on the whole document.
    #[error("ops[{index}].value: the whole document (path \"\") must be an object")]
    RootNotObject {
        /// Which op.
        index: usize,
    },
}

/// Checks a message's ops, all or none.
pub fn check(ops: &[Op]) -> Result<Vec<CheckedOp>, OpError> {
    if ops.is_empty() || ops.len() > MAX_OPS {
        return Err(OpError::Count(ops.len()));
    }
    ops.iter()
        .enumerate()
        .map(|(index, op)| check_one(index, op))
        .collect()
}

fn check_one(index: usize, op: &Op) -> Result<CheckedOp, OpError> {
    let (path, kind) = match op {
        Op::Inc { path, by } => (path, OpKind::Inc(by.clone())),
        Op::Set { path, value } => (path, OpKind::Set(value.clone())),
        Op::Remove { path } => (path, OpKind::Remove),
        Op::Merge { path, patch } => (path, OpKind::Merge(patch.clone())),
    };
    let path = Path::parse(path).map_err(|error| OpError::Path { index, error })?;
    let root = path.depth() == 0;
    match &kind {
        OpKind::Inc(by) => {
            if root {
                return Err(OpError::IncAtRoot { index });
            }
            if !in_range(by) {
                return Err(OpError::NumberRange { index });
            }
            if by.as_i64().is_none() {
                return Err(OpError::IncNotInteger { index });
            }
        }
        OpKind::Set(value) => {
            if root && !value.is_object() {
                return Err(OpError::RootNotObject { index });
            }
            check_value(index, value, path.depth(), false)?;
        }
        OpKind::Remove => {}
        OpKind::Merge(patch) => {
            if root && !patch.is_object() {
                return Err(OpError::RootNotObject { index });
            }
            check_value(index, patch, path.depth(), true)?;
        }
    }
    Ok(CheckedOp { path, kind })
}

/// Numbers in range, no `null` (except as a merge patch's removal), depth in bounds.
fn check_value(index: usize, value: &Value, depth: usize, patch: bool) -> Result<(), OpError> {
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(OpError::TooDeep { index, depth });
    }
    match value {
        Value::Null if !patch => Err(OpError::Null { index }),
        Value::Number(n) if !in_range(n) => Err(OpError::NumberRange { index }),
        Value::Array(items) => items
            .iter()
            // An array inside a patch is a value, replaced whole: no removals in it.
            .try_for_each(|item| check_value(index, item, depth + 1, false)),
        Value::Object(members) => members
            .values()
            .try_for_each(|member| check_value(index, member, depth + 1, patch)),
        _ => Ok(()),
    }
}

/// Whether a number is finite and within ±[`MAX_NUMBER`].
pub fn in_range(n: &Number) -> bool {
    n.as_f64()
        .is_some_and(|f| f.is_finite() && f.abs() <= MAX_NUMBER)
}

/// `a + b`, integer when both are, `None` when the sum leaves the range.
pub fn add(a: &Number, b: &Number) -> Option<Number> {
    let sum = match (a.as_i64(), b.as_i64()) {
        (Some(a), Some(b)) => Number::from(a.checked_add(b)?),
        _ => Number::from_f64(a.as_f64()? + b.as_f64()?)?,
    };
    in_range(&sum).then_some(sum)
}

// Every path a message may name fits in a document.
const _: () = assert!(MAX_PATH_DEPTH <= MAX_DOCUMENT_DEPTH);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn ops(value: Value) -> Vec<Op> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn the_four_ops_parse_and_check() {
        let checked = check(&ops(json!([
            {"op": "inc", "path": "/votes/a", "by": 1},
            {"op": "set", "path": "/title", "value": {"text": "Lunch?", "tags": [1, "x"]}},
            {"op": "remove", "path": "/old"},
            {"op": "merge", "path": "", "patch": {"title": null, "open": true}}
        ])))
        .unwrap();
        assert_eq!(checked.len(), 4);
        assert_eq!(checked[0].kind, OpKind::Inc(Number::from(1)));
        assert_eq!(checked[0].path.to_string(), "/votes/a");
        assert_eq!(checked[2].kind, OpKind::Remove);
    }

    #[test]
    fn unknown_ops_and_fields_do_not_parse() {
        assert!(serde_json::from_value::<Op>(json!({"op": "mul", "path": "/a", "by": 2})).is_err());
        assert!(
            serde_json::from_value::<Op>(json!({"op": "inc", "path": "/a", "by": 2, "x": 1}))
                .is_err()
        );
    }

    #[test]
    fn each_limit_is_refused_naming_the_field() {
        let refused = |value: Value| check(&ops(value)).unwrap_err().to_string();
        assert!(refused(json!([])).contains("1 to 32"));
        let many: Vec<Value> = (0..=MAX_OPS)
            .map(|_| json!({"op": "remove", "path": "/a"}))
            .collect();
        assert!(refused(Value::Array(many)).contains("got 33"));
        assert!(refused(json!([{"op": "inc", "path": "/a", "by": 1e300}])).contains("2^53"));
        assert!(
            refused(json!([{"op": "set", "path": "/a", "value": {"b": [9007199254740993i64]}}]))
                .contains("ops[0]: numbers")
        );
        assert!(
            refused(json!([{"op": "set", "path": "/a", "value": null}]))
                .contains("ops[0].value: null")
        );
        assert!(
            refused(json!([{"op": "set", "path": "/a", "value": {"b": null}}])).contains("null")
        );
        assert!(refused(json!([{"op": "inc", "path": "", "by": 1}])).contains("member's path"));
        assert!(refused(json!([{"op": "inc", "path": "/a", "by": 0.5}])).contains("integers only"));
        assert!(
            refused(json!([{"op": "set", "path": "", "value": 3}])).contains("must be an object")
        );
        assert!(refused(json!([{"op": "remove", "path": "a"}])).contains("ops[0].path"));
        let mut deep = json!(1);
        for _ in 0..MAX_DOCUMENT_DEPTH {
            deep = json!({ "k": deep });
        }
        assert!(
            refused(json!([{"op": "set", "path": "/a", "value": deep}])).contains("at most 32")
        );
    }

    #[test]
    fn a_merge_patch_may_remove_with_null_but_not_inside_an_array() {
        assert!(
            check(&ops(
                json!([{"op": "merge", "path": "/a", "patch": {"b": null}}])
            ))
            .is_ok()
        );
        assert!(
            check(&ops(
                json!([{"op": "merge", "path": "/a", "patch": {"b": [null]}}])
            ))
            .is_err()
        );
    }

    #[test]
    fn sums_stay_integers_and_in_range() {
        assert_eq!(
            add(&Number::from(2), &Number::from(-5)),
            Some(Number::from(-3))
        );
        let half = Number::from_f64(0.5).unwrap();
        assert_eq!(add(&Number::from(1), &half), Number::from_f64(1.5));
        assert_eq!(
            add(&Number::from(9_007_199_254_740_991i64), &Number::from(1)),
            None
        );
    }
}
