//! Wires the local stack together from `template.yaml`: the table in DynamoDB Local, a
//! pool of real function processes per function, the gateway in front of them, and the
//! stream trigger behind them. `make dev` runs it through `main.rs`; the end-to-end tests
//! start it in-process on free ports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use crate::dev_token::{
    DEV_TOKEN_HOURS, MAX_TOKEN_USER_LEN, TOKEN_USER_FROM_CLI, TOKEN_USER_FROM_DEMO,
    check_token_user, dev_token, dev_tokens,
};
use crate::exposure::{DevSecretOnNetwork, check_bind};
use crate::gateway::{self, DemoApp, DemoDirError, DemoTokens, Gateway, GatewayConfig, Routes};
use crate::metrics::{FunctionFigures, MetricsPage, Registry};
use crate::runtime::{Function, FunctionConfig, FunctionFaults};
use crate::streams::{PollOptions, run_trigger};
use crate::template::{LocalValues, StackSpec, TemplateError};

/// The secret local tokens are signed with unless `JWT_SECRET` or `JwtSecret` is given.
pub const DEV_JWT_SECRET: &str = "deltacast-local-dev-secret-not-for-production";

/// The one variable every local tool reads the HS256 secret from: `make dev`,
/// `make token`, `deltacast-load`, the bench and the tests.
pub const JWT_SECRET_VARIABLE: &str = "JWT_SECRET";

/// The development secret: `JWT_SECRET` when it is set and not empty, else
/// [`DEV_JWT_SECRET`].
pub fn jwt_secret_from_env() -> String {
    std::env::var(JWT_SECRET_VARIABLE)
        .ok()
        .filter(|secret| !secret.is_empty())
        .unwrap_or_else(|| DEV_JWT_SECRET.to_owned())
}

/// What to run, and where.
#[derive(Clone, Debug)]
pub struct StackOptions {
    /// The SAM template.
    pub template: PathBuf,
    /// Where the gateway listens (port 0: a free port).
    pub bind: SocketAddr,
    /// DynamoDB Local's endpoint.
    pub dynamodb_endpoint: String,
    /// The table's local name.
    pub table_name: String,
    /// Where the function binaries are (`target/debug`, `target/release`).
    pub functions_dir: PathBuf,
    /// Template parameters (`JwtSecret` defaults to [`DEV_JWT_SECRET`]).
    pub parameters: BTreeMap<String, String>,
    /// Variables added to every function's environment (after the template's).
    pub env: BTreeMap<String, String>,
    /// Gateway behaviour (stage, timeouts, Management API faults).
    pub gateway: GatewayConfig,
    /// Pause between stream polls of an idle shard.
    pub poll_interval: Duration,
    /// Where stream batches that were given up on are recorded.
    pub on_failure_path: PathBuf,
    /// Instances per function at most.
    pub max_instances: usize,
    /// Function instance faults.
    pub function_faults: FunctionFaults,
    /// Probability that a stream batch is delivered twice.
    pub duplicate_batch_rate: f64,
    /// The demo app's build, served under `/demo/` (`serve --demo-dir`).
    pub demo_dir: Option<PathBuf>,
    /// Whether the demo's token route signs with a secret of the stack's own (`serve
    /// --demo-tokens`); with the development secret it always does.
    pub demo_tokens: bool,
}

impl StackOptions {
    /// Defaults for a checkout at `root`: port 3001, DynamoDB Local on 8000, debug builds.
    pub fn new(root: PathBuf) -> Self {
        Self {
            template: root.join("template.yaml"),
            bind: SocketAddr::from(([127, 0, 0, 1], 3001)),
            dynamodb_endpoint: "http://127.0.0.1:8000".into(),
            table_name: "deltacast".into(),
            functions_dir: root.join("target/debug"),
            parameters: BTreeMap::new(),
            env: BTreeMap::new(),
            gateway: GatewayConfig::default(),
            poll_interval: Duration::from_millis(100),
            on_failure_path: root.join(".local/stream-failures.jsonl"),
            max_instances: 10,
            function_faults: FunctionFaults::default(),
            duplicate_batch_rate: 0.0,
            demo_dir: None,
            demo_tokens: false,
        }
    }

