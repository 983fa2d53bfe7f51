//! Every rule of the EMF specification: the contract's lines pass, and each violation is
//! refused with its reason.

use serde_json::{Value, json};

use super::emf::{EmfDocument, EmfError, Metric, MetricValue};
use super::fixtures::{FANOUT_LINE, PUBLISHES_LINE};
use super::unit::Unit;

/// The contract's fan-out line, as JSON to break one rule at a time.
fn valid() -> Value {
    serde_json::from_str(FANOUT_LINE).expect("the fixture is JSON")
}

/// The refusal of the fan-out line after `change`.
fn refusal(change: impl FnOnce(&mut Value)) -> EmfError {
    let mut document = valid();
    change(&mut document);
    EmfDocument::parse(&document.to_string()).expect_err("the change breaks a rule")
}

#[test]
fn the_contracts_publish_line_reads_as_a_counter_with_its_dimensions() {
    let document = EmfDocument::parse(PUBLISHES_LINE).expect("valid");
    assert_eq!(document.timestamp, 1_796_217_683_420);
    assert_eq!(
        document.metrics,
        vec![Metric {
            namespace: "deltacast".into(),
            name: "Publishes".into(),
            unit: Unit::Count,
            storage_resolution: 60,
            dimensions: vec![
                ("service".into(), "deltacast".into()),
                ("function".into(), "message".into()),
                ("outcome".into(), "ok".into()),
            ],
            value: MetricValue::Scalar(3.0),
        }]
    );
}

#[test]
fn the_contracts_fanout_line_reads_as_a_counter_and_two_histograms() {
    let document = EmfDocument::parse(FANOUT_LINE).expect("valid");
    let metrics: Vec<_> = document
        .metrics
        .iter()
        .map(|metric| (metric.name.as_str(), metric.unit, metric.value.clone()))
        .collect();
    assert_eq!(
        metrics,
        vec![
            ("Deliveries", Unit::Count, MetricValue::Scalar(40.0)),
            (
                "FanoutLag",
                Unit::Milliseconds,
                MetricValue::Values(vec![812.0])
            ),
            ("BatchSize", Unit::Count, MetricValue::Values(vec![4.0])),
        ]
    );
}

#[test]
fn members_the_specification_does_not_define_are_ignored() {
    let mut document = valid();
    document["_aws"]["LogGroupName"] = json!("local");
    document["_aws"]["CloudWatchMetrics"][0]["Extra"] = json!(true);
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Extra"] = json!(1);
    document["requestId"] = json!("989ffbf8");
    assert!(EmfDocument::parse(&document.to_string()).is_ok());
}

#[test]
fn a_metric_without_unit_is_in_unit_none_and_storage_resolution_may_be_1_or_60() {
    let mut document = valid();
    let definitions = &mut document["_aws"]["CloudWatchMetrics"][0]["Metrics"];
    definitions[0] = json!({"Name": "Deliveries"});
    definitions[1]["StorageResolution"] = json!(1);
    definitions[2]["StorageResolution"] = json!(60);
    let parsed = EmfDocument::parse(&document.to_string()).expect("valid");
    assert_eq!(parsed.metrics[0].unit, Unit::None);
    assert_eq!(parsed.metrics[1].storage_resolution, 1);
    assert_eq!(parsed.metrics[2].storage_resolution, 60);
}

#[test]
fn a_metric_in_two_directives_is_one_metric_with_the_union_of_their_dimensions() {
    let mut document = valid();
    document["region"] = json!("local");
    document["_aws"]["CloudWatchMetrics"]
        .as_array_mut()
        .expect("an array")
        .push(json!({
            "Namespace": "other",
            "Dimensions": [["region"], []],
            "Metrics": [{"Name": "Deliveries", "Unit": "Count"}]
        }));
    let parsed = EmfDocument::parse(&document.to_string()).expect("valid");
    assert_eq!(parsed.metrics.len(), 3);
    assert_eq!(parsed.metrics[0].namespace, "deltacast");
    let keys: Vec<_> = parsed.metrics[0]
        .dimensions
        .iter()
        .map(|(key, _)| key.as_str())
        .collect();
    assert_eq!(keys, ["service", "function", "region"]);
}

