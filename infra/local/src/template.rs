//! Reads `template.yaml`, the one source of truth for what runs: the functions (binary,
//! timeout, memory, environment), the WebSocket routes and authorizer, the stream trigger
//! and the table. Intrinsic functions are resolved only as far as the local stack needs;
//! anything the stack cannot resolve is an error naming the resource, except the
//! variables the stack sets itself (see [`LocalValues`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TimeToLiveSpecification,
};
use serde_yaml::Value;
use serde_yaml::value::TaggedValue;

/// The template could not be read or does not describe a deltacast stack.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not YAML.
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// Something the local stack needs is missing or of an unexpected shape.
    #[error("template: {0}")]
    Shape(String),
}

fn shape(message: impl Into<String>) -> TemplateError {
    TemplateError::Shape(message.into())
}

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

impl StackSpec {
    /// Reads and interprets a template file.
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Interprets template text.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let doc: Value = serde_yaml::from_str(text)?;
        let resources = doc
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| shape("no Resources"))?;
        let globals = doc.get("Globals").and_then(|g| g.get("Function"));

        let mut parameter_defaults = BTreeMap::new();
        if let Some(parameters) = doc.get("Parameters").and_then(Value::as_mapping) {
            for (name, parameter) in parameters {
                if let (Some(name), Some(default)) = (name.as_str(), parameter.get("Default")) {
                    parameter_defaults.insert(name.to_owned(), scalar(default).unwrap_or_default());
                }
            }
        }

        let by_type = |kind: &'static str| {
            resources
                .iter()
                .filter(move |(_, r)| r.get("Type").and_then(Value::as_str) == Some(kind))
                .filter_map(|(id, r)| Some((id.as_str()?.to_owned(), r)))
        };

        let mut functions = BTreeMap::new();
        let mut stream_triggers = Vec::new();
        for (id, resource) in by_type("AWS::Serverless::Function") {
            let props = resource.get("Properties");
            let prop = |name: &str| {
                props
                    .and_then(|p| p.get(name))
                    .or_else(|| globals.and_then(|g| g.get(name)))
            };
            let binary = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| shape(format!("{id} has no Metadata.BuildProperties.Binary")))?
                .to_owned();
            let mut environment = BTreeMap::new();
            for source in [globals, props] {
                if let Some(vars) = source
                    .and_then(|s| s.get("Environment"))
                    .and_then(|e| e.get("Variables"))
                    .and_then(Value::as_mapping)
                {
                    for (name, value) in vars {
                        let name = name
                            .as_str()
                            .ok_or_else(|| shape(format!("{id}: bad variable name")))?;
                        environment.insert(name.to_owned(), env_value(value));
                    }
                }
            }
            functions.insert(
                id.clone(),
                FunctionSpec {
                    logical_id: id.clone(),
                    binary,
                    timeout: Duration::from_secs(
                        prop("Timeout").and_then(number).unwrap_or(3.0) as u64
                    ),
                    memory_mb: prop("MemorySize").and_then(number).unwrap_or(128.0) as u64,
                    environment,
                },
            );
            if let Some(events) = props
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping)
            {
                for (_, event) in events {
                    if event.get("Type").and_then(Value::as_str) == Some("DynamoDB") {
                        stream_triggers.push(stream_trigger(&id, event.get("Properties"))?);
                    }
                }
            }
        }

        let (table_logical_id, table) = by_type("AWS::DynamoDB::Table")
            .next()
            .ok_or_else(|| shape("no AWS::DynamoDB::Table"))?;
        let table = table_spec(&table_logical_id, table.get("Properties"))?;

        let api = by_type("AWS::ApiGatewayV2::Api")
            .find(|(_, r)| {
                r.get("Properties")
                    .and_then(|p| p.get("ProtocolType"))
                    .and_then(Value::as_str)
                    == Some("WEBSOCKET")
            })
            .ok_or_else(|| shape("no WEBSOCKET AWS::ApiGatewayV2::Api"))?
            .1;
        let route_selection_expression = api
            .get("Properties")
            .and_then(|p| p.get("RouteSelectionExpression"))
            .and_then(Value::as_str)
            .unwrap_or("$request.body.action")
            .to_owned();

        // Integration logical id → function logical id, via `${Function.Arn}` in its URI.
        let integrations: BTreeMap<String, String> = by_type("AWS::ApiGatewayV2::Integration")
            .filter_map(|(id, r)| {
                let uri = r.get("Properties")?.get("IntegrationUri")?;
                Some((id, function_in_uri(uri)?))
            })
            .collect();
        let mut routes = BTreeMap::new();
        let mut authorizer_ids = Vec::new();
        for (id, route) in by_type("AWS::ApiGatewayV2::Route") {
            let props = route
                .get("Properties")
                .ok_or_else(|| shape(format!("{id} has no Properties")))?;
            let key = props
                .get("RouteKey")
                .and_then(Value::as_str)
                .ok_or_else(|| shape(format!("{id} has no RouteKey")))?;
            let target = props.get("Target").map(intrinsic_text).unwrap_or_default();
            let integration = target
                .strip_prefix("integrations/")
                .map(|t| t.trim_start_matches("${").trim_end_matches('}'))
                .ok_or_else(|| {
                    shape(format!(
                        "{id}: Target must be integrations/${{Integration}}"
                    ))
                })?;
            let function = integrations
                .get(integration)
                .ok_or_else(|| shape(format!("{id}: integration {integration} has no function")))?;
            routes.insert(key.to_owned(), function.clone());
            if let Some(authorizer) = props.get("AuthorizerId") {
                authorizer_ids.push(intrinsic_text(authorizer));
            }
        }
        let mut identity_sources = Vec::new();
        let authorizer = match authorizer_ids.first() {
            None => None,
            Some(id) => {
                let resource = resources
                    .get(id.as_str())
                    .ok_or_else(|| shape(format!("authorizer {id} is not a resource")))?;
                if let Some(sources) = resource
                    .get("Properties")
                    .and_then(|p| p.get("IdentitySource"))
                    .and_then(Value::as_sequence)
                {
                    identity_sources = sources.iter().filter_map(scalar).collect();
                }
                let uri = resource
                    .get("Properties")
                    .and_then(|p| p.get("AuthorizerUri"))
                    .ok_or_else(|| shape(format!("authorizer {id} has no AuthorizerUri")))?;
                Some(
                    function_in_uri(uri)
                        .ok_or_else(|| shape(format!("authorizer {id}: no function in its URI")))?,
                )
            }
        };

        for function in routes
            .values()
            .chain(&authorizer)
            .chain(stream_triggers.iter().map(|t| &t.function))
        {
            if !functions.contains_key(function) {
                return Err(shape(format!(
                    "{function} is used but is not an AWS::Serverless::Function"
                )));
            }
        }
        Ok(Self {
            functions,
            route_selection_expression,
            routes,
            authorizer,
            identity_sources,
            stream_triggers,
            table,
            table_logical_id,
            parameter_defaults,
        })
    }

    /// The environment a function runs with locally: the template's variables resolved
    /// against `local`, then `local.overrides`.
    pub fn environment(
        &self,
        function: &str,
        local: &LocalValues,
    ) -> Result<BTreeMap<String, String>, TemplateError> {
        let spec = self
            .functions
            .get(function)
            .ok_or_else(|| shape(format!("no function {function}")))?;
        let mut resolved = BTreeMap::new();
        for (name, value) in &spec.environment {
            if local.overrides.contains_key(name) {
                continue;
            }
            let text = match value {
                EnvValue::Literal(text) => text.clone(),
                EnvValue::Ref(target) if *target == self.table_logical_id => local.table_name.clone(),
                EnvValue::Ref(target) => local
                    .parameters
                    .get(target)
                    .or_else(|| self.parameter_defaults.get(target))
                    .cloned()
                    .ok_or_else(|| {
                        shape(format!(
                            "{function}: {name} refers to {target}, which has no local value; pass one with --parameter {target}=VALUE"
                        ))
                    })?,
                EnvValue::Intrinsic(text) => {
                    return Err(shape(format!(
                        "{function}: {name} is {text}, which the local stack cannot resolve"
                    )));
                }
            };
            resolved.insert(name.clone(), text);
        }
        resolved.extend(local.overrides.clone());
        Ok(resolved)
    }
}

