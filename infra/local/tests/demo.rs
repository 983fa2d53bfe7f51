//! The demo app under `/demo/` over real HTTP: the gateway (no functions, no DynamoDB)
//! serving a folder written by each test, with the stack's own development tokens:
//! files and their types, redirects, refusals of paths that could leave the folder, the
//! methods it answers, and the token route a page asks for its user's token (and that
//! only a page of its own origin can read, and that signs with a secret of the stack's
//! own only when `serve --demo-tokens` allows it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use deltacast::auth::{Action, JwtConfig, JwtVerifier};
use deltacast::config::Env;
use deltacast_local::gateway::{DemoApp, DemoTokens, Gateway, GatewayConfig};
use deltacast_local::stack::{DEV_JWT_SECRET, StackOptions, dev_tokens};
use serde_json::Value;
use support::{Answer, NoFunction, no_routes};

mod support;

/// A demo build in a fresh folder: `<case>/dist` holds the app, and `<case>/Cargo.toml`
/// beside it is what a path climbing out of `dist` would reach.
fn demo_build(case: &str) -> PathBuf {
    let case = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("demo-{case}"));
    let _ = std::fs::remove_dir_all(&case);
    let dist = case.join("dist");
    std::fs::create_dir_all(dist.join("assets")).expect("demo folder");
    std::fs::write(case.join("Cargo.toml"), "outside the demo").expect("write");
    std::fs::write(dist.join("index.html"), "<h1>demo</h1>").expect("write");
    std::fs::write(dist.join("app.js"), "console.log('demo');").expect("write");
    std::fs::write(dist.join("style.css"), "body{}").expect("write");
    std::fs::write(dist.join("assets/logo.svg"), "<svg/>").expect("write");
    std::os::unix::fs::symlink(case.join("Cargo.toml"), dist.join("escape.js")).expect("symlink");
    dist
}

/// A gateway on loopback serving `demo` (if any), its tokens signed with the development
/// secret as the stack signs them.
async fn gateway(demo: Option<&Path>) -> Gateway<NoFunction> {
    gateway_with_tokens(
        demo,
        DemoTokens::Sign(dev_tokens(DEV_JWT_SECRET.to_owned())),
    )
    .await
}

/// A gateway on loopback serving `demo` (if any), its token route doing what `tokens` says.
async fn gateway_with_tokens(demo: Option<&Path>, tokens: DemoTokens) -> Gateway<NoFunction> {
    let config = GatewayConfig {
        demo: demo.map(|dir| DemoApp::new(dir, tokens).expect("a demo folder")),
        ..GatewayConfig::default()
    };
    Gateway::start("127.0.0.1:0".parse().expect("address"), no_routes(), config)
        .await
        .expect("gateway starts")
}

/// `method path` over a fresh HTTP/1.1 connection, with `Host` set to `host` (the
/// gateway's address when `None`).
async fn request(address: SocketAddr, method: &str, path: &str, host: Option<&str>) -> Answer {
    support::request(address, method, path, host, &[], b"").await
}

/// `GET path` from `gateway`.
async fn get(gateway: &Gateway<NoFunction>, path: &str) -> Answer {
    request(gateway.address(), "GET", path, None).await
}