    /// The `JwtSecret` the authorizer gets.
    pub fn jwt_secret(&self) -> &str {
        self.parameters
            .get("JwtSecret")
            .map(String::as_str)
            .unwrap_or(DEV_JWT_SECRET)
    }

    /// Whether tokens are HS256, signed with [`Self::jwt_secret`] (else they come from a
    /// key set, `JwtAlgorithm` RS256 or ES256).
    pub fn signs_tokens(&self) -> bool {
        self.parameters
            .get("JwtAlgorithm")
            .is_none_or(|algorithm| algorithm == "HS256")
    }

    /// Whether tokens are verified with [`DEV_JWT_SECRET`], which anyone can read in the
    /// source (see [`crate::exposure`]).
    pub fn uses_dev_secret(&self) -> bool {
        self.signs_tokens() && self.jwt_secret() == DEV_JWT_SECRET
    }

    /// What the demo's token route does. It signs with the development secret, which
    /// anyone can read anyway; with a secret of the stack's own only when asked
    /// ([`Self::demo_tokens`]), since anything that forwards to loopback (`ssh -R`, a
    /// tunnel) would otherwise turn the route into a signer of that secret for anyone.
    pub fn demo_token_mode(&self) -> DemoTokens {
        if !self.signs_tokens() {
            DemoTokens::IdentityProvider
        } else if self.uses_dev_secret() || self.demo_tokens {
            DemoTokens::Sign(dev_tokens(self.jwt_secret().to_owned()))
        } else {
            DemoTokens::NotAllowed
        }
    }
}

/// The stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The template is unusable.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// DynamoDB Local did not answer or refused.
    #[error("DynamoDB Local at {endpoint}: {message}")]
    DynamoDb {
        /// Its endpoint.
        endpoint: String,
        /// What went wrong.
        message: String,
    },
    /// A function binary is missing.
    #[error("{0} is missing: build the functions first (`cargo build --bins` or `make build`)")]
    MissingBinary(PathBuf),
    /// The gateway could not listen.
    #[error(transparent)]
    Gateway(#[from] crate::gateway::GatewayError),
    /// It would publish the development secret to the network.
    #[error(transparent)]
    Exposure(#[from] DevSecretOnNetwork),
    /// The demo folder cannot be served.
    #[error(transparent)]
    Demo(#[from] DemoDirError),
    /// The readiness probe failed.
    #[error("the stack started but a test connection failed: {0}")]
    NotReady(String),
}

/// A running local stack.
pub struct Stack {
    gateway: Gateway<Function>,
    functions: BTreeMap<String, Function>,
    triggers: Vec<JoinHandle<()>>,
    stop_triggers: CancellationToken,
    metrics: MetricsPage,
    /// The gateway's address.
    pub address: SocketAddr,
    /// The WebSocket URL (stage `local`).
    pub url: String,
    /// The Management API endpoint.
    pub management_endpoint: String,
    /// The HTTP API's base (`http://<address>/v1`), when the template has a function URL.
    pub http_url: Option<String>,
    /// The demo app's page (`http://<address>/demo/`), when `--demo-dir` is given.
    pub demo_url: Option<String>,
    /// The table.
    pub table_name: String,
    /// The secret tokens must be signed with.
    pub jwt_secret: String,
    /// Whether tokens are HS256 with `jwt_secret` (else they come from a JWKS).
    pub signs_tokens: bool,
}

/// SDK configuration for DynamoDB Local.
pub async fn local_sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "local",
            "local",
            None,
            None,
            "deltacast-local",
        ))
        .endpoint_url(endpoint)
        .load()
        .await
}

impl Stack {
    /// Creates the table if needed, starts the functions, the gateway and the stream
    /// trigger, and returns once a test connection has gone through.
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        check_bind(options.bind.ip(), options.uses_dev_secret())?;
        let spec = StackSpec::load(&options.template)?;
        let sdk = local_sdk_config(&options.dynamodb_endpoint).await;
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let dynamo_error = |err: aws_sdk_dynamodb::Error| StackError::DynamoDb {
            endpoint: options.dynamodb_endpoint.clone(),
            message: DisplayErrorContext(&err).to_string(),
        };
        if spec
            .table
            .create(&dynamodb, &options.table_name)
            .await
            .map_err(dynamo_error)?
        {
            info!(table = options.table_name, "created table");
        }

