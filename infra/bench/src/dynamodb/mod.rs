//! The DynamoDB Local pieces the sections that run stacks of their own share: a DynamoDB
//! Local that belongs to one section (`fresh.rs` says why), and its write ceiling on this
//! machine (`ceiling.rs`), what those sections' rates are read beside.

pub mod ceiling;
pub mod fresh;

pub use ceiling::WriteCeiling;
pub use fresh::FreshDynamoDb;
