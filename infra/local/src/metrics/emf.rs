//! Reading an Embedded Metric Format document, and refusing one that CloudWatch would
//! refuse. The local stack is where a malformed EMF line should be caught: in AWS,
//! CloudWatch Logs drops it quietly (it only counts it in `AWS/Logs`), and the metric is
//! simply missing from dashboards and alarms. So this follows AWS's "Specification:
//! Embedded metric format" to the letter, and each refusal names the rule broken.
//!
//! Members the specification does not define are ignored, as it asks (`_aws` may carry
//! more, a directive too). A metric named by several directives is one metric here; its
//! dimensions are the union of theirs (see [`Metric::dimensions`]).

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::unit::Unit;

/// Dimension keys one dimension set may hold at most.
pub const MAX_DIMENSION_KEYS: usize = 30;
/// Metric definitions one directive may hold at most.
pub const MAX_METRICS: usize = 100;
/// Values one metric's array may hold at most.
pub const MAX_VALUES: usize = 100;
/// The longest metric name, in characters.
pub const MAX_NAME_CHARS: usize = 1024;
/// The longest namespace, in characters.
pub const MAX_NAMESPACE_CHARS: usize = 1024;
/// How much of a name an error quotes: it says which, without copying a whole line.
const QUOTED_CHARS: usize = 64;

/// A document that passed validation: when, and its metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct EmfDocument {
    /// `_aws.Timestamp`: milliseconds since 1970.
    pub timestamp: u64,
    /// One per metric name, in the order they are first defined.
    pub metrics: Vec<Metric>,
}

/// One metric of a document, with its value and its dimensions' values.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    /// The namespace of the first directive that defines it.
    pub namespace: String,
    /// Its `Name`.
    pub name: String,
    /// Its `Unit` (`None` when not given).
    pub unit: Unit,
    /// Its `StorageResolution`: 1 (high resolution) or 60 (the default).
    pub storage_resolution: u8,
    /// Every dimension key of every dimension set of the directives that define it, each
    /// once, in order, with the root member's value.
    pub dimensions: Vec<(String, String)>,
    /// The root member's value.
    pub value: MetricValue,
}

/// What a metric's root member holds.
#[derive(Clone, Debug, PartialEq)]
pub enum MetricValue {
    /// A number.
    Scalar(f64),
    /// An array of numbers (at most [`MAX_VALUES`]).
    Values(Vec<f64>),
}

