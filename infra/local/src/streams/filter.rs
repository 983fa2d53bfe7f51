//! Lambda event filtering: the `FilterCriteria` of an event source mapping, applied to
//! each stream record before it joins a batch.
//!
//! Lambda uses EventBridge's pattern language. A pattern is a JSON object shaped like the
//! record it filters: every key names a field, a nested object descends into the field,
//! and an array lists the rules a leaf value may satisfy (any one is enough). All the keys
//! of a pattern must match (AND); the filters of a mapping are alternatives (OR), and a
//! record that satisfies none is dropped. For DynamoDB the record is the one the function
//! receives (`eventName`, `dynamodb.Keys`, `dynamodb.NewImage`, ...), so attribute values
//! keep their DynamoDB-JSON type wrapper: `{"dynamodb": {"Keys": {"sk": {"S": [...]}}}}`.
//!
//! Rules, as the Lambda and EventBridge guides describe them:
//! - a string, number, boolean or `null` matches that exact value (numbers by their
//!   text: `300` is not `300.0`; a DynamoDB `N` is a string, so it matches `"300"`);
//! - `{"prefix": "p"}`, `{"suffix": "s"}` (either may take `{"equals-ignore-case": ..}`),
//!   `{"equals-ignore-case": "v"}` match strings only;
//! - `{"anything-but": v | [v, ..] | {"prefix"|"suffix"|"equals-ignore-case": ..}}`
//!   matches a present value that is none of those;
//! - `{"numeric": [">", 10, "<=", 20]}` matches JSON numbers within every bound (so never
//!   a DynamoDB `N`, which is a string);
//! - `{"exists": true|false}` asks whether the field holds a leaf value; like EventBridge,
//!   an object is not a leaf, so `exists` belongs on `{"S": [...]}`, not on the attribute;
//! - `"$or": [pattern, ..]` inside a pattern: any of the sub-patterns.
//!
//! When the event holds an array, the field matches if any element does. Patterns are
//! checked once ([`FilterCriteria::new`]), the way Lambda rejects a bad pattern when the
//! mapping is created; [`matches()`] is the one-call form.

use serde_json::{Map, Number, Value};

/// A filter pattern Lambda would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The pattern (or a nested part of it) is not a JSON object.
    #[error("filter pattern {path}: expected an object, found {found}")]
    NotAnObject {
        /// Where in the pattern (`$` is its top).
        path: String,
        /// What was there instead.
        found: String,
    },
    /// A field's value is neither an object nor an array of rules.
    #[error("filter pattern {path}: expected an object or an array of rules, found {found}")]
    NotRules {
        /// Where in the pattern.
        path: String,
        /// What was there instead.
        found: String,
    },
    /// A rule object that is not one of the operators Lambda supports, or is malformed.
    #[error("filter pattern {path}: {message}")]
    BadRule {
        /// Where in the pattern.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// A set of filter patterns; a record passes if it matches any of them (or if there are
/// none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterCriteria {
    patterns: Vec<Pattern>,
}

impl FilterCriteria {
    /// Checks and compiles `FilterCriteria.Filters[].Pattern` (already parsed as JSON).
    pub fn new(patterns: &[Value]) -> Result<Self, FilterError> {
        let patterns = patterns
            .iter()
            .map(|pattern| Pattern::parse(pattern, "$"))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// Whether `record` passes: some pattern matches it, or there are no patterns.
    pub fn matches(&self, record: &Value) -> bool {
        self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(Some(record)))
    }

