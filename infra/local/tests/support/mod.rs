//! What the integration tests of the local stack share: raw HTTP/1.1 over a fresh
//! connection (so a test sees exactly what the gateway answers, with no client library
//! in between), a function that never runs for gateways that need none, and where the
//! repository and DynamoDB Local are. Each test binary compiles this module on its own
//! and uses only part of it, hence the one allowance below.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use deltacast_local::gateway::Routes;
use deltacast_local::invoke::{Invoke, InvokeError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Only against hangs: every exchange here takes milliseconds, or seconds at the most.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

/// The variable that names DynamoDB Local's endpoint for the tests that need it.
const DYNAMODB_VARIABLE: &str = "DELTACAST_TEST_DYNAMODB";

/// An HTTP response: its status, its header lines (names in lower case) and its body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The value of the header `name` (in lower case), if the response has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The body as JSON; panics, showing the body, if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|err| panic!("a JSON body ({err}): {}", self.body))
    }
}

/// `method path` with `body` over a fresh HTTP/1.1 connection that the server closes,
/// with `Host` set to `host` (`address` when `None`) and `headers` (`name`, `value`)
/// besides `Content-Length`; read to its end within [`HANG_GUARD`].
pub async fn request(
    address: SocketAddr,
    method: &str,
    path: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let host = host.map_or_else(|| address.to_string(), str::to_owned);
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let text = tokio::time::timeout(HANG_GUARD, async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        stream.write_all(body).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .expect("answered within the hang guard");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("an HTTP response, got {text:?}"));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("a status line, got {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// A function for gateways that serve files, tokens or metrics: it never runs.
#[derive(Clone)]
pub struct NoFunction;

impl Invoke for NoFunction {
    fn invoke(&self, _: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send {
        std::future::ready(Err(InvokeError::Function {
            error_type: "NoFunction".into(),
            error_message: "no function runs in these tests".into(),
        }))
    }
}

/// Routes selected by `$request.body.action`, with no route, authorizer or HTTP API.
pub fn no_routes<F>() -> Routes<F> {
    Routes {
        selection_expression: "$request.body.action".into(),
        routes: Default::default(),
        authorizer: None,
        identity_sources: Vec::new(),
        http: None,
    }
}

/// DynamoDB Local's endpoint, from `DELTACAST_TEST_DYNAMODB`; panics saying how to set it.
pub fn dynamodb_endpoint() -> String {
    std::env::var(DYNAMODB_VARIABLE).unwrap_or_else(|_| {
        panic!(
            "{DYNAMODB_VARIABLE} is not set: start DynamoDB Local with \
             `infra/dynamodb-local/dynamodb-local start 8123` and run the tests with \
             {DYNAMODB_VARIABLE}=http://127.0.0.1:8123"
        )
    })
}

/// The repository's root, where `template.yaml` is.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
