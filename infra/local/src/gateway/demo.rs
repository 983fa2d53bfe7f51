//! The demo app under `/demo/` (`serve --demo-dir`): the files of the TypeScript client's
//! demo build, and `/demo/token?user=<name>`, which hands the page a development token so
//! that two tabs can be two users without a `make token` each.
//!
//! Files are served only from inside the folder: a path is decoded, refused if any
//! segment could climb out of it (`..`, also percent-encoded, backslashes, NUL, absolute
//! paths), and what it names is canonicalized and must still lie inside the folder (so a
//! symlink cannot lead out either). Everything is `no-store`: the demo is rebuilt while
//! the stack runs.
//!
//! The token route signs whatever user it is asked for, so it answers only this machine:
//! a loopback peer (as the Management API, [`is_this_machine`]) that also names a loopback
//! host (as signed HTTP API requests, [`is_loopback_host`]), so that a web page cannot
//! reach it through a name it resolves to 127.0.0.1. It sends no CORS header, so a page
//! of another origin cannot read a token either. And it signs only with the development
//! secret, which anyone can read in the source, unless `serve --demo-tokens` says
//! otherwise: a loopback peer may be a forwarder (`ssh -R`, a tunnel) for anyone, and
//! then the route would sign with the stack's own secret for them.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::percent_decode_str;
use serde_json::json;
use tracing::{debug, info, warn};

use super::http_api::is_loopback_host;
use super::management::is_this_machine;
use super::state::Shared;
use crate::invoke::Invoke;

/// Makes a development token for a user, or says (naming the rule) why the user is not
/// valid. The stack gives it one that signs as `deltacast-local token` does.
pub type DevTokens = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// What the demo's token route does.
#[derive(Clone)]
pub enum DemoTokens {
    /// It signs: with the development secret, or with the stack's own when `serve
    /// --demo-tokens` allows it.
    Sign(DevTokens),
    /// The stack signs with a secret of its own and `--demo-tokens` was not given: 403,
    /// naming the flag.
    NotAllowed,
    /// Tokens come from an identity provider (`JwtJwksUrl`): 501.
    IdentityProvider,
}

impl fmt::Debug for DemoTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sign(_) => "Sign",
            Self::NotAllowed => "NotAllowed",
            Self::IdentityProvider => "IdentityProvider",
        })
    }
}

/// The demo app the gateway serves under `/demo/`.
#[derive(Clone, Debug)]
pub struct DemoApp {
    /// The served folder, canonical.
    root: PathBuf,
    /// What `/demo/token` does.
    tokens: DemoTokens,
}

/// The demo folder cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum DemoDirError {
    /// It does not exist or cannot be read.
    #[error("demo folder {path}: {source} (build it with `make demo`)")]
    Unreadable {
        /// The folder given.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// It is a file.
    #[error("demo folder {0} is not a folder")]
    NotAFolder(PathBuf),
}

impl DemoApp {
    /// Serves `dir`, which must be a folder; `tokens` says what `/demo/token` does.
    pub fn new(dir: &Path, tokens: DemoTokens) -> Result<Self, DemoDirError> {
        let root = dir
            .canonicalize()
            .map_err(|source| DemoDirError::Unreadable {
                path: dir.to_owned(),
                source,
            })?;
        if !root.is_dir() {
            return Err(DemoDirError::NotAFolder(dir.to_owned()));
        }
        Ok(Self { root, tokens })
    }
}

