//! A state channel's document and how ops are folded into it.
//!
//! Ops reach the fold out of order (they are spread over several items to keep writers
//! apart, and each item's stream records come on their own), so the result must not
//! depend on the order of folding. The rule, last writer wins by time:
//!
//! - Every op carries a [`Stamp`]: when the server received it, then the publisher and
//!   the message id to break ties. All ops of one message share it.
//! - A `set`, `remove` or `merge` (each member of a merge patch is a `set` or a `remove`
//!   of its own) replaces what is at its path, unless a newer `set`/`remove`/`merge` is
//!   already at that path or above it: then it changes nothing. What newer writes left
//!   *below* its path survives it. The document keeps the stamp of each path replaced
//!   (a removed path keeps it as a tombstone) for [`STAMP_HORIZON_MS`].
//! - An `inc` adds to the number at its path (a missing member counts as 0), unless a
//!   newer `set`/`remove`/`merge` is at that path or above: the value it added to is gone.
//!   `inc`s add integers and commute with each other, so counters are exact whatever the
//!   order.
//! - Known limits: a `set`/`remove`/`merge` folded *after* a newer `inc` at its path or
//!   below still replaces the value (the `inc` is lost): reset a counter by writing a new
//!   path (a new round). And a message is folded all or none against the document as it
//!   is when its turn comes, so whether a message whose `inc` meets a non-number is
//!   refused can depend on the order (keep such messages to one op).
//!
//! Writing below a member that is not an object (a `set` or `remove` of `/a/b` where `/a`
//! is `3`) makes that member an object, as a merge patch does; an `inc` of a member that is not a
//! number, or below a member that is not an object, changes nothing and is reported. An
//! empty object is no value (as in Firebase): removing an object's last member removes
//! the object, and setting `{}` removes what was there.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use super::op::{CheckedOp, OpKind, add};
use super::path::Path;

/// How long a path's stamp is kept: an op older than this (by its stamp) cannot arrive
/// any more, since stream records are kept 24 hours.
pub const STAMP_HORIZON_MS: u64 = 24 * 60 * 60 * 1000;

/// When an op was received (Unix ms), then who sent it: the order of writers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    /// Unix ms at the server.
    pub at: u64,
    /// `<publisher>#<message id>`: breaks ties between ops of one millisecond.
    pub by: String,
}

/// A state channel's document: its value (an object), its version and its paths' stamps.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// The value subscribers see.
    pub value: Map<String, Value>,
    /// Raised once per folded batch that changed the value.
    pub version: u64,
    /// The newest `set`/`remove`/`merge` per path.
    pub stamps: BTreeMap<Path, Stamp>,
    /// At least the value's serialized size: exact when measured, then raised by each
    /// op's most growth, so that the value is serialized again only near the limit.
    size_bound: usize,
}

/// What folding one message's ops did.
#[derive(Clone, Debug, PartialEq)]
pub enum Folded {
    /// Applied (`changed`: whether the value changed at all; a stale write does not).
    Applied {
        /// Whether the value changed.
        changed: bool,
    },
    /// Not applied, the document unchanged; the reason is for the publisher.
    Rejected(String),
}

/// Serialized length of a value.
fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value).map_or(usize::MAX / 2, |v| v.len())
}

/// The most an op can grow a document's serialized value by.
fn growth(op: &CheckedOp) -> usize {
    // Each member on the path may be created: `"key":{}` and a comma; a key's byte may
    // serialize as six (`\u0001`).
    let path: usize = op.path.keys().iter().map(|k| k.len() * 6 + 6).sum();
    path + match &op.kind {
        // A number is at most 24 characters (`-9007199254740991` or a float).
        OpKind::Inc(_) => 26,
        OpKind::Set(value) | OpKind::Merge(value) => json_len(value),
        OpKind::Remove => 0,
    }
}

impl Default for Document {
    /// An empty document at version 0.
    fn default() -> Self {
        Self::new(Map::new(), 0, BTreeMap::new())
    }
}

