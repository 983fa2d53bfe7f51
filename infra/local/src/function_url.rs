//! A Lambda function URL, as the function and its client see it: the request event
//! (payload format 2.0, which `lambda_http` reads) and the response, whole or streamed
//! (`InvokeMode: RESPONSE_STREAM`: a metadata prelude, then the body as it is written).
//!
//! AWS verifies a SigV4 signature on a URL with `AuthType: AWS_IAM` and tells the
//! function who signed in `requestContext.authorizer.iam`. The local stack holds no AWS
//! credentials to check a signature against, so [`Request::iam`] is the signer's access
//! key id as the `Authorization` header states it, unchecked; the gateway accepts that
//! only on a loopback address (see `gateway::http_api`).

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tokio_stream::wrappers::ReceiverStream;

use crate::events::{API_ID, request_id, request_time};
use crate::invoke::LOCAL_ACCOUNT as ACCOUNT;
use crate::invoke::{InvokeError, Invoked};

/// One HTTP request to the URL.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, as sent.
    pub path: String,
    /// The query string, as sent (without `?`).
    pub query: String,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// `host:port` the client asked for.
    pub domain_name: String,
    /// The client's address.
    pub source_ip: String,
    /// The access key id of a SigV4-signed request (unchecked; see the module docs).
    pub iam: Option<String>,
    /// When the request arrived, Unix ms.
    pub received_at: u64,
}

/// The access key id in a SigV4 `Authorization` header
/// (`AWS4-HMAC-SHA256 Credential=<key id>/<date>/<region>/<service>/aws4_request, ...`).
pub fn sigv4_access_key(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let credential = rest
        .split(',')
        .map(str::trim)
        .find_map(|part| part.strip_prefix("Credential="))?;
    credential
        .split('/')
        .next()
        .filter(|key| !key.is_empty())
        .map(str::to_owned)
}

/// The event Lambda sends for `request` (payload format version 2.0).
pub fn event(request: &Request) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in request.headers.keys() {
        let values: Vec<&str> = request
            .headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .collect();
        if name == "cookie" {
            cookies.extend(values.iter().flat_map(|v| v.split("; ")).map(str::to_owned));
            continue;
        }
        headers.insert(name.as_str().to_owned(), values.join(",").into());
    }
    let mut query = Map::new();
    for pair in request.query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        };
        let (key, value) = (decode(key), decode(value));
        match query.get_mut(&key) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                query.insert(key, value.into());
            }
        }
    }
    let (body, base64) = match std::str::from_utf8(&request.body) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&request.body),
            true,
        ),
    };
    let user_agent = request
        .headers
        .get("user-agent")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let mut context = json!({
        "accountId": "anonymous",
        "apiId": API_ID,
        "domainName": request.domain_name,
        "domainPrefix": API_ID,
        "http": {
            "method": request.method,
            "path": request.path,
            "protocol": "HTTP/1.1",
            "sourceIp": request.source_ip,
            "userAgent": user_agent,
        },
        "requestId": request_id(),
        "routeKey": "$default",
        "stage": "$default",
        "time": request_time(request.received_at),
        "timeEpoch": request.received_at,
    });
    if let Some(key) = &request.iam {
        context["accountId"] = ACCOUNT.into();
        context["authorizer"] = json!({"iam": {
            "accessKey": key,
            "accountId": ACCOUNT,
            "callerId": key,
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": format!("arn:aws:iam::{ACCOUNT}:user/{key}"),
            "userId": key,
        }});
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": headers,
        "requestContext": context,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !query.is_empty() {
        event["queryStringParameters"] = Value::Object(query);
    }
    if !cookies.is_empty() {
        event["cookies"] = cookies.into();
    }
    event
}

/// The HTTP response for what the function answered, as a function URL gives it: a
/// stream as it comes, a whole response by its fields (or, when it is not one, as a
/// JSON body), and an invocation that failed as 502 (429 when throttled).
pub fn response(invoked: Result<Invoked, InvokeError>) -> Response {
    match invoked {
        Ok(Invoked::Stream(head)) => {
            let chunks = ReceiverStream::new(head.body).map(Ok::<Bytes, Infallible>);
            let mut response = Response::new(Body::from_stream(chunks));
            apply(&mut response, &head.prelude);
            response
        }
        Ok(Invoked::Response(value)) if value.get("statusCode").is_some() => {
            let body = value
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let body = if value["isBase64Encoded"] == true {
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap_or_default()
            } else {
                body.as_bytes().to_vec()
            };
            let mut response = Response::new(Body::from(body));
            apply(&mut response, &value);
            response
        }
        Ok(Invoked::Response(value)) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            value.to_string(),
        )
            .into_response(),
        Err(InvokeError::Unavailable(message))
            if message.starts_with("TooManyRequestsException") =>
        {
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("content-type", "application/json")],
                json!({"Message": "Rate Exceeded."}).to_string(),
            )
                .into_response()
        }
        Err(_) => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "application/json")],
            json!({"Message": "Internal Server Error"}).to_string(),
        )
            .into_response(),
    }
}

/// Sets the status, headers and cookies a prelude (or a whole response) gives.
fn apply(response: &mut Response, prelude: &Value) {
    let status = prelude["statusCode"]
        .as_u64()
        .and_then(|code| StatusCode::from_u16(code as u16).ok())
        .unwrap_or(StatusCode::OK);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Some(map) = prelude["headers"].as_object() {
        for (name, value) in map {
            let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) else {
                continue;
            };
            headers.append(name, value);
        }
    }
    for cookie in prelude["cookies"].as_array().into_iter().flatten() {
        if let Some(Ok(value)) = cookie.as_str().map(HeaderValue::from_str) {
            headers.append("set-cookie", value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sigv4_header_names_its_access_key() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261202/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc",
            ),
        );
        assert_eq!(sigv4_access_key(&headers).as_deref(), Some("AKIDEXAMPLE"));
        headers.insert("authorization", HeaderValue::from_static("Bearer x.y.z"));
        assert_eq!(sigv4_access_key(&headers), None);
    }

    #[test]
    fn the_event_is_payload_format_2_with_the_query_decoded_and_cookies_apart() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("cookie", HeaderValue::from_static("a=1; b=2"));
        let request = Request {
            method: "GET".into(),
            path: "/v1/channels/chat%3Aa/messages".into(),
            query: "since=3&epoch=e&x=1&x=2".into(),
            headers,
            body: Bytes::new(),
            domain_name: "127.0.0.1:3001".into(),
            source_ip: "127.0.0.1".into(),
            iam: None,
            received_at: 1_700_000_000_000,
        };
        let event = event(&request);
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["rawPath"], "/v1/channels/chat%3Aa/messages");
        assert_eq!(event["queryStringParameters"]["x"], "1,2");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["requestContext"]["http"]["method"], "GET");
        assert!(event["requestContext"].get("authorizer").is_none());
    }
}
