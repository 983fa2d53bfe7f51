//! Init failures that Lambda can show. A function whose configuration is wrong must not
//! just print Rust debug text and exit: Lambda would only say "Runtime exited". Instead
//! [`or_exit`] turns the error into a readable message naming the variable and the rule
//! it broke, writes it to stderr (CloudWatch), POSTs it to the Runtime API's
//! `/runtime/init/error` endpoint (so the invocation fails with that message), and exits
//! non-zero. `lambda_runtime` reports init errors only for its SnapStart hooks, through a
//! private client, hence this small one.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ConfigError;

/// The `errorType` (and `Lambda-Runtime-Function-Error-Type`) of a configuration error.
pub const CONFIG_ERROR_TYPE: &str = "Runtime.ConfigError";

/// The variable that names the Runtime API (`host:port`), set by Lambda.
pub const RUNTIME_API_VARIABLE: &str = "AWS_LAMBDA_RUNTIME_API";

/// How long the report may take: a Runtime API that does not answer must not keep a
/// broken function alive.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a function could not start, as Lambda's Runtime API takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitError {
    /// `errorType`, e.g. [`CONFIG_ERROR_TYPE`].
    pub error_type: String,
    /// `errorMessage`: readable, naming the variable and the rule.
    pub error_message: String,
}

impl From<&ConfigError> for InitError {
    fn from(error: &ConfigError) -> Self {
        Self {
            error_type: CONFIG_ERROR_TYPE.to_owned(),
            error_message: format!("the function cannot start: {error}"),
        }
    }
}

impl InitError {
    /// The JSON body of `/runtime/init/error`: `{"errorType": ..., "errorMessage": ...}`.
    pub fn body(&self) -> String {
        serde_json::json!({
            "errorType": self.error_type,
            "errorMessage": self.error_message,
        })
        .to_string()
    }
}

/// Reporting to the Runtime API failed (the function still exits).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The request could not be built (a malformed `AWS_LAMBDA_RUNTIME_API`).
    #[error("cannot build the request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The Runtime API did not answer.
    #[error("the Runtime API did not answer: {0}")]
    Send(#[from] hyper_util::client::legacy::Error),
    /// The Runtime API took longer than the report may.
    #[error("the Runtime API did not answer within {REPORT_TIMEOUT:?}")]
    Timeout,
    /// The Runtime API refused the report.
    #[error("the Runtime API answered {0}")]
    Status(hyper::StatusCode),
}

/// POSTs `error` to `http://{runtime_api}/2018-06-01/runtime/init/error`.
pub async fn report(runtime_api: &str, error: &InitError) -> Result<(), ReportError> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = hyper::Request::post(format!(
        "http://{runtime_api}/2018-06-01/runtime/init/error"
    ))
    .header("Lambda-Runtime-Function-Error-Type", &error.error_type)
    .header("Content-Type", "application/json")
    .body(Full::new(Bytes::from(error.body())))?;
    let response = tokio::time::timeout(REPORT_TIMEOUT, client.request(request))
        .await
        .map_err(|_| ReportError::Timeout)??;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(ReportError::Status(response.status()))
    }
}

/// The configuration, or (when it is wrong) the init error reported as described in the
/// module docs, and the process exits with status 1.
pub async fn or_exit<T>(configured: Result<T, ConfigError>) -> T {
    match configured {
        Ok(value) => value,
        Err(error) => fail(&InitError::from(&error)).await,
    }
}

/// Writes `error` to stderr, reports it to the Runtime API (when `AWS_LAMBDA_RUNTIME_API`
/// names one) and exits with status 1.
pub async fn fail(error: &InitError) -> ! {
    eprintln!("{}: {}", error.error_type, error.error_message);
    match std::env::var(RUNTIME_API_VARIABLE) {
        Ok(api) if !api.is_empty() => {
            if let Err(report_error) = report(&api, error).await {
                eprintln!("could not report the init error to the Runtime API: {report_error}");
            }
        }
        _ => eprintln!("{RUNTIME_API_VARIABLE} is not set: the init error was not reported"),
    }
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_variable_reads_as_a_sentence_naming_it() {
        let error = InitError::from(&ConfigError::Missing("TABLE_NAME"));
        assert_eq!(error.error_type, "Runtime.ConfigError");
        assert_eq!(
            error.error_message,
            "the function cannot start: environment variable TABLE_NAME is required but not set"
        );
    }

    #[test]
    fn an_invalid_variable_names_it_and_the_rule() {
        let error = InitError::from(&ConfigError::Invalid {
            name: "JWT_SECRET",
            reason: "must be at least 32 bytes, got 5".into(),
        });
        assert_eq!(
            error.error_message,
            "the function cannot start: environment variable JWT_SECRET is invalid: must be at least 32 bytes, got 5"
        );
        assert!(!error.error_message.contains("Invalid {"));
    }

    #[test]
    fn the_body_is_what_the_runtime_api_takes() {
        let error = InitError::from(&ConfigError::Missing("TABLE_NAME"));
        let body: serde_json::Value = serde_json::from_str(&error.body()).unwrap();
        assert_eq!(body["errorType"], "Runtime.ConfigError");
        assert_eq!(body["errorMessage"], error.error_message.as_str());
    }

    #[tokio::test]
    async fn the_report_is_posted_to_the_init_error_endpoint() {
        // GIVEN a Runtime API that records what it gets
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            while !String::from_utf8_lossy(&request).contains("errorMessage") {
                let n = socket.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });

        // WHEN an init error is reported
        let error = InitError::from(&ConfigError::Missing("TABLE_NAME"));
        report(&api, &error).await.expect("reported");

        // THEN it went to /init/error with the error type header and the JSON body
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /2018-06-01/runtime/init/error HTTP/1.1"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("lambda-runtime-function-error-type: runtime.configerror")
        );
        assert!(request.contains(&error.body()), "{request}");
    }
}
