//! Invoking a function of the running stack through its Invoke API (`POST
//! /2015-03-31/functions/{name}/invocations` on the gateway's port), the way the AWS CLI's
//! `aws lambda invoke` does against Lambda: plain HTTP/1.1 to this machine, so `redrive`
//! needs no AWS SDK for Lambda and no credentials.

use std::time::Duration;

use axum::body::{Body, to_bytes};
use hyper::Uri;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;

/// What a function name may not hold as is in a path segment.
const SEGMENT: &AsciiSet = &CONTROLS.add(b' ').add(b'/').add(b'?').add(b'#').add(b'%');

/// The most a response may hold (Lambda's synchronous response limit).
const MAX_RESPONSE_BYTES: usize = 6 * 1024 * 1024;

/// How long an invocation may take before the client gives up: Lambda's longest timeout,
/// and a minute more for the stack to start an instance.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(16 * 60);

/// The stack's Invoke API.
#[derive(Clone, Debug)]
pub(super) struct InvokeClient {
    /// `host:port`, to connect to and for the `Host` header.
    authority: String,
    /// The endpoint's path, without its trailing `/` (usually empty).
    base: String,
    /// The endpoint as given, for messages.
    endpoint: String,
}

/// How an invocation the API answered ended.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Answer {
    /// The function's response.
    Response(Value),
    /// `X-Amz-Function-Error`: the function failed.
    FunctionError {
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// The API refused or could not run it (unknown function, throttled, ...).
    Refused {
        /// The HTTP status.
        status: u16,
        /// `x-amzn-ErrorType`.
        kind: String,
        /// The error's `Message`.
        message: String,
    },
}

/// The Invoke API could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not an `http://host:port` URL.
    #[error("--endpoint {0:?} is not an http:// URL of the stack's gateway")]
    Endpoint(String),
    /// Nothing answers at the endpoint.
    #[error("cannot reach the stack at {endpoint} ({message}): is `make dev` running?")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
    /// The exchange failed half-way (the stack stopped, a timeout).
    #[error("the Invoke API at {endpoint} failed: {message}")]
    Http {
        /// The endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
}

impl InvokeClient {
    /// A client of the Invoke API at `endpoint` (`http://127.0.0.1:3001`).
    pub fn new(endpoint: &str) -> Result<Self, ClientError> {
        let refused = || ClientError::Endpoint(endpoint.to_owned());
        let uri: Uri = endpoint.parse().map_err(|_| refused())?;
        if uri.scheme_str() != Some("http") {
            return Err(refused());
        }
        let authority = uri.authority().ok_or_else(refused)?;
        let authority = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{authority}:80"),
        };
        Ok(Self {
            authority,
            base: uri.path().trim_end_matches('/').to_owned(),
            endpoint: endpoint.to_owned(),
        })
    }

    /// Invokes `function` (a logical id or ARN) with `event`, `RequestResponse`.
    pub async fn invoke(&self, function: &str, event: &Value) -> Result<Answer, ClientError> {
        tokio::time::timeout(INVOKE_TIMEOUT, self.exchange(function, event))
            .await
            .unwrap_or_else(|_| {
                Err(self.http(format!(
                    "no answer within {} minutes",
                    INVOKE_TIMEOUT.as_secs() / 60
                )))
            })
    }

    async fn exchange(&self, function: &str, event: &Value) -> Result<Answer, ClientError> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|err| ClientError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: err.to_string(),
            })?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.http(err.to_string()))?;
        let driver = tokio::spawn(connection);
        let path = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.base,
            utf8_percent_encode(function, SEGMENT)
        );
        let request = hyper::Request::post(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .header("x-amz-invocation-type", "RequestResponse")
            .body(Body::from(event.to_string()))
            .map_err(|err| self.http(err.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|err| self.http(err.to_string()))?;
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
        };
        let function_error = header("x-amz-function-error");
        let kind = header("x-amzn-errortype");
        let body = to_bytes(Body::new(response.into_body()), MAX_RESPONSE_BYTES)
            .await
            .map_err(|err| self.http(err.to_string()))?;
        driver.abort();
        Ok(read_answer(status, function_error, kind, &body))
    }

    fn http(&self, message: String) -> ClientError {
        ClientError::Http {
            endpoint: self.endpoint.clone(),
            message,
        }
    }
}

/// What a response of the Invoke API says.
fn read_answer(
    status: u16,
    function_error: Option<String>,
    kind: Option<String>,
    body: &[u8],
) -> Answer {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| {
        json.as_ref()
            .and_then(|json| json.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    if status == 200 && function_error.is_none() {
        return Answer::Response(json.unwrap_or(Value::Null));
    }
    if status == 200 {
        return Answer::FunctionError {
            error_type: field("errorType").unwrap_or_else(|| "Unhandled".to_owned()),
            error_message: field("errorMessage")
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        };
    }
    Answer::Refused {
        status,
        kind: kind.unwrap_or_else(|| "Unknown".to_owned()),
        message: field("Message")
            .or_else(|| field("message"))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_endpoint_is_an_http_url_of_the_gateway() {
        let client = InvokeClient::new("http://127.0.0.1:3001").expect("a client");
        assert_eq!(client.authority, "127.0.0.1:3001");
        assert_eq!(client.base, "");
        let client = InvokeClient::new("http://localhost/").expect("a client");
        assert_eq!(client.authority, "localhost:80");
        for wrong in ["https://127.0.0.1:3001", "127.0.0.1:3001", "not a url"] {
            assert!(
                matches!(InvokeClient::new(wrong), Err(ClientError::Endpoint(_))),
                "{wrong}"
            );
        }
    }

    #[test]
    fn answers_are_read_as_lambda_gives_them() {
        assert_eq!(
            read_answer(200, None, None, br#"{"batchItemFailures":[]}"#),
            Answer::Response(json!({"batchItemFailures": []}))
        );
        assert_eq!(
            read_answer(200, None, None, b""),
            Answer::Response(Value::Null)
        );
        assert_eq!(
            read_answer(
                200,
                Some("Unhandled".into()),
                None,
                br#"{"errorType":"Poison","errorMessage":"no"}"#
            ),
            Answer::FunctionError {
                error_type: "Poison".into(),
                error_message: "no".into()
            }
        );
        assert_eq!(
            read_answer(
                404,
                None,
                Some("ResourceNotFoundException".into()),
                br#"{"Type":"User","Message":"Function not found: x"}"#
            ),
            Answer::Refused {
                status: 404,
                kind: "ResourceNotFoundException".into(),
                message: "Function not found: x".into()
            }
        );
    }

    #[tokio::test]
    async fn a_stack_that_is_not_running_is_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let client = InvokeClient::new(&format!("http://{address}")).expect("a client");
        let err = client
            .invoke("FanoutFunction", &json!({}))
            .await
            .expect_err("nothing listens");
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("make dev"), "{err}");
    }
}