#[test]
fn a_line_that_is_not_one_json_text_is_refused() {
    for line in ["", "{\"_aws\":", "{} {}", "INFO hello"] {
        assert!(
            matches!(EmfDocument::parse(line), Err(EmfError::NotJson(_))),
            "{line:?}"
        );
    }
}

#[test]
fn a_root_that_is_not_an_object_is_refused() {
    assert_eq!(
        EmfDocument::parse("[1]").unwrap_err(),
        EmfError::RootNotObject
    );
}

#[test]
fn a_root_without_aws_metadata_is_refused() {
    let error = refusal(|d| {
        d.as_object_mut().expect("object").remove("_aws");
    });
    assert_eq!(error, EmfError::NoMetadata);
    assert_eq!(error.to_string(), "the root has no `_aws` member");
}

#[test]
fn metadata_that_is_not_an_object_is_refused() {
    assert_eq!(
        refusal(|d| d["_aws"] = json!([])),
        EmfError::MetadataNotObject
    );
}

#[test]
fn a_timestamp_must_be_present_and_a_whole_number_of_milliseconds() {
    for timestamp in [json!(null), json!("1796217683420"), json!(1.5), json!(-1)] {
        assert_eq!(
            refusal(|d| d["_aws"]["Timestamp"] = timestamp.clone()),
            EmfError::Timestamp,
            "{timestamp}"
        );
    }
    assert_eq!(
        refusal(|d| {
            d["_aws"]
                .as_object_mut()
                .expect("object")
                .remove("Timestamp");
        }),
        EmfError::Timestamp
    );
}

#[test]
fn cloudwatch_metrics_must_be_an_array_of_directive_objects() {
    assert_eq!(
        refusal(|d| {
            d["_aws"]
                .as_object_mut()
                .expect("object")
                .remove("CloudWatchMetrics");
        }),
        EmfError::Directives
    );
    assert_eq!(
        refusal(|d| d["_aws"]["CloudWatchMetrics"] = json!({})),
        EmfError::Directives
    );
    assert_eq!(
        refusal(|d| d["_aws"]["CloudWatchMetrics"][0] = json!("deltacast")),
        EmfError::DirectiveNotObject { directive: 0 }
    );
}

#[test]
fn a_directive_needs_a_namespace_of_1_to_1024_characters() {
    for namespace in [json!(null), json!(7), json!(""), json!("n".repeat(1025))] {
        assert_eq!(
            refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Namespace"] = namespace.clone()),
            EmfError::Namespace { directive: 0 }
        );
    }
}

#[test]
fn dimensions_must_be_a_non_empty_array_of_string_arrays() {
    for dimensions in [json!(null), json!("service"), json!([])] {
        assert_eq!(
            refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = dimensions.clone()),
            EmfError::Dimensions { directive: 0 },
            "{dimensions}"
        );
    }
    for set in [json!("service"), json!(["service", 1])] {
        assert_eq!(
            refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([[], set])),
            EmfError::DimensionSet {
                directive: 0,
                set: 1
            }
        );
    }
}

