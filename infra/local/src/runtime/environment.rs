//! The process's command line and environment, as Lambda sets them up: a cleared
//! environment, the function's variables, then Lambda's reserved ones.

use std::{collections::BTreeMap, net::SocketAddr, path::Path};

use tokio::process::Command;

use super::shared::Shared;

/// `AWS_REGION` when the function's environment does not set it.
const DEFAULT_REGION: &str = "us-east-1";

/// The process's command line and environment, as Lambda would set them up.
pub(super) fn command(shared: &Shared, binary: &Path, api: SocketAddr) -> Command {
    let config = &shared.config;
    let task_root = binary.parent().unwrap_or(Path::new("/"));
    let mut command = Command::new(binary);
    command.env_clear();
    command.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
    );
    if let Some(filter) = std::env::var_os("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    command.envs(&config.env);
    for (name, value) in lambda_env(shared, task_root, api) {
        command.env(name, value);
    }
    command
        .current_dir(task_root)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The variables Lambda sets. Like Lambda's reserved variables, they win over the
/// function's own environment, except the region, which the function may choose.
fn lambda_env(
    shared: &Shared,
    task_root: &Path,
    api: SocketAddr,
) -> BTreeMap<&'static str, String> {
    let config = &shared.config;
    let region = config
        .env
        .get("AWS_REGION")
        .cloned()
        .unwrap_or_else(|| DEFAULT_REGION.to_owned());
    let default_region = config
        .env
        .get("AWS_DEFAULT_REGION")
        .cloned()
        .unwrap_or_else(|| region.clone());
    let task_root = task_root.display().to_string();
    let log_stream = format!(
        "{}/[$LATEST]{:032x}",
        chrono::Utc::now().format("%Y/%m/%d"),
        rand::random::<u128>()
    );
    BTreeMap::from([
        ("AWS_LAMBDA_RUNTIME_API", api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME", config.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            config.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", config.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", default_region),
        ("_HANDLER", "bootstrap".to_owned()),
        ("TZ", ":UTC".to_owned()),
        ("LAMBDA_TASK_ROOT", task_root.clone()),
        ("LAMBDA_RUNTIME_DIR", task_root),
    ])
}
