//! Interpreting `template.yaml`: resources, Globals, routes, the authorizer, stream events
//! and the table, with intrinsic functions resolved only as far as the local stack needs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml::Value;
use serde_yaml::value::TaggedValue;

use super::error::{TemplateError, shape};
use super::spec::{EnvValue, FunctionSpec, StackSpec, StreamTrigger, TableSpec};

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
        let mut function_urls = Vec::new();
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
            if props.and_then(|p| p.get("FunctionUrlConfig")).is_some() {
                function_urls.push(id.clone());
            }
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
        if function_urls.len() > 1 {
            return Err(shape(format!(
                "the local stack serves one function URL under /v1/; {} have a FunctionUrlConfig",
                function_urls.join(", ")
            )));
        }
        Ok(Self {
            functions,
            http_api: function_urls.pop(),
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
