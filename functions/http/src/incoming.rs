//! A request as the routes see it, taken from `lambda_http`'s: method, path, query,
//! headers, body, the caller AWS authenticated (a request through the function's IAM
//! URL), and when the invocation must end. Routes are written against this, so their
//! tests need no Lambda event.

use std::time::Duration;

use bytes::Bytes;
use deltacast::clock;
use lambda_http::http::{HeaderMap, Method};
use lambda_http::request::RequestContext;
use lambda_http::{Request, RequestExt};

use crate::problem::Problem;

/// One HTTP request.
#[derive(Clone, Debug)]
pub struct Incoming {
    /// The method.
    pub method: Method,
    /// The path, percent-encoded as sent.
    pub path: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The AWS principal that signed the request, when it came through the IAM URL
    /// (Lambda fills `requestContext.authorizer.iam` only then; nobody can forge it).
    pub iam: Option<String>,
    /// When the invocation times out, Unix ms.
    pub deadline_ms: u64,
}

impl Incoming {
    /// The request `lambda_http` decoded.
    pub fn from_lambda(request: Request) -> Self {
        let deadline_ms = request
            .lambda_context_ref()
            .map(|context| context.deadline)
            .filter(|deadline| *deadline > 0)
            .unwrap_or_else(|| clock::now_ms() + 900_000);
        let iam = match request.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(context)) => context
                .authorizer
                .as_ref()
                .and_then(|authorizer| authorizer.iam.as_ref())
                .and_then(|iam| iam.user_arn.clone().or_else(|| iam.caller_id.clone())),
            _ => None,
        };
        let query = request.uri().query().map(parse_query).unwrap_or_default();
        let (parts, body) = request.into_parts();
        Self {
            method: parts.method,
            path: parts.uri.path().to_owned(),
            query,
            headers: parts.headers,
            body: Bytes::copy_from_slice(body.as_ref()),
            iam,
            deadline_ms,
        }
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A header's value, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// Query parameter `name` as a whole number, if given; a problem naming it if it is
    /// not one.
    pub fn number(&self, name: &str) -> Result<Option<u64>, Problem> {
        self.param(name)
            .map(|text| {
                text.parse::<u64>().map_err(|_| {
                    Problem::bad_request(format!(
                        "query parameter `{name}` must be a whole number ≥ 0, not {:?}",
                        text.chars().take(32).collect::<String>()
                    ))
                })
            })
            .transpose()
    }

    /// Refuses a query parameter the route does not take, naming it and those it takes.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), Problem> {
        match self
            .query
            .iter()
            .find(|(key, _)| !known.contains(&key.as_str()))
        {
            Some((key, _)) => Err(Problem::bad_request(format!(
                "unknown query parameter `{}`: this route takes {}",
                key.chars().take(32).collect::<String>(),
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// Time left before the invocation's deadline.
    pub fn time_left(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.saturating_sub(clock::now_ms()))
    }
}

/// `a=1&b=x%3Ay` as decoded pairs (`+` is a space, as forms send it).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decodes `text`, reading `+` as a space.
fn decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltacast_tests::events;

    /// The function URL event of `events/http-publish.json`, as `lambda_http`
    /// decodes it, changed by `edit`.
    fn fixture(edit: impl FnOnce(&mut serde_json::Value)) -> Incoming {
        let mut event = events::fixture("http-publish.json");
        edit(&mut event);
        Incoming::from_lambda(lambda_http::request::from_str(&event.to_string()).unwrap())
    }

    #[test]
    fn a_function_url_event_becomes_the_request_the_routes_see() {
        let request = fixture(|_| {});
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/v1/channels/chat:lobby/messages");
        assert!(
            request
                .header("authorization")
                .is_some_and(|value| value.starts_with("Bearer eyJ")),
            "the event's token reaches the routes"
        );
        assert_eq!(
            &request.body[..],
            br#"{"id":"bench-1","data":{"text":"hello"}}"#
        );
        assert_eq!(request.iam, None, "the public URL names no AWS caller");
        assert!(request.query.is_empty());
    }

    #[test]
    fn through_the_iam_url_the_signer_is_known_and_the_query_decoded() {
        let request = fixture(|event| {
            event["rawQueryString"] = "since=3&epoch=e%3A1".into();
            event["queryStringParameters"] = serde_json::json!({"since": "3", "epoch": "e:1"});
            event["requestContext"]["authorizer"] = serde_json::json!({"iam": {
                "accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AROAEXAMPLE:orders",
                "cognitoIdentity": null, "principalOrgId": null,
                "userArn": "arn:aws:sts::123456789012:assumed-role/orders/worker", "userId": "AROAEXAMPLE:orders"
            }});
        });
        assert_eq!(
            request.iam.as_deref(),
            Some("arn:aws:sts::123456789012:assumed-role/orders/worker")
        );
        assert_eq!(request.param("epoch"), Some("e:1"));
        assert_eq!(request.param("since"), Some("3"));
    }

    #[test]
    fn a_query_is_decoded_in_order() {
        assert_eq!(
            parse_query("since=3&epoch=e%3A1&token=a+b&empty"),
            [
                ("since".to_owned(), "3".to_owned()),
                ("epoch".to_owned(), "e:1".to_owned()),
                ("token".to_owned(), "a b".to_owned()),
                ("empty".to_owned(), String::new()),
            ]
        );
    }
}
