//! The routes: which one a method and path ask for. Paths are versioned (`/v1`); a
//! channel name in a path may be percent-encoded (`chat%3Alobby`) or not.

use deltacast::protocol::Channel;
use lambda_http::http::{Method, StatusCode};

use crate::problem::Problem;

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `POST /v1/channels/{channel}/messages`: publish one message.
    Publish(Channel),
    /// `POST /v1/messages`: publish a batch across channels.
    PublishBatch,
    /// `GET /v1/channels/{channel}/messages`: a page of history.
    History(Channel),
    /// `GET /v1/channels/{channel}/state`: a state channel's document.
    State(Channel),
    /// `GET /v1/channels/{channel}/presence`: a page of the channel's members.
    Presence(Channel),
    /// `GET /v1/channels/{channel}/events`: a stream of server-sent events.
    Events(Channel),
    /// `GET /v1/openapi.json`: the API's OpenAPI document.
    OpenApi,
}

impl Route {
    /// The route `method` and `path` ask for: 404 for a path no route has, 405 (naming
    /// the method allowed) for a method the path does not take, 400 for a bad channel.
    pub fn of(method: &Method, path: &str) -> Result<Self, Problem> {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let (route, allowed) = match segments.as_slice() {
            ["v1", "messages"] => (
                Some(Self::PublishBatch).filter(|_| method == Method::POST),
                "POST",
            ),
            ["v1", "openapi.json"] => {
                (Some(Self::OpenApi).filter(|_| method == Method::GET), "GET")
            }
            ["v1", "channels", channel, resource] => {
                let channel = channel_of(channel)?;
                match (*resource, method) {
                    ("messages", &Method::POST) => (Some(Self::Publish(channel)), ""),
                    ("messages", &Method::GET) => (Some(Self::History(channel)), ""),
                    ("messages", _) => (None, "GET, POST"),
                    ("state", &Method::GET) => (Some(Self::State(channel)), ""),
                    ("presence", &Method::GET) => (Some(Self::Presence(channel)), ""),
                    ("events", &Method::GET) => (Some(Self::Events(channel)), ""),
                    ("state" | "presence" | "events", _) => (None, "GET"),
                    _ => return Err(not_found(path)),
                }
            }
            _ => return Err(not_found(path)),
        };
        route.ok_or_else(|| {
            let mut problem = Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}: use {allowed}"),
            );
            problem.extra.insert("allow".into(), allowed.into());
            problem
        })
    }

    /// The route's name in logs: its path template, never the channel.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Publish(_) => "POST /v1/channels/{channel}/messages",
            Self::PublishBatch => "POST /v1/messages",
            Self::History(_) => "GET /v1/channels/{channel}/messages",
            Self::State(_) => "GET /v1/channels/{channel}/state",
            Self::Presence(_) => "GET /v1/channels/{channel}/presence",
            Self::Events(_) => "GET /v1/channels/{channel}/events",
            Self::OpenApi => "GET /v1/openapi.json",
        }
    }
}

/// A channel from a path segment, percent-decoded and checked as the socket checks it.
fn channel_of(segment: &str) -> Result<Channel, Problem> {
    let name = percent_encoding::percent_decode_str(segment).decode_utf8_lossy();
    Channel::parse(&name)
        .map_err(|reason| Problem::bad_request(format!("channel in the path: {reason}")))
}

fn not_found(path: &str) -> Problem {
    let shown: String = path.chars().take(128).collect();
    Problem::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route {shown}: the API serves /v1/channels/{{channel}}/messages, /state, /presence and /events, /v1/messages and /v1/openapi.json"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(name: &str) -> Channel {
        Channel::parse(name).unwrap()
    }

    #[test]
    fn each_route_is_found_with_its_channel_decoded() {
        let cases = [
            (
                Method::POST,
                "/v1/channels/chat:a/messages",
                Route::Publish(channel("chat:a")),
            ),
            (
                Method::GET,
                "/v1/channels/chat%3Aa/messages",
                Route::History(channel("chat:a")),
            ),
            (
                Method::GET,
                "/v1/channels/state:p/state",
                Route::State(channel("state:p")),
            ),
            (
                Method::GET,
                "/v1/channels/room/presence/",
                Route::Presence(channel("room")),
            ),
            (
                Method::GET,
                "/v1/channels/news/events",
                Route::Events(channel("news")),
            ),
            (Method::POST, "/v1/messages", Route::PublishBatch),
            (Method::GET, "/v1/openapi.json", Route::OpenApi),
        ];
        for (method, path, route) in cases {
            assert_eq!(Route::of(&method, path).unwrap(), route, "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405_naming_the_allowed_one() {
        let missing = Route::of(&Method::GET, "/v2/channels/a/messages").unwrap_err();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        assert_eq!(missing.code, "not_found");
        let missing = Route::of(&Method::GET, "/v1/channels/a/nothing").unwrap_err();
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let wrong = Route::of(&Method::DELETE, "/v1/channels/a/messages").unwrap_err();
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.extra["allow"], "GET, POST");
        let wrong = Route::of(&Method::GET, "/v1/messages").unwrap_err();
        assert_eq!(wrong.extra["allow"], "POST");
        let response = wrong.into_response();
        assert_eq!(
            response.headers()["allow"],
            "POST",
            "RFC 9110 asks for the header"
        );
    }

    #[test]
    fn a_bad_channel_in_the_path_is_400_naming_it() {
        let bad = Route::of(&Method::GET, "/v1/channels/a%20b/messages").unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(
            bad.detail.starts_with("channel in the path: "),
            "{}",
            bad.detail
        );
    }
}