impl TableSpec {
    /// Creates the table (stream and TTL included) unless it exists. Returns whether it
    /// was created.
    pub async fn create(
        &self,
        client: &Client,
        name: &str,
    ) -> Result<bool, aws_sdk_dynamodb::Error> {
        match client.describe_table().table_name(name).send().await {
            Ok(_) => return Ok(false),
            Err(err) => {
                let err = aws_sdk_dynamodb::Error::from(err);
                if !matches!(err, aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) {
                    return Err(err);
                }
            }
        }
        let mut request = client
            .create_table()
            .table_name(name)
            .billing_mode(BillingMode::PayPerRequest);
        for (attribute, kind) in &self.attributes {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(attribute)
                    .attribute_type(ScalarAttributeType::from(kind.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        for (attribute, kind) in &self.key_schema {
            request = request.key_schema(
                KeySchemaElement::builder()
                    .attribute_name(attribute)
                    .key_type(KeyType::from(kind.as_str()))
                    .build()
                    .expect("name and type are set"),
            );
        }
        if let Some(view) = &self.stream_view_type {
            request = request.stream_specification(
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(view.as_str()))
                    .build()
                    .expect("enabled is set"),
            );
        }
        request.send().await?;
        if let Some(attribute) = &self.ttl_attribute {
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(attribute)
                        .enabled(true)
                        .build()
                        .expect("name and flag are set"),
                )
                .send()
                .await?;
        }
        Ok(true)
    }
}

fn stream_trigger(function: &str, props: Option<&Value>) -> Result<StreamTrigger, TemplateError> {
    let props =
        props.ok_or_else(|| shape(format!("{function}: DynamoDB event has no Properties")))?;
    let get = |name: &str| props.get(name);
    let mut filters = Vec::new();
    if let Some(list) = get("FilterCriteria")
        .and_then(|f| f.get("Filters"))
        .and_then(Value::as_sequence)
    {
        for filter in list {
            let pattern = filter
                .get("Pattern")
                .and_then(Value::as_str)
                .ok_or_else(|| shape(format!("{function}: filter without a Pattern string")))?;
            filters.push(
                serde_json::from_str(pattern)
                    .map_err(|e| shape(format!("{function}: filter pattern is not JSON: {e}")))?,
            );
        }
    }
    let record_age = get("MaximumRecordAgeInSeconds")
        .and_then(number)
        .unwrap_or(-1.0);
    Ok(StreamTrigger {
        function: function.to_owned(),
        batch_size: get("BatchSize").and_then(number).unwrap_or(100.0) as usize,
        batching_window: Duration::from_secs_f64(
            get("MaximumBatchingWindowInSeconds")
                .and_then(number)
                .unwrap_or(0.0),
        ),
        maximum_retry_attempts: get("MaximumRetryAttempts").and_then(number).unwrap_or(-1.0) as i64,
        maximum_record_age: (record_age >= 0.0).then(|| Duration::from_secs_f64(record_age)),
        bisect_on_error: get("BisectBatchOnFunctionError")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        report_batch_item_failures: get("FunctionResponseTypes")
            .and_then(Value::as_sequence)
            .is_some_and(|types| {
                types
                    .iter()
                    .any(|t| t.as_str() == Some("ReportBatchItemFailures"))
            }),
        starting_position: get("StartingPosition")
            .and_then(Value::as_str)
            .unwrap_or("LATEST")
            .to_owned(),
        parallelization_factor: get("ParallelizationFactor").and_then(number).unwrap_or(1.0) as u32,
        filters,
    })
}

fn table_spec(id: &str, props: Option<&Value>) -> Result<TableSpec, TemplateError> {
    let props = props.ok_or_else(|| shape(format!("{id} has no Properties")))?;
    let pairs =
        |list: &str, name: &str, value: &str| -> Result<Vec<(String, String)>, TemplateError> {
            props
                .get(list)
                .and_then(Value::as_sequence)
                .ok_or_else(|| shape(format!("{id} has no {list}")))?
                .iter()
                .map(|entry| {
                    let field = |f: &str| entry.get(f).and_then(Value::as_str).map(str::to_owned);
                    field(name)
                        .zip(field(value))
                        .ok_or_else(|| shape(format!("{id}: malformed {list} entry")))
                })
                .collect()
        };
    let ttl = props.get("TimeToLiveSpecification");
    Ok(TableSpec {
        attributes: pairs("AttributeDefinitions", "AttributeName", "AttributeType")?,
        key_schema: pairs("KeySchema", "AttributeName", "KeyType")?,
        stream_view_type: props
            .get("StreamSpecification")
            .and_then(|s| s.get("StreamViewType"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        ttl_attribute: ttl
            .filter(|t| t.get("Enabled").and_then(Value::as_bool).unwrap_or(false))
            .and_then(|t| t.get("AttributeName"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn env_value(value: &Value) -> EnvValue {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => EnvValue::Ref(intrinsic_text(value)),
        Value::Mapping(m) if m.len() == 1 && m.contains_key("Ref") => {
            EnvValue::Ref(intrinsic_text(value))
        }
        Value::Tagged(_) | Value::Mapping(_) | Value::Sequence(_) => {
            EnvValue::Intrinsic(format!("{value:?}"))
        }
        other => EnvValue::Literal(scalar(other).unwrap_or_default()),
    }
}

/// The text inside a short-form intrinsic (`!Ref X`, `!Sub "..."`) or its long form.
fn intrinsic_text(value: &Value) -> String {
    match value {
        Value::Tagged(tagged) => {
            let TaggedValue { value, .. } = tagged.as_ref();
            intrinsic_text(value)
        }
        Value::Mapping(m) if m.len() == 1 => {
            m.values().next().map(intrinsic_text).unwrap_or_default()
        }
        Value::Sequence(items) => items.first().map(intrinsic_text).unwrap_or_default(),
        other => scalar(other).unwrap_or_default(),
    }
}

/// The function named by `${Function.Arn}` in an integration or authorizer URI.
fn function_in_uri(uri: &Value) -> Option<String> {
    let text = intrinsic_text(uri);
    let start = text.find("/functions/${")? + "/functions/${".len();
    let rest = &text[start..];
    let end = rest.find(".Arn}")?;
    Some(rest[..end].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> StackSpec {
        StackSpec::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml")).unwrap()
    }

    #[test]
    fn reads_the_functions_routes_and_authorizer() {
        let spec = spec();
        assert_eq!(spec.route_selection_expression, "$request.body.action");
        assert_eq!(spec.routes["$connect"], "ConnectFunction");
        assert_eq!(spec.routes["$disconnect"], "DisconnectFunction");
        assert_eq!(spec.routes["$default"], "MessageFunction");
        assert_eq!(spec.authorizer.as_deref(), Some("AuthorizerFunction"));
        let fanout = &spec.functions["FanoutFunction"];
        assert_eq!(fanout.binary, "fanout");
        assert_eq!(
            fanout.timeout,
            Duration::from_secs(60),
            "function setting wins"
        );
        assert_eq!(
            spec.functions["ConnectFunction"].timeout,
            Duration::from_secs(10),
            "global applies"
        );
    }

    #[test]
    fn reads_the_stream_trigger() {
        let spec = spec();
        let trigger = &spec.stream_triggers[0];
        assert_eq!(trigger.function, "FanoutFunction");
        assert!(trigger.bisect_on_error && trigger.report_batch_item_failures);
        assert_eq!(trigger.maximum_retry_attempts, 10);
        assert_eq!(trigger.parallelization_factor, 1);
        assert_eq!(
            trigger.filters,
            [
                serde_json::json!({"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}})
            ]
        );
    }

    #[test]
    fn reads_the_table() {
        let table = spec().table;
        assert_eq!(
            table.key_schema,
            [("pk".into(), "HASH".into()), ("sk".into(), "RANGE".into())]
        );
        assert_eq!(table.stream_view_type.as_deref(), Some("NEW_IMAGE"));
        assert_eq!(table.ttl_attribute.as_deref(), Some("ttl"));
    }

    #[test]
    fn resolves_environments_with_local_values() {
        let spec = spec();
        let local = LocalValues {
            table_name: "local-table".into(),
            parameters: BTreeMap::from([("JwtSecret".into(), "s".repeat(32))]),
            overrides: BTreeMap::from([(
                "MANAGEMENT_ENDPOINT".into(),
                "http://127.0.0.1:3001".into(),
            )]),
        };
        let env = spec.environment("MessageFunction", &local).unwrap();
        assert_eq!(env["TABLE_NAME"], "local-table");
        assert_eq!(env["RETENTION_SECONDS"], "86400");
        assert_eq!(env["MANAGEMENT_ENDPOINT"], "http://127.0.0.1:3001");
        let env = spec.environment("AuthorizerFunction", &local).unwrap();
        assert_eq!(env["JWT_SECRET"], "s".repeat(32));
        assert_eq!(env["JWT_ISSUER"], "");

        let missing = LocalValues {
            table_name: "t".into(),
            ..LocalValues::default()
        };
        let defaults = spec.environment("AuthorizerFunction", &missing).unwrap();
        assert_eq!(
            defaults["JWT_ALGORITHM"], "HS256",
            "parameter defaults apply"
        );
        let err = spec.environment("FanoutFunction", &missing).unwrap_err();
        assert!(err.to_string().contains("MANAGEMENT_ENDPOINT"), "{err}");
    }
}
