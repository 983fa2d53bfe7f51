//! Folding ops into a document: the last-writer-wins rule, commuting `inc`s, all or none
//! per message, and the size limit.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::document::{Document, Folded, Stamp};
use super::op::{CheckedOp, Op, check};

const LIMIT: usize = 64 * 1024;

fn ops(value: Value) -> Vec<CheckedOp> {
    let ops: Vec<Op> = serde_json::from_value(value).unwrap();
    check(&ops).unwrap()
}

fn at(ms: u64) -> Stamp {
    Stamp {
        at: ms,
        by: format!("p#{ms}"),
    }
}

/// Folds each `(stamp, ops)` in the order given and returns the value.
fn folded(messages: &[(u64, Value)]) -> Value {
    let mut document = Document::default();
    for (ms, message) in messages {
        let outcome = document.fold(&ops(message.clone()), &at(*ms), LIMIT);
        assert!(matches!(outcome, Folded::Applied { .. }), "{outcome:?}");
    }
    Value::Object(document.value)
}

/// The value is the same whichever of the two orders the messages are folded in.
fn same_either_way(a: (u64, Value), b: (u64, Value)) -> Value {
    let forward = folded(&[a.clone(), b.clone()]);
    let backward = folded(&[b, a]);
    assert_eq!(forward, backward);
    forward
}

#[test]
fn the_newer_set_wins_whichever_comes_first() {
    let value = same_either_way(
        (2, json!([{"op": "set", "path": "/title", "value": "new"}])),
        (1, json!([{"op": "set", "path": "/title", "value": "old"}])),
    );
    assert_eq!(value, json!({"title": "new"}));
}

#[test]
fn a_newer_write_below_survives_an_older_replacement_above() {
    let value = same_either_way(
        (7, json!([{"op": "set", "path": "/a/y", "value": 2}])),
        (5, json!([{"op": "set", "path": "/a", "value": {"x": 1}}])),
    );
    assert_eq!(value, json!({"a": {"x": 1, "y": 2}}));
}

#[test]
fn a_newer_replacement_above_wipes_an_older_write_below() {
    let value = same_either_way(
        (5, json!([{"op": "set", "path": "/a/y", "value": 2}])),
        (7, json!([{"op": "set", "path": "/a", "value": {"x": 1}}])),
    );
    assert_eq!(value, json!({"a": {"x": 1}}));
}

#[test]
fn a_removal_keeps_an_older_set_from_coming_back() {
    let value = same_either_way(
        (5, json!([{"op": "remove", "path": "/a"}])),
        (3, json!([{"op": "set", "path": "/a", "value": 1}])),
    );
    assert_eq!(value, json!({}));
}

#[test]
fn incs_add_up_in_any_order_and_an_older_one_under_a_newer_set_is_dropped() {
    let value = folded(&[
        (3, json!([{"op": "inc", "path": "/votes/a", "by": 1}])),
        (1, json!([{"op": "inc", "path": "/votes/a", "by": 2}])),
        (2, json!([{"op": "inc", "path": "/votes/b", "by": -1}])),
    ]);
    assert_eq!(value, json!({"votes": {"a": 3, "b": -1}}));
    let reset = same_either_way(
        (
            5,
            json!([{"op": "set", "path": "/votes", "value": {"a": 0}}]),
        ),
        (3, json!([{"op": "inc", "path": "/votes/a", "by": 1}])),
    );
    assert_eq!(reset, json!({"votes": {"a": 0}}));
}

#[test]
fn a_merge_patch_sets_and_removes_member_by_member() {
    let value = folded(&[
        (
            1,
            json!([{"op": "set", "path": "/s", "value": {"a": 1, "b": 2, "c": {"d": 3}}}]),
        ),
        (
            2,
            json!([{"op": "merge", "path": "/s", "patch": {"a": null, "c": {"e": 4}, "f": [1]}}]),
        ),
    ]);
    assert_eq!(
        value,
        json!({"s": {"b": 2, "c": {"d": 3, "e": 4}, "f": [1]}})
    );
    // and an older member-wise write does not undo a newer one
    let value = same_either_way(
        (
            4,
            json!([{"op": "merge", "path": "", "patch": {"a": 1, "b": 1}}]),
        ),
        (
            3,
            json!([{"op": "merge", "path": "", "patch": {"a": 2, "c": 2}}]),
        ),
    );
    assert_eq!(value, json!({"a": 1, "b": 1, "c": 2}));
}

