//! What the local stack takes from the template: functions, routes, the authorizer, stream
//! triggers and the table, plus the values the stack supplies itself. Plain data; reading
//! it is `parse`'s job, using it is the stack's.

use std::collections::BTreeMap;
use std::time::Duration;

/// A value in a function's environment, as the template gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvValue {
    /// A literal.
    Literal(String),
    /// `!Ref` to a parameter or resource.
    Ref(String),
    /// Any other intrinsic (`!Sub`, `!GetAtt`, ...), kept as text for error messages.
    Intrinsic(String),
}

/// One `AWS::Serverless::Function`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpec {
    /// Logical id, e.g. `MessageFunction`.
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`).
    pub binary: String,
    /// `Timeout`.
    pub timeout: Duration,
    /// `MemorySize`, MB.
    pub memory_mb: u64,
    /// `Environment.Variables`, globals merged in.
    pub environment: BTreeMap<String, EnvValue>,
}

/// A DynamoDB stream event source (a SAM `Events` entry of type `DynamoDB`).
#[derive(Clone, Debug, PartialEq)]
pub struct StreamTrigger {
    /// The function it invokes.
    pub function: String,
    /// `BatchSize` (default 100).
    pub batch_size: usize,
    /// `MaximumBatchingWindowInSeconds` (default 0).
    pub batching_window: Duration,
    /// `MaximumRetryAttempts` (default -1: until the record expires).
    pub maximum_retry_attempts: i64,
    /// `MaximumRecordAgeInSeconds` (default -1: no limit).
    pub maximum_record_age: Option<Duration>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: bool,
    /// `FunctionResponseTypes` contains `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `StartingPosition`: `LATEST` or `TRIM_HORIZON`.
    pub starting_position: String,
    /// `ParallelizationFactor` (default 1).
    pub parallelization_factor: u32,
    /// `FilterCriteria.Filters[].Pattern`, parsed.
    pub filters: Vec<serde_json::Value>,
}

/// The DynamoDB table's definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSpec {
    /// Attribute name → `S`, `N` or `B`.
    pub attributes: Vec<(String, String)>,
    /// Attribute name → `HASH` or `RANGE`.
    pub key_schema: Vec<(String, String)>,
    /// `StreamSpecification.StreamViewType`.
    pub stream_view_type: Option<String>,
    /// `TimeToLiveSpecification.AttributeName` when enabled.
    pub ttl_attribute: Option<String>,
}

/// Everything the local stack runs, read from the template.
#[derive(Clone, Debug)]
pub struct StackSpec {
    /// Functions by logical id.
    pub functions: BTreeMap<String, FunctionSpec>,
    /// The function with a `FunctionUrlConfig` (the HTTP API), if any.
    pub http_api: Option<String>,
    /// The WebSocket API's `RouteSelectionExpression`.
    pub route_selection_expression: String,
    /// Route key → function logical id.
    pub routes: BTreeMap<String, String>,
    /// The `$connect` authorizer's function, if any.
    pub authorizer: Option<String>,
    /// The authorizer's `IdentitySource` entries (e.g. `route.request.querystring.token`);
    /// a handshake that lacks one is refused with 401 without invoking the authorizer.
    pub identity_sources: Vec<String>,
    /// Stream event sources.
    pub stream_triggers: Vec<StreamTrigger>,
    /// The table.
    pub table: TableSpec,
    /// The table's logical id.
    pub table_logical_id: String,
    /// Parameter defaults (parameters without one are absent).
    pub parameter_defaults: BTreeMap<String, String>,
}

/// Values the local stack supplies where the template refers to things that only exist
/// in AWS.
#[derive(Clone, Debug, Default)]
pub struct LocalValues {
    /// The table's local name (for `!Ref Table`).
    pub table_name: String,
    /// Parameter values that override the template's defaults.
    pub parameters: BTreeMap<String, String>,
    /// Environment variables the stack sets itself, whatever the template says
    /// (`MANAGEMENT_ENDPOINT`, the AWS endpoint and credential variables).
    pub overrides: BTreeMap<String, String>,
}
