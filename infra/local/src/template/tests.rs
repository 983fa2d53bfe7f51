//! The reader against the repository's own `template.yaml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

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
fn reads_the_stream_triggers() {
    let spec = spec();
    assert_eq!(spec.stream_triggers.len(), 2);
    let sequencer = spec
        .stream_triggers
        .iter()
        .find(|t| t.function == "SequencerFunction")
        .expect("the sequencer's trigger");
    assert_eq!(spec.functions["SequencerFunction"].binary, "sequencer");
    assert!(sequencer.bisect_on_error && sequencer.report_batch_item_failures);
    assert_eq!(
        sequencer.parallelization_factor, 10,
        "a hot channel does not hold up the quiet ones of its shard"
    );
    assert_eq!(
        sequencer.filters,
        [
            serde_json::json!({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "q#"}]}}, "NewImage": {"q": {"N": [{"exists": true}]}}}}),
            serde_json::json!({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "o#"}]}}}}),
            serde_json::json!({"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "p#"}]}}}})
        ]
    );
    let trigger = spec
        .stream_triggers
        .iter()
        .find(|t| t.function == "FanoutFunction")
        .expect("the fan-out's trigger");
    assert!(trigger.bisect_on_error && trigger.report_batch_item_failures);
    assert_eq!(trigger.maximum_retry_attempts, 10);
    assert_eq!(trigger.parallelization_factor, 1);
    assert_eq!(
        trigger.filters,
        [
            serde_json::json!({"eventName": ["INSERT"], "dynamodb": {"Keys": {"sk": {"S": [{"prefix": "d#"}]}}}}),
            serde_json::json!({"eventName": ["INSERT", "MODIFY"], "dynamodb": {"Keys": {"sk": {"S": ["state", "presence"]}}}})
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
        overrides: BTreeMap::from([("MANAGEMENT_ENDPOINT".into(), "http://127.0.0.1:3001".into())]),
    };
    let env = spec.environment("MessageFunction", &local).unwrap();
    assert_eq!(env["TABLE_NAME"], "local-table");
    assert_eq!(env["RETENTION_SECONDS"], "86400");
    assert_eq!(env["MANAGEMENT_ENDPOINT"], "http://127.0.0.1:3001");
    assert_eq!(env["METRICS_SERVICE"], "deltacast-local", "AWS::StackName");
    assert_eq!(env["METRICS_NAMESPACE"], "deltacast");
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