/// Serves `/demo`, `/demo/` and everything under it.
pub(super) async fn demo<F: Invoke + Clone + 'static>(
    State(shared): State<Arc<Shared<F>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response {
    let Some(app) = shared.config.demo.as_ref() else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    let (method, uri, host) = (
        request.method(),
        request.uri(),
        request.headers().get(header::HOST),
    );
    if method != Method::GET && method != Method::HEAD {
        info!(%method, path = uri.path(), status = 405, "demo");
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let Some(rest) = uri.path().strip_prefix("/demo") else {
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    if rest.is_empty() {
        let location = match uri.query() {
            Some(query) => format!("/demo/?{query}"),
            None => "/demo/".to_owned(),
        };
        return (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest == "token" {
        let host = host.and_then(|host| host.to_str().ok()).unwrap_or_default();
        return token(app, peer, shared.address, host, uri.query());
    }
    serve_file(app, rest, method == Method::HEAD).await
}

/// `/demo/token?user=<name>`: `{"token": "<jwt>"}` for this machine.
fn token(
    app: &DemoApp,
    peer: SocketAddr,
    listening: SocketAddr,
    host: &str,
    query: Option<&str>,
) -> Response {
    if let Some(refusal) = refuse_other_machines(peer, listening, host) {
        return refusal;
    }
    let tokens = match &app.tokens {
        DemoTokens::Sign(tokens) => tokens,
        DemoTokens::NotAllowed => {
            info!(status = 403, "demo token refused: the stack's own secret");
            return plain(
                StatusCode::FORBIDDEN,
                "the stack signs with a JWT_SECRET of your own, and the demo's token route \
                 signs only with the development secret unless the stack runs with \
                 `serve --demo-tokens` (make dev DEV_ARGS=--demo-tokens): a forwarder to \
                 this machine (ssh -R, a tunnel) would otherwise hand anyone tokens signed \
                 with your secret",
            );
        }
        DemoTokens::IdentityProvider => {
            return plain(
                StatusCode::NOT_IMPLEMENTED,
                "tokens come from your identity provider (JwtJwksUrl): the local stack cannot sign one",
            );
        }
    };
    let user = query
        .into_iter()
        .flat_map(|query| form_urlencoded::parse(query.as_bytes()))
        .find_map(|(name, value)| (name == "user").then(|| value.into_owned()))
        .unwrap_or_default();
    match tokens(&user) {
        Ok(token) => {
            info!(user, status = 200, "demo token issued");
            (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                json!({ "token": token }).to_string(),
            )
                .into_response()
        }
        Err(rule) => {
            info!(status = 400, "demo token refused: not a valid user");
            plain(StatusCode::BAD_REQUEST, &rule)
        }
    }
}

/// The 403 for a token asked by another machine (or through a name that is not
/// loopback), or `None` for this machine.
fn refuse_other_machines(peer: SocketAddr, listening: SocketAddr, host: &str) -> Option<Response> {
    if is_this_machine(peer.ip(), listening.ip()) && is_loopback_host(host) {
        return None;
    }
    info!(peer = %peer.ip(), status = 403, "demo token refused to another machine");
    let why = "the demo's token route hands out development tokens for any user, so it \
               answers only the machine the stack runs on, through a loopback address";
    let text = match loopback_page(listening) {
        Some(page) => format!("{why}: open the demo at {page} there"),
        None => format!(
            "{why}, and the stack listens on {} only: run it with --bind 127.0.0.1 (or \
             0.0.0.0) and open the demo at http://127.0.0.1:{}/demo/ there",
            listening.ip(),
            listening.port()
        ),
    };
    Some(plain(StatusCode::FORBIDDEN, &text))
}

/// The demo's page at a loopback address the stack listens on (`listening` itself, or
/// 127.0.0.1 or [::1] when it listens on every address), or `None` when it listens on
/// no loopback address.
fn loopback_page(listening: SocketAddr) -> Option<String> {
    let ip = match listening.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::from(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::from(Ipv6Addr::LOCALHOST),
        ip if ip.to_canonical().is_loopback() => ip,
        _ => return None,
    };
    Some(format!(
        "http://{}/demo/",
        SocketAddr::new(ip, listening.port())
    ))
}

/// A file of the demo, or 404.
async fn serve_file(app: &DemoApp, rest: &str, head: bool) -> Response {
    let Some(relative) = relative_file(rest) else {
        info!(
            status = 404,
            "demo path refused: it could leave the demo folder"
        );
        return plain(StatusCode::NOT_FOUND, "Not Found");
    };
    let found = match app.root.join(&relative).canonicalize() {
        Ok(path) if path.starts_with(&app.root) && path.is_file() => path,
        Ok(_) | Err(_) => {
            info!(path = %relative.display(), status = 404, "demo file not found");
            return plain(StatusCode::NOT_FOUND, "Not Found");
        }
    };
    let headers = [
        (header::CONTENT_TYPE, content_type(&found)),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    if head {
        let length = match tokio::fs::metadata(&found).await {
            Ok(metadata) => metadata.len(),
            Err(error) => return unreadable(&found, &error),
        };
        debug!(path = %relative.display(), status = 200, "demo HEAD");
        return (headers, [(header::CONTENT_LENGTH, length.to_string())]).into_response();
    }
    match tokio::fs::read(&found).await {
        Ok(bytes) => {
            debug!(path = %relative.display(), status = 200, "demo GET");
            (headers, bytes).into_response()
        }
        Err(error) => unreadable(&found, &error),
    }
}

fn unreadable(path: &Path, error: &std::io::Error) -> Response {
    warn!(path = %path.display(), %error, "demo file unreadable");
    plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
}

fn plain(status: StatusCode, text: &str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text.to_owned(),
    )
        .into_response()
}

/// The file a request path names, relative to the demo folder: `rest` is the raw (still
/// percent-encoded) path after `/demo/`; an empty one, or one ending in `/`, names that
/// folder's `index.html`. `None` for anything that could leave the folder or that no
/// file could be called: `.`/`..` segments (encoded or not), empty segments (so no
/// absolute path), backslashes, NUL, text that is not UTF-8.
fn relative_file(rest: &str) -> Option<PathBuf> {
    let decoded = percent_decode_str(rest).decode_utf8().ok()?;
    if decoded.contains(['\\', '\0']) {
        return None;
    }
    let (folders, file) = match decoded.rsplit_once('/') {
        Some((folders, file)) => (Some(folders), file),
        None => (None, &*decoded),
    };
    let mut path = PathBuf::new();
    for segment in folders.into_iter().flat_map(|folders| folders.split('/')) {
        path.push(checked_segment(segment)?);
    }
    path.push(if file.is_empty() {
        "index.html"
    } else {
        checked_segment(file)?
    });
    path.components()
        .all(|component| matches!(component, Component::Normal(_)))
        .then_some(path)
}

/// A path segment that names an entry of its folder, not the folder, its parent or root.
fn checked_segment(segment: &str) -> Option<&str> {
    (!matches!(segment, "" | "." | "..")).then_some(segment)
}

/// The `Content-Type` of a demo file, from its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("map" | "json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relative(rest: &str) -> Option<String> {
        relative_file(rest).map(|path| path.to_string_lossy().into_owned())
    }

    #[test]
    fn the_folder_and_any_subfolder_serve_their_index() {
        assert_eq!(relative("").as_deref(), Some("index.html"));
        assert_eq!(relative("assets/").as_deref(), Some("assets/index.html"));
    }

    #[test]
    fn paths_inside_the_folder_are_decoded() {
        assert_eq!(relative("app.js").as_deref(), Some("app.js"));
        assert_eq!(relative("a/b/c.css").as_deref(), Some("a/b/c.css"));
        assert_eq!(relative("my%20file.js").as_deref(), Some("my file.js"));
        assert_eq!(
            relative("..x").as_deref(),
            Some("..x"),
            "a name, not a parent"
        );
    }

    #[test]
    fn nothing_that_could_leave_the_folder_is_a_file() {
        for rest in [
            "..",
            "../Cargo.toml",
            "a/../../x",
            "%2e%2e/x",
            "%2E%2E/x",
            "..%2fx",
            "..%2Fx",
            ".%2e/x",
            "a/%2e%2e%2f%2e%2e%2fx",
            "/etc/passwd",
            "%2fetc/passwd",
            "a//b",
            "./index.html",
            "a/.",
            "..\\x",
            "..%5cx",
            "a%00.js",
            "%ff.js",
        ] {
            assert_eq!(relative(rest), None, "{rest}");
        }
    }

    #[test]
    fn content_types_follow_the_extension() {
        for (file, expected) in [
            ("index.html", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.MJS", "text/javascript; charset=utf-8"),
            ("style.css", "text/css; charset=utf-8"),
            ("app.js.map", "application/json"),
            ("data.json", "application/json"),
            ("logo.png", "image/png"),
            ("logo.svg", "image/svg+xml"),
            ("favicon.ico", "image/x-icon"),
            ("archive.tar.gz", "application/octet-stream"),
            ("README", "application/octet-stream"),
        ] {
            assert_eq!(content_type(Path::new(file)), expected, "{file}");
        }
    }

    #[tokio::test]
    async fn another_machine_asking_for_a_token_gets_403_saying_why() {
        let listening: SocketAddr = "0.0.0.0:3001".parse().expect("address");
        let lan: SocketAddr = "192.168.1.30:50000".parse().expect("address");
        let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");

        let refusal = refuse_other_machines(lan, listening, "192.168.1.20:3001").expect("refused");
        assert_eq!(refusal.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(refusal.into_body(), 4096)
            .await
            .expect("a body");
        let message = String::from_utf8_lossy(&body);
        assert!(
            message.contains("only the machine the stack runs on"),
            "{message}"
        );
        assert!(
            message.contains("open the demo at http://127.0.0.1:3001/demo/ there"),
            "the real address, not a placeholder: {message}"
        );

        assert!(
            refuse_other_machines(local, listening, "evil.example:3001").is_some(),
            "a name that is not loopback, even from this machine"
        );
        assert!(refuse_other_machines(local, listening, "127.0.0.1:3001").is_none());
        assert!(refuse_other_machines(local, listening, "localhost:3001").is_none());
    }

    async fn refusal_text(peer: &str, listening: &str) -> String {
        let refusal = refuse_other_machines(
            peer.parse().expect("address"),
            listening.parse().expect("address"),
            "192.168.1.20:4000",
        )
        .expect("refused");
        let body = axum::body::to_bytes(refusal.into_body(), 4096)
            .await
            .expect("a body");
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn the_refusal_names_the_loopback_page_the_stack_really_serves() {
        let lan = "192.168.1.30:50000";
        for (listening, page) in [
            ("127.0.0.1:4000", "http://127.0.0.1:4000/demo/"),
            ("0.0.0.0:4000", "http://127.0.0.1:4000/demo/"),
            ("[::]:4000", "http://[::1]:4000/demo/"),
            ("[::1]:4000", "http://[::1]:4000/demo/"),
        ] {
            let text = refusal_text(lan, listening).await;
            assert!(
                text.contains(&format!("open the demo at {page} there")),
                "{listening}: {text}"
            );
            assert!(!text.contains("<port>"), "{text}");
        }
        let text = refusal_text(lan, "192.168.1.20:4000").await;
        assert!(text.contains("listens on 192.168.1.20 only"), "{text}");
        assert!(text.contains("--bind 127.0.0.1"), "{text}");
    }

    #[test]
    fn a_stack_that_cannot_sign_tokens_says_where_they_come_from() {
        let app = DemoApp {
            root: PathBuf::from("/demo"),
            tokens: DemoTokens::IdentityProvider,
        };
        let local: SocketAddr = "127.0.0.1:50000".parse().expect("address");
        let answer = token(&app, local, local, "127.0.0.1:3001", Some("user=ann"));
        assert_eq!(answer.status(), StatusCode::NOT_IMPLEMENTED);
    }

    #[test]
    fn a_folder_that_does_not_exist_is_an_error_naming_it() {
        let error = DemoApp::new(Path::new("/no/such/demo/dist"), DemoTokens::NotAllowed)
            .expect_err("missing");
        assert!(error.to_string().contains("/no/such/demo/dist"), "{error}");
        assert!(error.to_string().contains("make demo"), "{error}");
    }
}
