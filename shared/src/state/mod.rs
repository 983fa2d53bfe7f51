//! Live state: channels whose value is a JSON document, changed by operations and
//! watched as patches (issue 13). This module is the pure part, without I/O:
//!
//! - [`path`]: JSON Pointers into a document, with their limits;
//! - [`op`]: the operations (`inc`, `set`, `remove`, `merge`) and their checks;
//! - [`document`]: folding ops into a document, last writer wins by time, `inc`s
//!   commuting, all or none per message, within a size limit;
//! - [`patch`]: the RFC 7396 merge patch between two versions, what subscribers get.

pub mod document;
pub mod op;
pub mod patch;
pub mod path;

#[cfg(test)]
mod document_tests;

pub use document::{Document, Folded, STAMP_HORIZON_MS, Stamp};
pub use op::{CheckedOp, MAX_DOCUMENT_DEPTH, MAX_NUMBER, MAX_OPS, Op, OpError, OpKind, check};
pub use patch::merge_patch;
pub use path::{MAX_KEY_BYTES, MAX_PATH_DEPTH, Path, PathError};
