//! Reads `template.yaml`, the one source of truth for what runs: the functions (binary,
//! timeout, memory, environment), the WebSocket routes and authorizer, the stream trigger
//! and the table. Intrinsic functions are resolved only as far as the local stack needs;
//! anything the stack cannot resolve is an error naming the resource, except the
//! variables the stack sets itself (see [`LocalValues`]).
//!
//! # Layout
//! - `spec`: what is read ([`StackSpec`] and its parts).
//! - `parse`: reading it from the YAML.
//! - `environment`: resolving a function's environment locally.
//! - `table`: creating the table in DynamoDB Local.
//! - `error`: [`TemplateError`].

mod environment;
mod error;
mod parse;
mod spec;
mod table;
#[cfg(test)]
mod tests;

pub use error::TemplateError;
pub use spec::{EnvValue, FunctionSpec, LocalValues, StackSpec, StreamTrigger, TableSpec};
