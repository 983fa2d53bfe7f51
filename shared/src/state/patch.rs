//! The change between two versions of a document as an RFC 7396 merge patch: what the
//! fan-out sends subscribers instead of every op, however many ops the versions lie apart.
//! State values never hold `null` (`op.rs` refuses it), so a patch's `null` always means
//! "removed", and applying the patch to the old value gives exactly the new one.

use serde_json::{Map, Value};

/// The merge patch that turns `old` into `new`; `None` when they are equal.
pub fn merge_patch(old: &Map<String, Value>, new: &Map<String, Value>) -> Option<Value> {
    let mut patch = Map::new();
    for (key, before) in old {
        match new.get(key) {
            None => {
                patch.insert(key.clone(), Value::Null);
            }
            Some(after) if after == before => {}
            Some(after) => {
                let change = match (before, after) {
                    (Value::Object(before), Value::Object(after)) => {
                        merge_patch(before, after).expect("the members differ")
                    }
                    _ => after.clone(),
                };
                patch.insert(key.clone(), change);
            }
        }
    }
    for (key, after) in new {
        if !old.contains_key(key) {
            patch.insert(key.clone(), after.clone());
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        value.as_object().expect("an object").clone()
    }

    #[test]
    fn applying_the_patch_to_the_old_value_gives_the_new_one() {
        let cases = [
            (json!({}), json!({"a": 1})),
            (json!({"a": 1, "b": 2}), json!({"a": 1})),
            (
                json!({"a": {"x": 1, "y": 2}}),
                json!({"a": {"x": 1, "y": 3, "z": [1, 2]}}),
            ),
            (json!({"a": {"x": 1}}), json!({"a": {}})),
            (json!({"a": {"x": 1}}), json!({"a": 5})),
            (json!({"a": 5}), json!({"a": {"x": {"y": true}}})),
            (json!({"a": [1, 2]}), json!({"a": [2]})),
            (
                json!({"votes": {"a": 10, "b": 4}, "open": true}),
                json!({"votes": {"a": 12, "b": 4}}),
            ),
        ];
        for (old, new) in cases {
            let patch = merge_patch(&object(old.clone()), &object(new.clone())).unwrap();
            // json-patch's RFC 7396 implementation is the independent judge.
            let mut patched = old.clone();
            json_patch::merge(&mut patched, &patch);
            assert_eq!(patched, new, "{old} + {patch}");
        }
    }

    #[test]
    fn a_patch_carries_only_what_changed() {
        let old = object(json!({"votes": {"a": 10, "b": 4}, "title": "Lunch?"}));
        let new = object(json!({"votes": {"a": 12, "b": 4}, "title": "Lunch?"}));
        assert_eq!(merge_patch(&old, &new), Some(json!({"votes": {"a": 12}})));
        assert_eq!(merge_patch(&old, &old), None);
    }
}