    /// Whether there are no patterns (every record passes).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

/// Whether `record` passes `filters` (true when `filters` is empty). A pattern Lambda
/// would refuse matches nothing; use [`FilterCriteria::new`] to learn why.
pub fn matches(filters: &[Value], record: &Value) -> bool {
    filters.is_empty()
        || filters.iter().any(|pattern| {
            Pattern::parse(pattern, "$").is_ok_and(|pattern| pattern.matches(Some(record)))
        })
}

/// An object pattern: every field must match, and one of each `$or` group.
#[derive(Clone, Debug, PartialEq)]
struct Pattern {
    fields: Vec<(String, FieldPattern)>,
    any_of: Vec<Vec<Pattern>>,
}

/// What a pattern says about one field.
#[derive(Clone, Debug, PartialEq)]
enum FieldPattern {
    /// Descend into the field.
    Nested(Pattern),
    /// The field's leaf values must satisfy one of these.
    Rules(Vec<Rule>),
}

/// One entry of a rule array.
#[derive(Clone, Debug, PartialEq)]
enum Rule {
    /// This exact string, number (by its text), boolean or null.
    Exact(Value),
    /// A string with this start, end, or equal to this ignoring case.
    Text(TextMatch),
    /// A value present and equal to none of these, or a string not matching.
    AnythingBut(Exclusion),
    /// A number within every bound.
    Numeric(Vec<(Comparison, f64)>),
    /// The field holds a leaf value (true) or does not (false).
    Exists(bool),
}

/// The string operators, which `anything-but` can also negate.
#[derive(Clone, Debug, PartialEq)]
enum TextMatch {
    Prefix { text: String, ignore_case: bool },
    Suffix { text: String, ignore_case: bool },
    EqualsIgnoreCase(String),
}

/// What `anything-but` excludes.
#[derive(Clone, Debug, PartialEq)]
enum Exclusion {
    Values(Vec<Value>),
    Text(Vec<TextMatch>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comparison {
    Equal,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

fn describe(value: &Value) -> String {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    kind.to_owned()
}

fn bad_rule(path: &str, message: impl Into<String>) -> FilterError {
    FilterError::BadRule {
        path: path.to_owned(),
        message: message.into(),
    }
}

impl Pattern {
    fn parse(value: &Value, path: &str) -> Result<Self, FilterError> {
        let object = value.as_object().ok_or_else(|| FilterError::NotAnObject {
            path: path.to_owned(),
            found: describe(value),
        })?;
        let mut fields = Vec::new();
        let mut any_of = Vec::new();
        for (key, value) in object {
            let path = format!("{path}.{key}");
            if key == "$or" {
                let alternatives = value
                    .as_array()
                    .filter(|alternatives| !alternatives.is_empty())
                    .ok_or_else(|| bad_rule(&path, "$or takes a non-empty array of patterns"))?;
                any_of.push(
                    alternatives
                        .iter()
                        .enumerate()
                        .map(|(i, alternative)| {
                            Pattern::parse(alternative, &format!("{path}[{i}]"))
                        })
                        .collect::<Result<_, _>>()?,
                );
                continue;
            }
            let field = match value {
                Value::Object(_) => FieldPattern::Nested(Pattern::parse(value, &path)?),
                Value::Array(rules) => FieldPattern::Rules(
                    rules
                        .iter()
                        .enumerate()
                        .map(|(i, rule)| Rule::parse(rule, &format!("{path}[{i}]")))
                        .collect::<Result<_, _>>()?,
                ),
                other => {
                    return Err(FilterError::NotRules {
                        path,
                        found: describe(other),
                    });
                }
            };
            fields.push((key.clone(), field));
        }
        Ok(Self { fields, any_of })
    }

    /// Matches against an event object, or against nothing (a missing or non-object
    /// value), which only `exists: false` rules accept.
    fn matches(&self, event: Option<&Value>) -> bool {
        let object = event.and_then(Value::as_object);
        self.fields
            .iter()
            .all(|(key, field)| field.matches(object.and_then(|o| o.get(key))))
            && self
                .any_of
                .iter()
                .all(|alternatives| alternatives.iter().any(|p| p.matches(event)))
    }
}

impl FieldPattern {
    fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            FieldPattern::Nested(pattern) => match value {
                // An array of objects matches if one element does, all fields from that one.
                Some(Value::Array(items)) if items.iter().any(Value::is_object) => items
                    .iter()
                    .filter(|item| item.is_object())
                    .any(|item| pattern.matches(Some(item))),
                Some(value @ Value::Object(_)) => pattern.matches(Some(value)),
                _ => pattern.matches(None),
            },
            FieldPattern::Rules(rules) => {
                let mut leaves = Vec::new();
                collect_leaves(value, &mut leaves);
                rules.iter().any(|rule| rule.matches(&leaves))
            }
        }
    }
}

/// The leaf (non-object, non-array) values a field holds: itself, or its array's
/// elements, flattened.
fn collect_leaves<'a>(value: Option<&'a Value>, leaves: &mut Vec<&'a Value>) {
    match value {
        None | Some(Value::Object(_)) => {}
        Some(Value::Array(items)) => {
            for item in items {
                collect_leaves(Some(item), leaves);
            }
        }
        Some(leaf) => leaves.push(leaf),
    }
}

impl Rule {
    fn parse(value: &Value, path: &str) -> Result<Self, FilterError> {
        let object = match value {
            Value::Object(object) => object,
            Value::Array(_) => return Err(bad_rule(path, "a rule cannot be an array")),
            exact => return Ok(Rule::Exact(exact.clone())),
        };
        let mut entries = object.iter();
        let (operator, operand) = match (entries.next(), entries.next()) {
            (Some(entry), None) => entry,
            _ => return Err(bad_rule(path, "a rule object holds exactly one operator")),
        };
        match operator.as_str() {
            "prefix" | "suffix" | "equals-ignore-case" => {
                Ok(Rule::Text(TextMatch::parse(operator, operand, path)?))
            }
            "anything-but" => Ok(Rule::AnythingBut(Exclusion::parse(operand, path)?)),
            "numeric" => Ok(Rule::Numeric(parse_numeric(operand, path)?)),
            "exists" => operand
                .as_bool()
                .map(Rule::Exists)
                .ok_or_else(|| bad_rule(path, "exists takes true or false")),
            other => Err(bad_rule(
                path,
                format!(
                    "unsupported operator {other:?} (Lambda supports prefix, suffix, equals-ignore-case, anything-but, numeric, exists)"
                ),
            )),
        }
    }