#[test]
fn a_message_is_folded_all_or_none() {
    let mut document = Document::default();
    document.fold(
        &ops(json!([{"op": "set", "path": "/s", "value": "text"}])),
        &at(1),
        LIMIT,
    );
    let before = document.clone();
    let outcome = document.fold(
        &ops(json!([
            {"op": "inc", "path": "/n", "by": 1},
            {"op": "inc", "path": "/s", "by": 1}
        ])),
        &at(2),
        LIMIT,
    );
    assert_eq!(
        outcome,
        Folded::Rejected("ops[1]: inc of /s: the member is not a number".into())
    );
    assert_eq!(document, before);
    let below_a_string = document.fold(
        &ops(json!([{"op": "inc", "path": "/s/x", "by": 1}])),
        &at(3),
        LIMIT,
    );
    assert!(matches!(below_a_string, Folded::Rejected(r) if r.contains("/s is not an object")));
    assert_eq!(document, before);
}

#[test]
fn a_message_that_would_outgrow_the_limit_changes_nothing() {
    let mut document = Document::new(Map::new(), 0, Default::default());
    let big = "x".repeat(600);
    let first = document.fold(
        &ops(json!([{"op": "set", "path": "/a", "value": big}])),
        &at(1),
        1000,
    );
    assert_eq!(first, Folded::Applied { changed: true });
    let before = document.clone();
    let second = document.fold(
        &ops(json!([{"op": "set", "path": "/b", "value": big}])),
        &at(2),
        1000,
    );
    assert!(
        matches!(&second, Folded::Rejected(r) if r.contains("at most 1000")),
        "{second:?}"
    );
    assert_eq!(document.value, before.value);
    // replacing the big value by a small one fits
    let third = document.fold(
        &ops(json!([{"op": "set", "path": "/a", "value": 1}])),
        &at(3),
        1000,
    );
    assert_eq!(third, Folded::Applied { changed: true });
    // and the bound follows: many small incs are checked against the limit, not refused
    for ms in 4..40 {
        let inc = document.fold(
            &ops(json!([{"op": "inc", "path": "/n", "by": 1}])),
            &at(ms),
            1000,
        );
        assert_eq!(inc, Folded::Applied { changed: true });
    }
    assert_eq!(document.value["n"], json!(36));
}

#[test]
fn escaped_keys_stay_within_the_size_bound() {
    // A key of control characters serializes six bytes per byte (`\u0001`): the bound
    // must grow by that much, or the limit could be passed without a check.
    let key = "\u{1}".repeat(100);
    let mut document = Document::default();
    for ms in 0..3 {
        let path = format!("/{key}{ms}");
        let outcome = document.fold(
            &ops(json!([{"op": "inc", "path": path, "by": 1}])),
            &at(ms),
            1500,
        );
        let size = serde_json::to_vec(&Value::Object(document.value.clone()))
            .unwrap()
            .len();
        assert!(size <= 1500, "{size} bytes after {outcome:?}");
    }
}

#[test]
fn a_stale_write_changes_nothing_and_says_so() {
    let mut document = Document::default();
    document.fold(
        &ops(json!([{"op": "set", "path": "/a", "value": 1}])),
        &at(5),
        LIMIT,
    );
    let stale = document.fold(
        &ops(json!([{"op": "set", "path": "/a", "value": 2}])),
        &at(4),
        LIMIT,
    );
    assert_eq!(stale, Folded::Applied { changed: false });
    assert_eq!(document.value["a"], json!(1));
}

/// A random message: replacements under `/doc`, incs under `/n` (the documented limit is
/// a `set` folded after a newer `inc` of the same path).
fn message() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec!["/doc/a", "/doc/a/x", "/doc/b", "/doc", "/doc/a/y/z"]);
    prop_oneof![
        (path.clone(), 0..100u32).prop_map(|(p, v)| json!({"op": "set", "path": p, "value": v})),
        (path.clone(), 0..100u32)
            .prop_map(|(p, v)| json!({"op": "set", "path": p, "value": {"x": v, "k": "v"}})),
        path.clone()
            .prop_map(|p| json!({"op": "remove", "path": p})),
        (path, 0..9u32)
            .prop_map(|(p, m)| json!({"op": "merge", "path": p, "patch": {"x": null, "m": m}})),
        (0..3u32, -5..5i32)
            .prop_map(|(n, by)| json!({"op": "inc", "path": format!("/n/{n}"), "by": by})),
    ]
}

proptest! {
    #[test]
    fn any_folding_order_gives_one_value(
        (messages, shuffled) in prop::collection::vec(message(), 1..30).prop_flat_map(|ops| {
            let stamped: Vec<(u64, Value)> =
                ops.into_iter().enumerate().map(|(ms, op)| (ms as u64, json!([op]))).collect();
            (Just(stamped.clone()), Just(stamped).prop_shuffle())
        })
    ) {
        prop_assert_eq!(folded(&messages), folded(&shuffled));
    }
}