        // Everything that can fail happens before the gateway serves, so a failed start
        // leaves nothing listening (the probe, the one later step, shuts it down).
        let stream_arn = if spec.stream_triggers.is_empty() {
            None
        } else {
            let arn = dynamodb
                .describe_table()
                .table_name(&options.table_name)
                .send()
                .await
                .map_err(|e| dynamo_error(e.into()))?
                .table
                .and_then(|t| t.latest_stream_arn)
                .ok_or_else(|| StackError::DynamoDb {
                    endpoint: options.dynamodb_endpoint.clone(),
                    message: format!("table {} has no stream", options.table_name),
                })?;
            Some(arn)
        };

        let jwt_secret = options.jwt_secret().to_owned();
        let signs_tokens = options.signs_tokens();
        let mut gateway_config = options.gateway.clone();
        if let Some(dir) = &options.demo_dir {
            gateway_config.demo = Some(DemoApp::new(dir, options.demo_token_mode())?);
        }

        let (listener, address) = gateway::bind(options.bind).await?;
        let management_endpoint = format!("http://{address}");

        let mut parameters = options.parameters.clone();
        parameters
            .entry("JwtSecret".into())
            .or_insert_with(|| jwt_secret.clone());
        let mut overrides = BTreeMap::from([
            (
                "MANAGEMENT_ENDPOINT".to_owned(),
                management_endpoint.clone(),
            ),
            (
                "AWS_ENDPOINT_URL_DYNAMODB".to_owned(),
                options.dynamodb_endpoint.clone(),
            ),
            ("AWS_ACCESS_KEY_ID".to_owned(), "local".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "local".to_owned()),
            ("AWS_REGION".to_owned(), "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
            // Plain text logs; the gateway re-emits them with the function's name.
            ("NO_COLOR".to_owned(), "1".to_owned()),
        ]);
        overrides.extend(options.env.clone());
        let local = LocalValues {
            table_name: options.table_name.clone(),
            parameters,
            overrides,
        };

        // One registry for the stack: every function's EMF lines add up there.
        let registry = Arc::new(Registry::new());
        let mut functions = BTreeMap::new();
        for (id, function) in &spec.functions {
            let binary = options.functions_dir.join(&function.binary);
            if !binary.is_file() {
                return Err(StackError::MissingBinary(binary));
            }
            functions.insert(
                id.clone(),
                Function::new(FunctionConfig {
                    name: id.clone(),
                    binary,
                    env: spec.environment(id, &local)?,
                    timeout: function.timeout,
                    memory_mb: function.memory_mb,
                    max_instances: options.max_instances,
                    faults: options.function_faults.for_function(id),
                })
                .with_metrics(registry.clone()),
            );
        }
        let metrics = MetricsPage::new(registry, {
            let functions = functions.clone();
            move || {
                functions
                    .iter()
                    .map(|(id, function)| (id.clone(), FunctionFigures::from(&function.stats())))
                    .collect()
            }
        });
        gateway_config.metrics = Some(metrics.clone());

        let routes = Routes {
            selection_expression: spec.route_selection_expression.clone(),
            routes: spec
                .routes
                .iter()
                .map(|(key, id)| (key.clone(), functions[id].clone()))
                .collect(),
            authorizer: spec.authorizer.as_ref().map(|id| functions[id].clone()),
            identity_sources: spec.identity_sources.clone(),
            http: spec.http_api.as_ref().map(|id| functions[id].clone()),
        };
        let demo_url = gateway_config
            .demo
            .as_ref()
            .map(|_| format!("http://{address}/demo/"));
        // Every function is also reachable by name through the Invoke API (`redrive`).
        let gateway =
            Gateway::start_with_functions(listener, routes, gateway_config, functions.clone())?;

        let stop_triggers = CancellationToken::new();
        let mut triggers = Vec::new();
        if let Some(stream_arn) = stream_arn {
            let streams = aws_sdk_dynamodbstreams::Client::new(&sdk);
            for trigger in &spec.stream_triggers {
                let invoker = functions[&trigger.function].clone();
                let poll = PollOptions {
                    poll_interval: options.poll_interval,
                    on_failure_path: options.on_failure_path.clone(),
                    duplicate_batch_rate: options.duplicate_batch_rate,
                    region: "us-east-1".into(),
                };
                let (streams, arn, trigger, token) = (
                    streams.clone(),
                    stream_arn.clone(),
                    trigger.clone(),
                    stop_triggers.clone(),
                );
                let function = trigger.function.clone();
                triggers.push(tokio::spawn(async move {
                    if let Err(err) = run_trigger(streams, arn, trigger, invoker, poll, token).await
                    {
                        warn!(function, error = %err, "stream trigger stopped");
                    }
                }));
            }
        }

        let stack = Self {
            url: format!("ws://{address}/local"),
            http_url: spec
                .http_api
                .as_ref()
                .map(|_| format!("http://{address}/v1")),
            management_endpoint,
            demo_url,
            table_name: options.table_name.clone(),
            jwt_secret,
            signs_tokens,
            address,
            gateway,
            functions,
            triggers,
            stop_triggers,
            metrics,
        };
        if let Err(err) = stack.probe().await {
            stack.shutdown().await;
            return Err(StackError::NotReady(err));
        }
        Ok(stack)
    }