    fn matches(&self, leaves: &[&Value]) -> bool {
        match self {
            Rule::Exists(wanted) => leaves.is_empty() != *wanted,
            Rule::Exact(expected) => leaves.iter().any(|leaf| same_value(leaf, expected)),
            Rule::Text(text) => leaves
                .iter()
                .any(|leaf| leaf.as_str().is_some_and(|s| text.matches(s))),
            Rule::AnythingBut(exclusion) => leaves.iter().any(|leaf| !exclusion.excludes(leaf)),
            Rule::Numeric(bounds) => leaves.iter().any(|leaf| {
                leaf.as_f64().filter(|_| leaf.is_number()).is_some_and(|n| {
                    bounds
                        .iter()
                        .all(|(comparison, bound)| comparison.holds(n, *bound))
                })
            }),
        }
    }
}

impl TextMatch {
    fn parse(operator: &str, operand: &Value, path: &str) -> Result<Self, FilterError> {
        let (text, ignore_case) = match operand {
            Value::String(text) => (text.clone(), false),
            Value::Object(inner) if operator != "equals-ignore-case" => match single_entry(inner) {
                Some(("equals-ignore-case", Value::String(text))) => (text.clone(), true),
                _ => {
                    return Err(bad_rule(
                        path,
                        format!("{operator} takes a string or {{\"equals-ignore-case\": string}}"),
                    ));
                }
            },
            _ => return Err(bad_rule(path, format!("{operator} takes a string"))),
        };
        Ok(match operator {
            "prefix" => TextMatch::Prefix { text, ignore_case },
            "suffix" => TextMatch::Suffix { text, ignore_case },
            _ => TextMatch::EqualsIgnoreCase(text),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            TextMatch::Prefix {
                text,
                ignore_case: false,
            } => value.starts_with(text.as_str()),
            TextMatch::Suffix {
                text,
                ignore_case: false,
            } => value.ends_with(text.as_str()),
            TextMatch::Prefix {
                text,
                ignore_case: true,
            } => value.to_lowercase().starts_with(&text.to_lowercase()),
            TextMatch::Suffix {
                text,
                ignore_case: true,
            } => value.to_lowercase().ends_with(&text.to_lowercase()),
            TextMatch::EqualsIgnoreCase(text) => value.to_lowercase() == text.to_lowercase(),
        }
    }
}

impl Exclusion {
    fn parse(operand: &Value, path: &str) -> Result<Self, FilterError> {
        match operand {
            Value::Array(values) if values.iter().all(is_scalar) && !values.is_empty() => {
                Ok(Exclusion::Values(values.clone()))
            }
            Value::Object(inner) => {
                let (operator, operand) = single_entry(inner)
                    .filter(|(operator, _)| matches!(*operator, "prefix" | "suffix" | "equals-ignore-case"))
                    .ok_or_else(|| {
                        bad_rule(path, "anything-but takes a value, a list, or one of prefix, suffix, equals-ignore-case")
                    })?;
                let texts = match (operator, operand) {
                    // `{"anything-but": {"equals-ignore-case": ["a", "b"]}}` excludes several.
                    ("equals-ignore-case", Value::Array(items)) if !items.is_empty() => items
                        .iter()
                        .map(|item| TextMatch::parse(operator, item, path))
                        .collect::<Result<_, _>>()?,
                    _ => vec![TextMatch::parse(operator, operand, path)?],
                };
                Ok(Exclusion::Text(texts))
            }
            scalar if is_scalar(scalar) => Ok(Exclusion::Values(vec![scalar.clone()])),
            _ => Err(bad_rule(
                path,
                "anything-but takes a value or a non-empty list of values",
            )),
        }
    }

