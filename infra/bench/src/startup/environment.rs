//! What a measured function gets: its environment (every variable it reads at init,
//! dummy credentials, endpoints where nothing listens unless DynamoDB Local is given), its
//! table, and a current event from `events/` to answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltacast_local::stack::{dev_token, jwt_secret_from_env};
use serde_json::{Value, json};

use super::StartupError;

/// The folder of the event files (events/README.md), from the checkout's top.
const EVENTS_DIR: &str = "events";

/// The checkout's top folder (the bench crate is `infra/bench`).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("infra/bench is two folders below the checkout")
        .to_path_buf()
}

/// The environment the functions get during the benchmark: everything they read at init,
/// dummy credentials, DynamoDB at `dynamodb` (a port where nothing listens when `None`),
/// the Management API at a port where nothing listens. No function touches the network
/// at init.
pub fn function_env(dynamodb: Option<&str>, table: &str) -> BTreeMap<String, String> {
    let nowhere = format!("http://127.0.0.1:{}", closed_port());
    BTreeMap::from(
        [
            ("TABLE_NAME", table.to_owned()),
            ("JWT_SECRET", jwt_secret_from_env()),
            ("MANAGEMENT_ENDPOINT", format!("{nowhere}/bench")),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "bench".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "bench".to_owned()),
            ("AWS_SESSION_TOKEN", "bench".to_owned()),
            (
                "AWS_ENDPOINT_URL_DYNAMODB",
                dynamodb.map_or(nowhere, str::to_owned),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    )
}

/// Creates `table` at `endpoint` as `template.yaml` describes it, unless it exists, with
/// the credentials in `env`. Fails fast when nothing answers there.
pub(crate) async fn create_table(
    endpoint: &str,
    table: &str,
    env: &BTreeMap<String, String>,
) -> Result<(), String> {
    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    let spec = deltacast_local::template::StackSpec::load(&workspace_root().join("template.yaml"))
        .map_err(|error| error.to_string())?;
    let variable = |name: &str| env.get(name).cloned().unwrap_or_else(|| "bench".to_owned());
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(variable("AWS_REGION")))
        .credentials_provider(Credentials::new(
            variable("AWS_ACCESS_KEY_ID"),
            variable("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "deltacast-bench",
        ))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_timeout(Duration::from_secs(20))
                .build(),
        )
        .build();
    let client = aws_sdk_dynamodb::Client::from_conf(config);
    spec.table
        .create(&client, table)
        .await
        .map(drop)
        .map_err(|error| aws_sdk_dynamodb::error::DisplayErrorContext(&error).to_string())
}

/// The event file for a binary, made current: identities that have not expired, a
/// token signed with the benchmark's secret (which may not be the development secret the
/// files' tokens are signed with).
pub(crate) fn event_for(name: &str, env: &BTreeMap<String, String>) -> Result<Value, StartupError> {
    let file = match name {
        "authorizer" => "authorizer-connect.json",
        "connect" => "connect.json",
        "message" => "message-publish.json",
        "disconnect" => "disconnect.json",
        "fanout" => "fanout-deltas.json",
        "http" => "http-publish.json",
        _ => return Ok(json!({ "bench": name })),
    };
    let path = workspace_root().join(EVENTS_DIR).join(file);
    let text = std::fs::read_to_string(&path).map_err(|source| StartupError::Read {
        path: path.clone(),
        source,
    })?;
    let mut event: Value =
        serde_json::from_str(&text).map_err(|source| StartupError::Fixture { path, source })?;
    let context = &mut event["requestContext"];
    if context.is_object() {
        context["connectedAt"] = json!(deltacast::clock::now_ms());
        if context["authorizer"].is_object() {
            context["authorizer"]["exp"] = json!(deltacast::clock::now_secs() + 3600);
        }
    }
    match name {
        "authorizer" => {
            let secret = env
                .get("JWT_SECRET")
                .cloned()
                .unwrap_or_else(jwt_secret_from_env);
            let token = dev_token(&secret, "alice", Duration::from_secs(3600));
            event["queryStringParameters"]["token"] = json!(token);
            event["multiValueQueryStringParameters"]["token"] = json!([token]);
        }
        "http" => {
            let secret = env
                .get("JWT_SECRET")
                .cloned()
                .unwrap_or_else(jwt_secret_from_env);
            let token = dev_token(&secret, "alice", Duration::from_secs(3600));
            event["headers"]["authorization"] = json!(format!("Bearer {token}"));
            event["requestContext"]["timeEpoch"] = json!(deltacast::clock::now_ms());
        }
        _ => {}
    }
    Ok(event)
}

/// A port on 127.0.0.1 where nothing listens (it was free a moment ago): connections
/// to it are refused at once.
fn closed_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map_or(9, |address| address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_gets_a_current_fixture_event() {
        let env = function_env(None, "bench");
        assert!(env["JWT_SECRET"].len() >= 32);
        for name in ["authorizer", "connect", "message", "disconnect", "fanout"] {
            let event = event_for(name, &env).expect("fixture");
            assert!(event.is_object(), "{name}");
        }
        let authorizer = event_for("authorizer", &env).expect("fixture");
        let path = workspace_root()
            .join(EVENTS_DIR)
            .join("authorizer-connect.json");
        let file: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_ne!(
            authorizer["queryStringParameters"]["token"], file["queryStringParameters"]["token"],
            "the file's token is replaced by one signed now with the bench's secret"
        );
        let message = event_for("message", &env).expect("fixture");
        assert!(
            message["body"]
                .as_str()
                .is_some_and(|body| body.contains("publish"))
        );
    }
}
