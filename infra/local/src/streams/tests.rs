//! Tests of the trigger: delivery rules and shard handling against a scripted stream,
//! then the whole trigger against DynamoDB Local.

mod delivery;
mod dynamodb_local;
mod function;
mod scripted;