    fn excludes(&self, leaf: &Value) -> bool {
        match self {
            Exclusion::Values(values) => values.iter().any(|v| same_value(leaf, v)),
            Exclusion::Text(texts) => leaf
                .as_str()
                .is_some_and(|s| texts.iter().any(|t| t.matches(s))),
        }
    }
}

fn parse_numeric(operand: &Value, path: &str) -> Result<Vec<(Comparison, f64)>, FilterError> {
    let items = operand
        .as_array()
        .filter(|items| !items.is_empty() && items.len() % 2 == 0)
        .ok_or_else(|| {
            bad_rule(
                path,
                "numeric takes [operator, number] pairs, e.g. [\">\", 0, \"<=\", 5]",
            )
        })?;
    items
        .chunks(2)
        .map(|pair| {
            let comparison = match pair[0].as_str() {
                Some("=") => Comparison::Equal,
                Some("<") => Comparison::Less,
                Some("<=") => Comparison::LessOrEqual,
                Some(">") => Comparison::Greater,
                Some(">=") => Comparison::GreaterOrEqual,
                _ => {
                    return Err(bad_rule(
                        path,
                        format!("numeric: unknown operator {}", pair[0]),
                    ));
                }
            };
            let bound = pair[1]
                .as_f64()
                .filter(|_| pair[1].is_number())
                .ok_or_else(|| bad_rule(path, format!("numeric: {} is not a number", pair[1])))?;
            Ok((comparison, bound))
        })
        .collect()
}

impl Comparison {
    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Comparison::Equal => value == bound,
            Comparison::Less => value < bound,
            Comparison::LessOrEqual => value <= bound,
            Comparison::Greater => value > bound,
            Comparison::GreaterOrEqual => value >= bound,
        }
    }
}

fn single_entry(object: &Map<String, Value>) -> Option<(&str, &Value)> {
    let mut entries = object.iter();
    match (entries.next(), entries.next()) {
        (Some((key, value)), None) => Some((key.as_str(), value)),
        _ => None,
    }
}

fn is_scalar(value: &Value) -> bool {
    !matches!(value, Value::Array(_) | Value::Object(_))
}

/// Exact equality as Lambda documents it: same type, and numbers by their text.
fn same_value(leaf: &Value, expected: &Value) -> bool {
    match (leaf, expected) {
        (Value::Number(a), Value::Number(b)) => number_text(a) == number_text(b),
        (a, b) => a == b,
    }
}