/// Why a line is not a valid EMF document: the rule it breaks.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum EmfError {
    /// The line is not one JSON text.
    #[error("not a JSON text: {0}")]
    NotJson(String),
    /// The root is an array, a string, a number...
    #[error("the root is not a JSON object")]
    RootNotObject,
    /// No `_aws` member on the root.
    #[error("the root has no `_aws` member")]
    NoMetadata,
    /// `_aws` is not an object.
    #[error("`_aws` is not an object")]
    MetadataNotObject,
    /// `_aws.Timestamp` is missing or not a whole number of milliseconds since 1970.
    #[error("`_aws.Timestamp` must be an integer: milliseconds since 1970")]
    Timestamp,
    /// `_aws.CloudWatchMetrics` is missing or not an array.
    #[error("`_aws.CloudWatchMetrics` must be an array of metric directives")]
    Directives,
    /// A directive is not an object.
    #[error("directive {directive} is not an object")]
    DirectiveNotObject {
        /// Its index in `CloudWatchMetrics`.
        directive: usize,
    },
    /// A directive's `Namespace` is missing, not a string, empty or too long.
    #[error(
        "directive {directive}: `Namespace` must be a string of 1 to {MAX_NAMESPACE_CHARS} characters"
    )]
    Namespace {
        /// Its index in `CloudWatchMetrics`.
        directive: usize,
    },
    /// A directive's `Dimensions` is missing, not an array, or empty.
    #[error("directive {directive}: `Dimensions` must be an array of at least one dimension set")]
    Dimensions {
        /// Its index in `CloudWatchMetrics`.
        directive: usize,
    },
    /// A dimension set is not an array of strings.
    #[error("directive {directive}: dimension set {set} must be an array of strings")]
    DimensionSet {
        /// Its directive's index.
        directive: usize,
        /// Its index in `Dimensions`.
        set: usize,
    },
    /// A dimension set holds too many keys.
    #[error(
        "directive {directive}: dimension set {set} has {keys} keys, more than {MAX_DIMENSION_KEYS}"
    )]
    TooManyDimensionKeys {
        /// Its directive's index.
        directive: usize,
        /// Its index in `Dimensions`.
        set: usize,
        /// How many it has.
        keys: usize,
    },
    /// A dimension key has no member on the root.
    #[error("dimension `{key}` has no member on the root")]
    NoDimensionMember {
        /// The key (its start, when long).
        key: String,
    },
    /// A dimension's root member is not a string.
    #[error("dimension `{key}` must have a string value")]
    DimensionNotString {
        /// The key (its start, when long).
        key: String,
    },
    /// A directive's `Metrics` is missing or not an array.
    #[error("directive {directive}: `Metrics` must be an array of metric definitions")]
    Metrics {
        /// Its index in `CloudWatchMetrics`.
        directive: usize,
    },
    /// A directive defines too many metrics.
    #[error("directive {directive} defines {metrics} metrics, more than {MAX_METRICS}")]
    TooManyMetrics {
        /// Its index in `CloudWatchMetrics`.
        directive: usize,
        /// How many it defines.
        metrics: usize,
    },
    /// A metric definition is not an object.
    #[error("directive {directive}: metric definition {metric} is not an object")]
    DefinitionNotObject {
        /// Its directive's index.
        directive: usize,
        /// Its index in `Metrics`.
        metric: usize,
    },
    /// A metric's `Name` is missing, not a string, empty or too long.
    #[error(
        "directive {directive}: metric definition {metric}: `Name` must be a string of 1 to {MAX_NAME_CHARS} characters"
    )]
    MetricName {
        /// Its directive's index.
        directive: usize,
        /// Its index in `Metrics`.
        metric: usize,
    },
    /// A metric's `Unit` is not one of CloudWatch's units.
    #[error("metric `{name}`: `Unit` {unit} is not a CloudWatch unit")]
    Unit {
        /// The metric (its start, when long).
        name: String,
        /// The unit given, as JSON (its start, when long).
        unit: String,
    },
    /// A metric's `StorageResolution` is neither 1 nor 60.
    #[error("metric `{name}`: `StorageResolution` must be 1 or 60")]
    StorageResolution {
        /// The metric (its start, when long).
        name: String,
    },
    /// A metric has no member on the root.
    #[error("metric `{name}` has no member on the root")]
    NoMetricMember {
        /// The metric (its start, when long).
        name: String,
    },
    /// A metric's root member is not a number or an array of numbers.
    #[error("metric `{name}` must have a number or an array of numbers")]
    MetricNotNumeric {
        /// The metric (its start, when long).
        name: String,
    },
    /// A metric's array holds too many values.
    #[error("metric `{name}` has {values} values, more than {MAX_VALUES}")]
    TooManyValues {
        /// The metric (its start, when long).
        name: String,
        /// How many it has.
        values: usize,
    },
}

impl EmfDocument {
    /// Reads one line as an EMF document, or says which rule it breaks.
    pub fn parse(line: &str) -> Result<Self, EmfError> {
        let root: Value =
            serde_json::from_str(line).map_err(|err| EmfError::NotJson(err.to_string()))?;
        Self::from_json(&root)
    }

    /// Validates a parsed JSON value as an EMF document.
    pub fn from_json(root: &Value) -> Result<Self, EmfError> {
        let root = root.as_object().ok_or(EmfError::RootNotObject)?;
        let metadata = root
            .get("_aws")
            .ok_or(EmfError::NoMetadata)?
            .as_object()
            .ok_or(EmfError::MetadataNotObject)?;
        let timestamp = metadata
            .get("Timestamp")
            .and_then(Value::as_u64)
            .ok_or(EmfError::Timestamp)?;
        let directives = metadata
            .get("CloudWatchMetrics")
            .and_then(Value::as_array)
            .ok_or(EmfError::Directives)?;
        let mut metrics: Vec<Metric> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (index, directive) in directives.iter().enumerate() {
            let directive = Directive::read(index, directive, root)?;
            for definition in directive.metrics {
                match by_name.get(&definition.name) {
                    Some(&at) => merge_dimensions(&mut metrics[at], &directive.dimensions),
                    None => {
                        let value = metric_value(root, &definition.name)?;
                        by_name.insert(definition.name.clone(), metrics.len());
                        metrics.push(Metric {
                            namespace: directive.namespace.clone(),
                            name: definition.name,
                            unit: definition.unit,
                            storage_resolution: definition.storage_resolution,
                            dimensions: directive.dimensions.clone(),
                            value,
                        });
                    }
                }
            }
        }
        Ok(Self { timestamp, metrics })
    }
}

/// A directive, read and checked.
struct Directive {
    namespace: String,
    /// Its dimension keys (every set's, each once) with their root values.
    dimensions: Vec<(String, String)>,
    metrics: Vec<Definition>,
}

/// A metric definition, read and checked.
struct Definition {
    name: String,
    unit: Unit,
    storage_resolution: u8,
}