#[test]
fn a_dimension_set_may_be_empty_and_holds_at_most_30_keys() {
    let mut document = valid();
    document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([[]]);
    assert!(EmfDocument::parse(&document.to_string()).is_ok());

    let keys = |count: usize| (0..count).map(|i| format!("d{i}")).collect::<Vec<_>>();
    let mut document = valid();
    for key in keys(31) {
        document[key.as_str()] = json!("x");
    }
    document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([keys(30)]);
    assert!(EmfDocument::parse(&document.to_string()).is_ok());
    document["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([keys(31)]);
    let error = EmfDocument::parse(&document.to_string()).unwrap_err();
    assert_eq!(
        error,
        EmfError::TooManyDimensionKeys {
            directive: 0,
            set: 0,
            keys: 31
        }
    );
    assert_eq!(
        error.to_string(),
        "directive 0: dimension set 0 has 31 keys, more than 30"
    );
}

#[test]
fn every_dimension_key_needs_a_root_member_with_a_string_value() {
    assert_eq!(
        refusal(|d| {
            d.as_object_mut().expect("object").remove("function");
        }),
        EmfError::NoDimensionMember {
            key: "function".into()
        }
    );
    for value in [json!(3), json!(null), json!(["fanout"]), json!({"a": "b"})] {
        assert_eq!(
            refusal(|d| d["function"] = value.clone()),
            EmfError::DimensionNotString {
                key: "function".into()
            },
            "{value}"
        );
    }
}

#[test]
fn metrics_must_be_an_array_of_at_most_100_definition_objects() {
    assert_eq!(
        refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!({"Name": "X"})),
        EmfError::Metrics { directive: 0 }
    );
    assert_eq!(
        refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][1] = json!("FanoutLag")),
        EmfError::DefinitionNotObject {
            directive: 0,
            metric: 1
        }
    );

    let definitions = |count: usize| {
        (0..count)
            .map(|i| json!({"Name": format!("M{i}")}))
            .collect::<Vec<_>>()
    };
    let mut document = valid();
    for i in 0..101 {
        document[format!("M{i}").as_str()] = json!(1);
    }
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(definitions(100));
    assert!(EmfDocument::parse(&document.to_string()).is_ok());
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(definitions(101));
    assert_eq!(
        EmfDocument::parse(&document.to_string()).unwrap_err(),
        EmfError::TooManyMetrics {
            directive: 0,
            metrics: 101
        }
    );
}

#[test]
fn a_metric_name_is_a_string_of_1_to_1024_characters() {
    for name in [json!(null), json!(1), json!(""), json!("n".repeat(1025))] {
        assert_eq!(
            refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] = name.clone()),
            EmfError::MetricName {
                directive: 0,
                metric: 0
            }
        );
    }
    let long = "é".repeat(1024);
    let mut document = valid();
    document["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] = json!(long);
    document[long.as_str()] = json!(1);
    assert!(
        EmfDocument::parse(&document.to_string()).is_ok(),
        "1024 characters, more bytes"
    );
}

#[test]
fn a_unit_must_be_one_of_cloudwatchs_units() {
    let error = refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Unit"] = json!("ms"));
    assert_eq!(
        error,
        EmfError::Unit {
            name: "FanoutLag".into(),
            unit: "\"ms\"".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "metric `FanoutLag`: `Unit` \"ms\" is not a CloudWatch unit"
    );
    assert!(matches!(
        refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][1]["Unit"] = json!(null)),
        EmfError::Unit { .. }
    ));
}

#[test]
fn a_storage_resolution_is_1_or_60() {
    for resolution in [json!(0), json!(30), json!("1"), json!(1.5)] {
        assert_eq!(
            refusal(
                |d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["StorageResolution"] =
                    resolution.clone()
            ),
            EmfError::StorageResolution {
                name: "Deliveries".into()
            },
            "{resolution}"
        );
    }
}

#[test]
fn every_metric_needs_a_root_member() {
    assert_eq!(
        refusal(|d| {
            d.as_object_mut().expect("object").remove("FanoutLag");
        }),
        EmfError::NoMetricMember {
            name: "FanoutLag".into()
        }
    );
}

#[test]
fn a_metric_member_is_a_number_or_an_array_of_numbers() {
    for value in [
        json!("40"),
        json!(null),
        json!(true),
        json!([1, "2"]),
        json!({"v": 1}),
    ] {
        assert_eq!(
            refusal(|d| d["Deliveries"] = value.clone()),
            EmfError::MetricNotNumeric {
                name: "Deliveries".into()
            },
            "{value}"
        );
    }
}

#[test]
fn a_metric_array_holds_at_most_100_values() {
    let mut document = valid();
    document["FanoutLag"] = json!(vec![1.0; 100]);
    assert!(EmfDocument::parse(&document.to_string()).is_ok());
    assert_eq!(
        refusal(|d| d["FanoutLag"] = json!(vec![1.0; 101])),
        EmfError::TooManyValues {
            name: "FanoutLag".into(),
            values: 101
        }
    );
}

#[test]
fn a_refusal_quotes_only_the_start_of_a_long_name() {
    let name = "x".repeat(1000);
    let error = refusal(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] = json!(name));
    let message = error.to_string();
    assert!(message.len() < 200, "{message}");
    assert!(message.contains("has no member on the root"), "{message}");
}