fn number_text(number: &Number) -> String {
    number.to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A DynamoDB stream record in the shape Lambda filters and delivers.
    fn record(event_name: &str, sk: &str) -> Value {
        json!({
            "eventID": "1",
            "eventName": event_name,
            "eventVersion": "1.1",
            "eventSource": "aws:dynamodb",
            "awsRegion": "us-east-1",
            "dynamodb": {
                "ApproximateCreationDateTime": 1_700_000_000.0,
                "Keys": {"pk": {"S": "c#news"}, "sk": {"S": sk}},
                "NewImage": {
                    "pk": {"S": "c#news"},
                    "sk": {"S": sk},
                    "seq": {"N": "42"},
                    "tags": {"SS": ["red", "blue"]},
                    "urgent": {"BOOL": true},
                    "note": {"NULL": true}
                },
                "SequenceNumber": "100",
                "SizeBytes": 40,
                "StreamViewType": "NEW_IMAGE"
            },
            "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/t/stream/x"
        })
    }

    fn passes(pattern: Value, event: &Value) -> bool {
        FilterCriteria::new(&[pattern])
            .expect("pattern is valid")
            .matches(event)
    }

    #[test]
    fn the_templates_filter_passes_only_delta_inserts() {
        let filter = json!({"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}});
        assert!(passes(filter.clone(), &record("INSERT", "d#000001")));
        assert!(!passes(filter.clone(), &record("MODIFY", "d#000001")));
        assert!(!passes(filter.clone(), &record("REMOVE", "d#000001")));
        assert!(!passes(filter, &record("INSERT", "s#conn")));
    }

    #[test]
    fn no_filters_pass_everything() {
        assert!(matches(&[], &record("REMOVE", "x")));
        assert!(FilterCriteria::new(&[]).unwrap().is_empty());
    }

    #[test]
    fn several_filters_are_alternatives() {
        let filters = [
            json!({"eventName": ["REMOVE"]}),
            json!({"eventName": ["INSERT"]}),
        ];
        assert!(matches(&filters, &record("INSERT", "a")));
        assert!(matches(&filters, &record("REMOVE", "a")));
        assert!(!matches(&filters, &record("MODIFY", "a")));
    }

    #[test]
    fn exact_values_of_every_type() {
        let event = json!({"s": "Alice", "n": 300, "f": 1.5, "t": true, "z": null, "e": ""});
        assert!(
            passes(json!({"s": ["Bob", "Alice"]}), &event),
            "or within the array"
        );
        assert!(!passes(json!({"s": ["alice"]}), &event), "case matters");
        assert!(passes(json!({"n": [300]}), &event));
        assert!(
            !passes(json!({"n": [300.0]}), &event),
            "numbers compare by their text"
        );
        assert!(
            !passes(json!({"n": ["300"]}), &event),
            "a string is not a number"
        );
        assert!(passes(json!({"f": [1.5]}), &event));
        assert!(passes(json!({"t": [true]}), &event));
        assert!(!passes(json!({"t": [false]}), &event));
        assert!(passes(json!({"z": [null]}), &event), "null matches null");
        assert!(
            !passes(json!({"missing": [null]}), &event),
            "null does not match a missing field"
        );
        assert!(passes(json!({"e": [""]}), &event), "empty string");
        assert!(!passes(json!({"s": [""]}), &event));
    }

    #[test]
    fn all_fields_of_a_pattern_must_match() {
        let event = record("INSERT", "d#1");
        assert!(passes(
            json!({"eventName": ["INSERT"], "awsRegion": ["us-east-1"]}),
            &event
        ));
        assert!(!passes(
            json!({"eventName": ["INSERT"], "awsRegion": ["eu-west-1"]}),
            &event
        ));
        assert!(
            !passes(json!({"noSuchField": ["x"]}), &event),
            "a named field must be there"
        );
    }

    #[test]
    fn nested_objects_descend() {
        let event = record("INSERT", "d#1");
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"pk": {"S": ["c#news"]}}}}),
            &event
        ));
        assert!(!passes(
            json!({"dynamodb": {"NewImage": {"pk": {"N": ["c#news"]}}}}),
            &event
        ));
        assert!(
            !passes(json!({"eventName": {"S": ["INSERT"]}}), &event),
            "a scalar has no fields"
        );
    }

    #[test]
    fn prefix_and_suffix() {
        let event = json!({"file": "Photo.PNG"});
        assert!(passes(json!({"file": [{"prefix": "Photo"}]}), &event));
        assert!(!passes(json!({"file": [{"prefix": "photo"}]}), &event));
        assert!(passes(
            json!({"file": [{"prefix": {"equals-ignore-case": "photo"}}]}),
            &event
        ));
        assert!(passes(json!({"file": [{"suffix": ".PNG"}]}), &event));
        assert!(!passes(json!({"file": [{"suffix": ".png"}]}), &event));
        assert!(passes(
            json!({"file": [{"suffix": {"equals-ignore-case": ".png"}}]}),
            &event
        ));
        assert!(
            !passes(json!({"n": [{"prefix": "1"}]}), &json!({"n": 12})),
            "strings only"
        );
    }

    #[test]
    fn equals_ignore_case() {
        let event = json!({"name": "ALICE"});
        assert!(passes(
            json!({"name": [{"equals-ignore-case": "alice"}]}),
            &event
        ));
        assert!(!passes(
            json!({"name": [{"equals-ignore-case": "alicia"}]}),
            &event
        ));
    }

    #[test]
    fn anything_but_values_and_lists() {
        let event = json!({"weather": "Raining", "n": 5});
        assert!(!passes(
            json!({"weather": [{"anything-but": "Raining"}]}),
            &event
        ));
        assert!(!passes(
            json!({"weather": [{"anything-but": ["Snowing", "Raining"]}]}),
            &event
        ));
        assert!(passes(
            json!({"weather": [{"anything-but": ["Snowing"]}]}),
            &event
        ));
        assert!(!passes(json!({"n": [{"anything-but": [5]}]}), &event));
        assert!(passes(json!({"n": [{"anything-but": [6]}]}), &event));
        assert!(
            !passes(json!({"missing": [{"anything-but": "x"}]}), &event),
            "anything-but needs the field to be there"
        );
    }

    #[test]
    fn anything_but_prefix_suffix_and_ignore_case() {
        let event = json!({"region": "us-east-1"});
        assert!(!passes(
            json!({"region": [{"anything-but": {"prefix": "us-"}}]}),
            &event
        ));
        assert!(passes(
            json!({"region": [{"anything-but": {"prefix": "eu-"}}]}),
            &event
        ));
        assert!(!passes(
            json!({"region": [{"anything-but": {"suffix": "-1"}}]}),
            &event
        ));
        assert!(passes(
            json!({"region": [{"anything-but": {"suffix": "-2"}}]}),
            &event
        ));
        assert!(!passes(
            json!({"region": [{"anything-but": {"equals-ignore-case": "US-EAST-1"}}]}),
            &event
        ));
        assert!(!passes(
            json!({"region": [{"anything-but": {"equals-ignore-case": ["x", "US-EAST-1"]}}]}),
            &event
        ));
        assert!(passes(
            json!({"region": [{"anything-but": {"equals-ignore-case": "us-west-2"}}]}),
            &event
        ));
    }

    #[test]
    fn numeric_comparisons_and_ranges() {
        let event = json!({"price": 15, "text": "15"});
        for (rule, expected) in [
            (json!(["=", 15]), true),
            (json!(["=", 16]), false),
            (json!(["<", 16]), true),
            (json!(["<", 15]), false),
            (json!(["<=", 15]), true),
            (json!([">", 14.5]), true),
            (json!([">", 15]), false),
            (json!([">=", 15]), true),
            (json!([">", 10, "<=", 20]), true),
            (json!([">", 10, "<=", 15]), true),
            (json!([">", 15, "<=", 20]), false),
        ] {
            assert_eq!(
                passes(json!({"price": [{"numeric": rule.clone()}]}), &event),
                expected,
                "{rule}"
            );
        }
        assert!(
            !passes(json!({"text": [{"numeric": [">", 0]}]}), &event),
            "numbers only"
        );
        assert!(
            !passes(
                json!({"dynamodb": {"NewImage": {"seq": {"N": [{"numeric": [">", 0]}]}}}}),
                &record("INSERT", "d#1")
            ),
            "a DynamoDB N is a string, so numeric never matches it"
        );
    }

    #[test]
    fn exists_true_and_false() {
        let event = record("INSERT", "d#1");
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"seq": {"N": [{"exists": true}]}}}}),
            &event
        ));
        assert!(!passes(
            json!({"dynamodb": {"NewImage": {"gone": {"S": [{"exists": true}]}}}}),
            &event
        ));
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"gone": {"S": [{"exists": false}]}}}}),
            &event
        ));
        assert!(!passes(
            json!({"dynamodb": {"NewImage": {"seq": {"N": [{"exists": false}]}}}}),
            &event
        ));
        assert!(
            passes(
                json!({"dynamodb": {"OldImage": {"seq": {"N": [{"exists": false}]}}}}),
                &event
            ),
            "a whole missing branch does not exist either"
        );
        assert!(
            !passes(
                json!({"dynamodb": {"NewImage": {"seq": [{"exists": true}]}}}),
                &event
            ),
            "exists looks at leaves: an attribute's type wrapper is an object"
        );
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"note": {"NULL": [{"exists": true}]}}}}),
            &event
        ));
    }

    #[test]
    fn arrays_in_the_event_match_if_any_element_does() {
        let event = record("INSERT", "d#1");
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"tags": {"SS": ["blue"]}}}}),
            &event
        ));
        assert!(!passes(
            json!({"dynamodb": {"NewImage": {"tags": {"SS": ["green"]}}}}),
            &event
        ));
        assert!(passes(
            json!({"dynamodb": {"NewImage": {"tags": {"SS": [{"prefix": "bl"}]}}}}),
            &event
        ));
        let objects = json!({"items": [{"a": 1, "b": 2}, {"a": 3, "b": 4}]});
        assert!(passes(json!({"items": {"a": [3], "b": [4]}}), &objects));
        assert!(
            !passes(json!({"items": {"a": [1], "b": [4]}}), &objects),
            "fields come from one element"
        );
        assert!(
            !passes(json!({"list": [{"exists": true}]}), &json!({"list": []})),
            "an empty array holds no leaf"
        );
    }

    #[test]
    fn or_across_fields() {
        let pattern = json!({"$or": [{"eventName": ["REMOVE"]}, {"dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}}]});
        assert!(passes(pattern.clone(), &record("INSERT", "d#1")));
        assert!(passes(pattern.clone(), &record("REMOVE", "s#1")));
        assert!(!passes(pattern, &record("INSERT", "s#1")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for pattern in [
            json!(["INSERT"]),
            json!({"eventName": "INSERT"}),
            json!({"eventName": [["INSERT"]]}),
            json!({"eventName": [{"wildcard": "IN*"}]}),
            json!({"eventName": [{"prefix": 1}]}),
            json!({"eventName": [{"prefix": "a", "suffix": "b"}]}),
            json!({"n": [{"numeric": [">"]}]}),
            json!({"n": [{"numeric": ["!=", 1]}]}),
            json!({"n": [{"numeric": [">", "1"]}]}),
            json!({"n": [{"exists": "yes"}]}),
            json!({"n": [{"anything-but": []}]}),
            json!({"n": [{"anything-but": {"numeric": [">", 1]}}]}),
            json!({"$or": []}),
        ] {
            assert!(
                FilterCriteria::new(std::slice::from_ref(&pattern)).is_err(),
                "{pattern} accepted"
            );
            assert!(!matches(
                &[pattern],
                &json!({"eventName": "INSERT", "n": 1})
            ));
        }
        let err =
            FilterCriteria::new(&[json!({"dynamodb": {"Keys": [{"wildcard": "x"}]}})]).unwrap_err();
        assert!(err.to_string().contains("$.dynamodb.Keys[0]"), "{err}");
    }
}
