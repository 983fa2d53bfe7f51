//! # deltacast-local
//!
//! The local stack: everything that stands in for AWS on a laptop, so that the very
//! binaries that get deployed run unchanged.
//!
//! ## Layout
//! - [`template`]: reads `template.yaml` (functions, routes, authorizer, stream trigger,
//!   table) and creates the table in DynamoDB Local.
//! - [`invoke`]: the `Invoke` trait and Lambda's ways of failing.
//! - [`runtime`]: a local Lambda Runtime API; runs function binaries as processes, a pool
//!   of instances per function.
//! - [`filter`]: Lambda event filtering (`FilterCriteria` patterns).
//! - [`streams`]: the DynamoDB Streams event source mapping (polling, batching, retries,
//!   bisecting, on-failure records).

pub mod filter;
pub mod invoke;
pub mod runtime;
pub mod streams;
pub mod template;
