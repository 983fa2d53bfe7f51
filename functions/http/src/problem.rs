//! Refusals and failures as RFC 9457 problem details (`application/problem+json`),
//! carrying the socket's error codes: a client handles `conflict` or `rate_limited` the
//! same way over both. The status follows the code; `retryAfterMs` also becomes a
//! `Retry-After` header (whole seconds, rounded up).

use deltacast::protocol::{ErrorCode, ErrorFrame};
use lambda_http::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::reply::{Body, with_type};

/// The problem's `type`: a URI per code, documented in docs/http.md.
const TYPE_BASE: &str = "https://deltacast.dev/problems/";

/// A refused or failed request.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// The code: a socket error code, or one of HTTP's own (`unauthorized`, `not_found`,
    /// `method_not_allowed`).
    pub code: String,
    /// What went wrong, for people; names the field and the limit.
    pub detail: String,
    /// Members the code carries (`seq`, `epoch`, `retryAfterMs`, `channel`, `id`).
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem with no extra members.
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// `400 bad_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    /// `500 internal`, with a message that gives nothing away (the cause is logged).
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; retry the request",
        )
    }

    /// The answer to a storage failure: logged here, `500 internal` to the caller.
    pub fn storage(error: &deltacast::store::StoreError) -> Self {
        tracing::error!(error = %error, "storage failed");
        Self::internal()
    }

    /// The problem an error frame describes, with the status its code means over HTTP.
    pub fn from_frame(frame: &ErrorFrame) -> Self {
        let mut value = serde_json::to_value(frame).unwrap_or_else(|_| json!({}));
        let object = value
            .as_object_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut extra = object;
        for key in ["type", "code", "message"] {
            extra.remove(key);
        }
        Self {
            status: status_of(frame.code),
            code: code_name(frame.code),
            detail: frame.message.clone(),
            extra,
        }
    }

    /// The problem document.
    pub fn to_json(&self) -> Value {
        let mut document = Map::new();
        document.insert("type".into(), format!("{TYPE_BASE}{}", self.code).into());
        document.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        document.insert("status".into(), self.status.as_u16().into());
        document.insert("detail".into(), self.detail.clone().into());
        document.insert("code".into(), self.code.clone().into());
        for (key, value) in &self.extra {
            document.insert(key.clone(), value.clone());
        }
        Value::Object(document)
    }

    /// The response: `application/problem+json`, with `Retry-After` when the problem
    /// says when to retry, and `WWW-Authenticate` on a 401.
    pub fn into_response(self) -> Response<Body> {
        let mut response = with_type(
            self.status,
            "application/problem+json",
            self.to_json().to_string(),
        );
        let headers = response.headers_mut();
        if let Some(ms) = self.extra.get("retryAfterMs").and_then(Value::as_u64) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(ms.div_ceil(1000)));
        }
        if let Some(Ok(allow)) = self
            .extra
            .get("allow")
            .and_then(Value::as_str)
            .map(HeaderValue::from_str)
        {
            headers.insert(header::ALLOW, allow);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"deltacast\""),
            );
        }
        response
    }
}

/// The HTTP status of a socket error code.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Conflict | ErrorCode::PresenceFull => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::InFlight => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
    }
}

/// The code as on the wire (`rate_limited`, ...).
fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "internal".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast::answers;
    use deltacast::store::Head;

    #[test]
    fn a_conflict_is_409_with_the_head_and_the_socket_code() {
        let frame = answers::conflict(
            3,
            Head {
                epoch: Some("e1".into()),
                seq: 7,
            },
        );
        let problem = Problem::from_frame(&frame);
        assert_eq!(problem.status, StatusCode::CONFLICT);
        let document = problem.to_json();
        assert_eq!(document["code"], "conflict");
        assert_eq!(document["status"], 409);
        assert_eq!(document["seq"], 7);
        assert_eq!(document["epoch"], "e1");
        assert_eq!(document["type"], "https://deltacast.dev/problems/conflict");
        assert_eq!(document["title"], "Conflict");
    }

    #[test]
    fn a_rate_limit_says_when_to_retry_in_a_header_rounded_up_to_seconds() {
        let frame = ErrorFrame::new(ErrorCode::RateLimited, "slow down").retry_after(1200);
        let response = Problem::from_frame(&frame).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn every_socket_code_has_a_status() {
        for (code, status) in [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::Conflict, 409),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::InFlight, 503),
            (ErrorCode::Internal, 500),
            (ErrorCode::PresenceFull, 409),
            (ErrorCode::TokenExpired, 401),
        ] {
            assert_eq!(status_of(code).as_u16(), status, "{code:?}");
        }
    }
}
