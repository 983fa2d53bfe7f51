//! What every route answers with: one body type for whole and streamed responses, and
//! JSON answers.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use lambda_http::http::{HeaderValue, Response, StatusCode, header};
use serde_json::Value;

/// A response body: whole (JSON) or streamed (server-sent events).
pub type Body = BoxBody<Bytes, Infallible>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// `status` with `value` as `application/json`.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    with_type(status, "application/json", value.to_string())
}

/// `status` with `body` of `content_type`.
pub fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A server frame's JSON as an HTTP answer's: the same object without its `type`, which
/// the route already says.
pub fn frame_body(frame: &str) -> Value {
    let mut value: Value = serde_json::from_str(frame).unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("type");
    }
    value
}