impl Document {
    /// A document as stored.
    pub fn new(value: Map<String, Value>, version: u64, stamps: BTreeMap<Path, Stamp>) -> Self {
        let size_bound = json_len(&Value::Object(value.clone()));
        Self {
            value,
            version,
            stamps,
            size_bound,
        }
    }

    /// Folds one message's ops, all or none: if one is rejected, or the value would
    /// outgrow `max_bytes` (serialized), the document stays as it was.
    pub fn fold(&mut self, ops: &[CheckedOp], stamp: &Stamp, max_bytes: usize) -> Folded {
        let bound = self
            .size_bound
            .saturating_add(ops.iter().map(growth).sum::<usize>());
        // Only an inc can fail; a single op that fails has changed nothing. A message
        // that may fail halfway, or outgrow the limit, is applied to a copy first.
        let may_fail = ops.len() > 1 && ops.iter().any(|op| matches!(op.kind, OpKind::Inc(_)));
        let near_limit = bound > max_bytes;
        let before = (may_fail || near_limit).then(|| self.clone());
        let mut changed = false;
        for (index, op) in ops.iter().enumerate() {
            match self.apply(op, stamp) {
                Ok(c) => changed |= c,
                Err(reason) => {
                    if let Some(before) = before {
                        *self = before;
                    }
                    return Folded::Rejected(format!("ops[{index}]: {reason}"));
                }
            }
        }
        self.size_bound = bound;
        if near_limit && changed {
            let size = json_len(&Value::Object(self.value.clone()));
            if size > max_bytes {
                *self = before.expect("copied near the limit");
                return Folded::Rejected(format!(
                    "the document would be {size} bytes; at most {max_bytes} (STATE_MAX_BYTES)"
                ));
            }
            self.size_bound = size;
        }
        Folded::Applied { changed }
    }

    /// Drops the stamps older than [`STAMP_HORIZON_MS`] before `now_ms`.
    pub fn prune_stamps(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(STAMP_HORIZON_MS);
        self.stamps.retain(|_, stamp| stamp.at >= horizon);
    }

    fn apply(&mut self, op: &CheckedOp, stamp: &Stamp) -> Result<bool, String> {
        match &op.kind {
            OpKind::Inc(by) => self.inc(&op.path, by, stamp),
            OpKind::Set(value) => Ok(self.replace(&op.path, Some(value.clone()), stamp)),
            OpKind::Remove => Ok(self.replace(&op.path, None, stamp)),
            OpKind::Merge(patch) => Ok(self.merge(&op.path, patch, stamp)),
        }
    }

    /// Whether a write stamped `stamp` at `path` is outdated by a newer replacement at
    /// that path or above.
    fn superseded(&self, path: &Path, stamp: &Stamp) -> bool {
        (0..=path.depth()).any(|depth| {
            let above = Path::from_keys(&path.keys()[..depth]);
            self.stamps.get(&above).is_some_and(|s| s > stamp)
        })
    }

    fn inc(&mut self, path: &Path, by: &Number, stamp: &Stamp) -> Result<bool, String> {
        if self.superseded(path, stamp) {
            return Ok(false);
        }
        let (last, parents) = path.keys().split_last().expect("inc is never at the root");
        let mut node = &mut self.value;
        for (depth, key) in parents.iter().enumerate() {
            let child = node
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            node = child.as_object_mut().ok_or_else(|| {
                let above = Path::from_keys(&path.keys()[..=depth]);
                format!("inc of {path}: {above} is not an object")
            })?;
        }
        let current = match node.get(last) {
            None => Number::from(0),
            Some(Value::Number(n)) => n.clone(),
            Some(_) => return Err(format!("inc of {path}: the member is not a number")),
        };
        let sum = add(&current, by)
            .ok_or_else(|| format!("inc of {path}: the sum would leave ±(2^53 - 1)"))?;
        node.insert(last.clone(), Value::Number(sum));
        Ok(true)
    }