    /// Opens a connection with a fresh token, pings, closes, and waits for its
    /// `$disconnect`: proves that the authorizer, `$connect`, `$default` and `$disconnect`
    /// all work. When tokens come from an identity provider (RS256/ES256) the stack cannot
    /// sign one, so it checks that the authorizer refuses a handshake without a token.
    pub async fn probe(&self) -> Result<(), String> {
        if !self.signs_tokens {
            return match tokio_tungstenite::connect_async(self.url.as_str()).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response))
                    if response.status() == 401 =>
                {
                    Ok(())
                }
                Err(err) => Err(format!("a handshake without a token: {err}")),
                Ok(_) => Err("a handshake without a token was accepted".into()),
            };
        }
        let disconnected = self
            .gateway
            .stats()
            .disconnected
            .load(std::sync::atomic::Ordering::Relaxed);
        let token = dev_token(&self.jwt_secret, "deltacast-probe", Duration::from_secs(60));
        let url = format!("{}?token={token}", self.url);
        let (mut socket, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async(url),
        )
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| format!("handshake: {e}"))?;
        socket
            .send(Message::text(
                json!({"action": "ping", "id": "probe"}).to_string(),
            ))
            .await
            .map_err(|e| format!("send: {e}"))?;
        let reply = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .map_err(|_| "no pong within 30 s".to_owned())?;
        let text = match reply {
            Some(Ok(Message::Text(text))) => text.to_string(),
            other => return Err(format!("unexpected reply {other:?}")),
        };
        if !text.contains("\"pong\"") {
            return Err(format!("unexpected reply {text}"));
        }
        let _ = socket.close(None).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self
            .gateway
            .stats()
            .disconnected
            .load(std::sync::atomic::Ordering::Relaxed)
            == disconnected
        {
            if tokio::time::Instant::now() > deadline {
                return Err("$disconnect did not run within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The gateway (connection counts, stats).
    pub fn gateway(&self) -> &Gateway<Function> {
        &self.gateway
    }

    /// The running functions by logical id.
    pub fn functions(&self) -> &BTreeMap<String, Function> {
        &self.functions
    }

    /// The stack's metrics: the functions' EMF lines added up ([`MetricsPage::registry`]),
    /// the `/metrics` page's text ([`MetricsPage::render`]) and what the traffic summary
    /// compares ([`MetricsPage::snapshot`]).
    pub fn metrics(&self) -> &MetricsPage {
        &self.metrics
    }

    /// Closes every connection and waits for its `$disconnect` (at most 5 s), then stops
    /// the trigger and every function instance.
    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.stop_triggers.cancel();
        for trigger in self.triggers {
            let _ = trigger.await;
        }
        for function in self.functions.values() {
            function.shutdown().await;
        }
    }
}