#[tokio::test]
async fn the_demo_folder_is_served_with_its_index_and_content_types_never_cached() {
    // GIVEN a gateway serving a demo build
    let dist = demo_build("files");
    let gateway = gateway(Some(&dist)).await;

    // WHEN a browser asks for the page and its files
    let index = get(&gateway, "/demo/").await;
    let script = get(&gateway, "/demo/app.js").await;
    let style = get(&gateway, "/demo/style.css?v=2").await;
    let logo = get(&gateway, "/demo/assets/logo.svg").await;

    // THEN each comes with its type, and none may be cached
    assert_eq!(index.status, 200);
    assert_eq!(index.body, "<h1>demo</h1>");
    assert_eq!(
        index.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(script.status, 200);
    assert_eq!(script.body, "console.log('demo');");
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        style.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(logo.header("content-type"), Some("image/svg+xml"));
    for answer in [&index, &script, &style, &logo] {
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn head_gives_the_length_and_type_without_the_body() {
    let dist = demo_build("head");
    let gateway = gateway(Some(&dist)).await;

    let answer = request(gateway.address(), "HEAD", "/demo/app.js", None).await;

    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        answer.header("content-length"),
        Some("console.log('demo');".len().to_string().as_str())
    );
    assert_eq!(answer.body, "");
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_bare_demo_path_redirects_to_the_folder_keeping_the_query() {
    let dist = demo_build("redirect");
    let gateway = gateway(Some(&dist)).await;

    let plain = get(&gateway, "/demo").await;
    let with_user = get(&gateway, "/demo?user=ann").await;

    assert_eq!(plain.status, 308);
    assert_eq!(plain.header("location"), Some("/demo/"));
    assert_eq!(with_user.status, 308);
    assert_eq!(with_user.header("location"), Some("/demo/?user=ann"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn no_path_leaves_the_demo_folder_and_missing_files_are_not_found() {
    // GIVEN a demo build with a file beside it and a symlink in it that points there
    let dist = demo_build("traversal");
    let gateway = gateway(Some(&dist)).await;

    // WHEN paths try to climb out, or name nothing
    for path in [
        "/demo/../Cargo.toml",
        "/demo/%2e%2e/Cargo.toml",
        "/demo/%2E%2E/Cargo.toml",
        "/demo/..%2fCargo.toml",
        "/demo/assets/..%2f..%2fCargo.toml",
        "/demo/..%5cCargo.toml",
        "/demo//etc/passwd",
        "/demo/%2fetc/passwd",
        "/demo/app.js%00.html",
        "/demo/escape.js",
        "/demo/missing.js",
        "/demo/assets",
    ] {
        let answer = get(&gateway, path).await;
        // THEN each is 404, and nothing outside the folder is ever in the answer
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(!answer.body.contains("outside the demo"), "{path}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn other_methods_are_refused_with_the_ones_allowed() {
    let dist = demo_build("methods");
    let gateway = gateway(Some(&dist)).await;

    for (method, path) in [
        ("POST", "/demo/app.js"),
        ("PUT", "/demo/"),
        ("DELETE", "/demo"),
        ("POST", "/demo/token?user=ann"),
    ] {
        let answer = request(gateway.address(), method, path, None).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.header("allow"), Some("GET, HEAD"), "{method} {path}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn without_a_demo_folder_demo_paths_are_not_found() {
    let gateway = gateway(None).await;

    for path in ["/demo/", "/demo/index.html", "/demo/token?user=ann"] {
        assert_eq!(get(&gateway, path).await.status, 404, "{path}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_token_route_gives_this_machine_a_token_the_authorizer_accepts() {
    // GIVEN a gateway serving the demo, and the verifier the authorizer builds for the
    // stack's secret
    let dist = demo_build("token");
    let gateway = gateway(Some(&dist)).await;
    let env = Env::from_pairs([("JWT_SECRET", DEV_JWT_SECRET.to_owned())]);
    let verifier = JwtVerifier::new(&JwtConfig::from_env(&env).expect("config")).expect("verifier");

    // WHEN the demo page asks for ann's token
    let answer = get(&gateway, "/demo/token?user=ann").await;

    // THEN it is ann's, for everything the demo does on its channels, for hours
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    let token = body["token"].as_str().expect("a token");
    let identity = verifier.verify(token).await.expect("a valid token");
    assert_eq!(identity.sub, "ann");
    for channel in ["chat:demo", "state:poll"] {
        for action in [
            Action::Subscribe,
            Action::Publish,
            Action::History,
            Action::Presence,
        ] {
            assert!(
                identity.capabilities.grants(channel, action),
                "{action:?} on {channel}"
            );
        }
    }
    assert!(identity.exp > deltacast::clock::now_secs() + 3600);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_user_that_is_not_valid_gets_400_naming_the_rule() {
    let dist = demo_build("bad-user");
    let gateway = gateway(Some(&dist)).await;

    for path in [
        "/demo/token?user=bad%20user",
        "/demo/token?user=",
        "/demo/token",
    ] {
        let answer = get(&gateway, path).await;
        assert_eq!(answer.status, 400, "{path}");
        assert!(
            answer.body.contains("1 to 123 characters"),
            "{path}: {}",
            answer.body
        );
        assert!(
            answer.body.contains("the user (?user= of /demo/token)"),
            "it names the route's own input: {}",
            answer.body
        );
        assert!(!answer.body.contains("--user"), "{}", answer.body);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn the_token_route_refuses_a_host_that_is_not_loopback() {
    // GIVEN a page on another name that resolves to this machine (DNS rebinding)
    let dist = demo_build("host");
    let gateway = gateway(Some(&dist)).await;

    // WHEN it asks for a token
    let answer = request(
        gateway.address(),
        "GET",
        "/demo/token?user=ann",
        Some("evil.example:3001"),
    )
    .await;

    // THEN it is refused, saying why (peers off this machine: see the unit tests of
    // gateway::demo, as tests never listen beyond loopback)
    assert_eq!(answer.status, 403);
    assert!(
        answer.body.contains("only the machine the stack runs on"),
        "{}",
        answer.body
    );
    assert!(!answer.body.contains("token\":"), "{}", answer.body);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_page_of_another_origin_cannot_read_a_token() {
    // GIVEN a gateway serving the demo, and a page of another origin on this machine
    let dist = demo_build("cors");
    let gateway = gateway(Some(&dist)).await;
    let origin = [("Origin", "http://127.0.0.1:8080")];

    // WHEN it asks for a token, and first (as a browser would for a request it may not
    // send as it is) with a preflight
    let answer = support::request(
        gateway.address(),
        "GET",
        "/demo/token?user=ann",
        None,
        &origin,
        b"",
    )
    .await;
    let preflight = support::request(
        gateway.address(),
        "OPTIONS",
        "/demo/token?user=ann",
        None,
        &[
            origin[0],
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
        b"",
    )
    .await;

    // THEN neither allows that origin (or any): the browser keeps the token from the page
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    assert_ne!(preflight.status, 200, "{}", preflight.body);
    assert_eq!(preflight.header("access-control-allow-origin"), None);
    assert!(!preflight.body.contains("token\":"), "{}", preflight.body);
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_a_secret_of_its_own_the_stack_hands_out_no_token_unless_told_to() {
    // GIVEN a stack whose tokens are signed with a JWT_SECRET of its own, without
    // `serve --demo-tokens`
    let dist = demo_build("own-secret");
    let mut options = StackOptions::new(PathBuf::from("."));
    options.parameters.insert(
        "JwtSecret".into(),
        "a-secret-of-our-own-at-least-32-bytes-long".into(),
    );
    let gateway = gateway_with_tokens(Some(&dist), options.demo_token_mode()).await;

    // WHEN this machine asks for a token
    let answer = get(&gateway, "/demo/token?user=ann").await;

    // THEN it is refused, naming the flag that allows it
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert!(answer.body.contains("--demo-tokens"), "{}", answer.body);
    assert!(!answer.body.contains("token\":"), "{}", answer.body);
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_demo_tokens_the_stack_signs_with_its_own_secret() {
    // GIVEN a stack with a JWT_SECRET of its own, run with `serve --demo-tokens`
    let dist = demo_build("own-secret-allowed");
    let mut options = StackOptions::new(PathBuf::from("."));
    options.parameters.insert(
        "JwtSecret".into(),
        "a-secret-of-our-own-at-least-32-bytes-long".into(),
    );
    options.demo_tokens = true;
    let gateway = gateway_with_tokens(Some(&dist), options.demo_token_mode()).await;
    let env = Env::from_pairs([(
        "JWT_SECRET",
        "a-secret-of-our-own-at-least-32-bytes-long".to_owned(),
    )]);
    let verifier = JwtVerifier::new(&JwtConfig::from_env(&env).expect("config")).expect("verifier");

    // WHEN this machine asks for a token
    let answer = get(&gateway, "/demo/token?user=ann").await;

    // THEN it is signed with that secret
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body: Value = serde_json::from_str(&answer.body).expect("JSON");
    let token = body["token"].as_str().expect("a token");
    let identity = verifier.verify(token).await.expect("a valid token");
    assert_eq!(identity.sub, "ann");
    gateway.shutdown().await;
}

#[tokio::test]
async fn with_the_development_secret_the_stack_signs_without_being_told() {
    let dist = demo_build("dev-secret");
    let options = StackOptions::new(PathBuf::from("."));
    let gateway = gateway_with_tokens(Some(&dist), options.demo_token_mode()).await;

    let answer = get(&gateway, "/demo/token?user=ann").await;

    assert_eq!(answer.status, 200, "{}", answer.body);
    gateway.shutdown().await;
}