    /// Replaces (or with `None` removes) what is at `path`, keeping what newer writes left
    /// below it; `false` when a newer write made this one stale.
    fn replace(&mut self, path: &Path, new: Option<Value>, stamp: &Stamp) -> bool {
        if self.superseded(path, stamp) {
            return false;
        }
        // One pass over the stamps at and below `path`: the newer writes' state survives
        // this write (only the topmost of them matter, since each one's value already
        // holds those below it); the older ones are overwritten by it and dropped.
        let mut newer: Vec<(Path, Option<Value>)> = Vec::new();
        let mut older: Vec<Path> = Vec::new();
        for (below, s) in self.stamps.range(path.clone()..) {
            if !path.contains(below) {
                break;
            }
            if s < stamp {
                older.push(below.clone());
            } else if s > stamp && below != path && !newer.iter().any(|(p, _)| p.contains(below)) {
                newer.push((below.clone(), self.get(below).cloned()));
            }
        }
        self.put(path, new);
        for (below, value) in newer {
            self.put(&below, value);
        }
        for p in older {
            self.stamps.remove(&p);
        }
        self.stamps.insert(path.clone(), stamp.clone());
        true
    }

    /// An RFC 7396 merge patch at `path`, member by member.
    fn merge(&mut self, path: &Path, patch: &Value, stamp: &Stamp) -> bool {
        match patch {
            Value::Object(members) => {
                let mut changed = false;
                for (key, value) in members {
                    let child = path.child(key);
                    changed |= match value {
                        Value::Null => self.replace(&child, None, stamp),
                        Value::Object(_) => self.merge(&child, value, stamp),
                        _ => self.replace(&child, Some(value.clone()), stamp),
                    };
                }
                changed
            }
            _ => self.replace(path, Some(patch.clone()), stamp),
        }
    }

    /// The value at `path`, if any.
    pub fn get(&self, path: &Path) -> Option<&Value> {
        let (last, parents) = path.keys().split_last()?;
        let mut node = &self.value;
        for key in parents {
            node = node.get(key)?.as_object()?;
        }
        node.get(last)
    }

    /// Puts (or removes) a value at `path`, making the members above it objects. No
    /// object is ever left empty: an empty object is the same as no value, so that the
    /// objects a write made on its way do not outlive it whatever the order of folding.
    fn put(&mut self, path: &Path, value: Option<Value>) {
        let value = value.and_then(without_empty_objects);
        let Some((last, parents)) = path.keys().split_last() else {
            self.value = match value {
                Some(Value::Object(members)) => members,
                _ => Map::new(),
            };
            return;
        };
        let Some(value) = value else {
            remove_in(&mut self.value, path.keys());
            return;
        };
        let mut node = &mut self.value;
        for key in parents {
            let child = node
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            node = child.as_object_mut().expect("made an object above");
        }
        node.insert(last.clone(), value);
    }
}

/// Removes the member at `keys` below `node`, and the objects it leaves empty.
fn remove_in(node: &mut Map<String, Value>, keys: &[String]) {
    let Some((first, rest)) = keys.split_first() else {
        return;
    };
    if rest.is_empty() {
        node.remove(first);
        return;
    }
    match node.get_mut(first) {
        Some(Value::Object(child)) => {
            remove_in(child, rest);
            if child.is_empty() {
                node.remove(first);
            }
        }
        // A write below a member that is not an object makes it one: a removal leaves
        // it empty, so gone (folding a later `set` of the member first gives the same).
        Some(_) => {
            node.remove(first);
        }
        None => {}
    }
}

/// `value` without empty objects (an array's items are kept as they are: arrays are
/// values); `None` when nothing is left.
fn without_empty_objects(value: Value) -> Option<Value> {
    match value {
        Value::Object(members) => {
            let kept: Map<String, Value> = members
                .into_iter()
                .filter_map(|(key, member)| Some((key, without_empty_objects(member)?)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
        other => Some(other),
    }
}