impl Directive {
    fn read(directive: usize, value: &Value, root: &Map<String, Value>) -> Result<Self, EmfError> {
        let object = value
            .as_object()
            .ok_or(EmfError::DirectiveNotObject { directive })?;
        let namespace = object
            .get("Namespace")
            .and_then(Value::as_str)
            .filter(|namespace| (1..=MAX_NAMESPACE_CHARS).contains(&namespace.chars().count()))
            .ok_or(EmfError::Namespace { directive })?
            .to_owned();
        let sets = object
            .get("Dimensions")
            .and_then(Value::as_array)
            .filter(|sets| !sets.is_empty())
            .ok_or(EmfError::Dimensions { directive })?;
        let mut dimensions: Vec<(String, String)> = Vec::new();
        for (set, keys) in sets.iter().enumerate() {
            let keys = keys
                .as_array()
                .ok_or(EmfError::DimensionSet { directive, set })?;
            if keys.len() > MAX_DIMENSION_KEYS {
                return Err(EmfError::TooManyDimensionKeys {
                    directive,
                    set,
                    keys: keys.len(),
                });
            }
            for key in keys {
                let key = key
                    .as_str()
                    .ok_or(EmfError::DimensionSet { directive, set })?;
                let value = dimension_value(root, key)?;
                if !dimensions.iter().any(|(known, _)| known == key) {
                    dimensions.push((key.to_owned(), value.to_owned()));
                }
            }
        }
        let definitions = object
            .get("Metrics")
            .and_then(Value::as_array)
            .ok_or(EmfError::Metrics { directive })?;
        if definitions.len() > MAX_METRICS {
            return Err(EmfError::TooManyMetrics {
                directive,
                metrics: definitions.len(),
            });
        }
        let metrics = definitions
            .iter()
            .enumerate()
            .map(|(metric, definition)| Definition::read(directive, metric, definition))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace,
            dimensions,
            metrics,
        })
    }
}

impl Definition {
    fn read(directive: usize, metric: usize, value: &Value) -> Result<Self, EmfError> {
        let object = value
            .as_object()
            .ok_or(EmfError::DefinitionNotObject { directive, metric })?;
        let name = object
            .get("Name")
            .and_then(Value::as_str)
            .filter(|name| (1..=MAX_NAME_CHARS).contains(&name.chars().count()))
            .ok_or(EmfError::MetricName { directive, metric })?
            .to_owned();
        let unit = match object.get("Unit") {
            None => Unit::None,
            Some(unit) => unit
                .as_str()
                .and_then(Unit::parse)
                .ok_or_else(|| EmfError::Unit {
                    name: quoted(&name),
                    unit: quoted(&unit.to_string()),
                })?,
        };
        let storage_resolution = match object.get("StorageResolution") {
            None => 60,
            Some(resolution) => match resolution.as_u64() {
                Some(1) => 1,
                Some(60) => 60,
                _ => {
                    return Err(EmfError::StorageResolution {
                        name: quoted(&name),
                    });
                }
            },
        };
        Ok(Self {
            name,
            unit,
            storage_resolution,
        })
    }
}

/// The string value of dimension `key`'s root member.
fn dimension_value<'a>(root: &'a Map<String, Value>, key: &str) -> Result<&'a str, EmfError> {
    root.get(key)
        .ok_or_else(|| EmfError::NoDimensionMember { key: quoted(key) })?
        .as_str()
        .ok_or_else(|| EmfError::DimensionNotString { key: quoted(key) })
}

/// The value of metric `name`'s root member.
fn metric_value(root: &Map<String, Value>, name: &str) -> Result<MetricValue, EmfError> {
    let not_numeric = || EmfError::MetricNotNumeric { name: quoted(name) };
    match root
        .get(name)
        .ok_or_else(|| EmfError::NoMetricMember { name: quoted(name) })?
    {
        Value::Number(number) => number
            .as_f64()
            .map(MetricValue::Scalar)
            .ok_or_else(not_numeric),
        Value::Array(values) => {
            if values.len() > MAX_VALUES {
                return Err(EmfError::TooManyValues {
                    name: quoted(name),
                    values: values.len(),
                });
            }
            values
                .iter()
                .map(|value| value.as_f64().ok_or_else(not_numeric))
                .collect::<Result<_, _>>()
                .map(MetricValue::Values)
        }
        _ => Err(not_numeric()),
    }
}

/// Adds the keys of another directive that defines the same metric.
fn merge_dimensions(metric: &mut Metric, dimensions: &[(String, String)]) {
    for (key, value) in dimensions {
        if !metric.dimensions.iter().any(|(known, _)| known == key) {
            metric.dimensions.push((key.clone(), value.clone()));
        }
    }
}

/// The start of `text`, enough to say which name is meant.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}
