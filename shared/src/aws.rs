//! AWS SDK configuration, loaded once per process. Endpoints come from configuration
//! (`AWS_ENDPOINT_URL_DYNAMODB`, `MANAGEMENT_ENDPOINT`), never from `if local` branches,
//! so the same binaries run against AWS, DynamoDB Local and the local gateway.
//!
//! # Start-up time
//!
//! Lambda bills and users wait for a function's init, so [`load`] builds only what the
//! functions use. Measured with `make bench` (start-up section; instruction counts with
//! `valgrind --tool=callgrind`), the default `aws_config` loading made an SDK function's
//! init about 3× that of a hello-world Lambda, and 35× its instructions:
//! - **Credentials come from the environment only** (`AWS_ACCESS_KEY_ID`,
//!   `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`: how Lambda hands a function its
//!   role). The default chain also builds the profile, web-identity, ECS and IMDS
//!   providers, and with them an STS client that parses its own copy of the partition
//!   table and loads the trust roots. Profiles, SSO and instance metadata are never
//!   consulted.
//! - **The region comes from `AWS_REGION`** (or `AWS_DEFAULT_REGION`), as Lambda sets it,
//!   instead of a chain that ends in IMDS.
//! - **Trust roots load on the first request**, not when a client is built. The SDK's
//!   default HTTPS client builds a throwaway connector for every SDK client constructed
//!   (reading the system's roots once per process — on Debian a directory of about 300
//!   files, most of the time — and parsing them for each client), then builds the real
//!   one on the first request anyway. Here only the real one is built: certificates are
//!   verified as before, against the same roots, and the first request pays the loading.
//!
//! All clients built from the configuration share its HTTPS client (connections are
//! pooled per host, as before). Everything else (endpoint variables, retries, timeouts,
//! FIPS and dual-stack switches) is resolved by `aws_config` as usual.

use aws_config::environment::{
    EnvironmentVariableCredentialsProvider, EnvironmentVariableRegionProvider,
};
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

use crate::config::Settings;
use crate::store::{Lifetimes, Store};

/// Loads the SDK configuration from the Lambda environment: credentials and region from
/// their variables, everything else as `aws_config` resolves it.
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(EnvironmentVariableCredentialsProvider::new())
        .region(EnvironmentVariableRegionProvider::new())
        .http_client(https_client())
        .load()
        .await
}

/// The store for `settings`, with a DynamoDB client built from `sdk`.
pub fn store(sdk: &SdkConfig, settings: &Settings) -> Store {
    Store::new(
        aws_sdk_dynamodb::Client::new(sdk),
        settings.table_name.clone(),
        Lifetimes {
            retention: settings.retention,
            connection_ttl: settings.connection_ttl,
            publish_lease: settings.publish_lease,
        },
    )
}

/// A pooled hyper client with rustls and the system's trust roots, for the calls made
/// without the SDK (Management API posts, JWKS). Plain `http://` is allowed for local
/// endpoints. Loading the roots is the slow part, so build it on first use.
pub(crate) fn hyper_client<B>() -> std::io::Result<HyperClient<B>>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// What [`hyper_client`] builds.
pub(crate) type HyperClient<B> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

/// The SDK's default HTTPS client — hyper 1 with rustls on aws-lc, the system's trust
/// roots, proxies from the environment — whose trust roots load on first use.
fn https_client() -> SharedHttpClient {
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    });
    RootsOnFirstUse(client).into_shared()
}

/// An HTTP client that skips the eager connector its inner client builds when an SDK
/// client is constructed (`validate_base_client_config`, whose only work is loading the
/// trust roots early); connectors, and the roots with them, are built on the first
/// request, then cached by the inner client as before.
#[derive(Debug)]
struct RootsOnFirstUse(SharedHttpClient);

impl HttpClient for RootsOnFirstUse {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_runtime_api::client::http::{HttpConnector, HttpConnectorFuture};
    use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::client::runtime_components::RuntimeComponentsBuilder;
    use aws_smithy_types::config_bag::ConfigBag;
    use aws_smithy_types::error::display::DisplayErrorContext;
    use aws_smithy_types::retry::RetryConfig;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use super::*;

    /// A self-signed server certificate for `localhost` (P-256, not a CA, valid until 2126,
    /// named so that no trusted root can be taken for its issuer) and its key.
    const SELF_SIGNED_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIB1jCCAX2gAwIBAgIUHKH6H3JCScQ/yGkfJ+szBeYg6/4wCgYIKoZIzj0EAwIw
LDEqMCgGA1UEAwwhZGVsdGFjYXN0IHRlc3Qgc2VydmVyICh1bnRydXN0ZWQpMCAX
DTI2MTEyMzE1MzIwMFoYDzIxMjYxMDMwMTUzMjAwWjAsMSowKAYDVQQDDCFkZWx0
YWNhc3QgdGVzdCBzZXJ2ZXIgKHVudHJ1c3RlZCkwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAATuETrGsJd/ii+gNQPMHwpXsplIb89kHPT1dUYLIAI/55j6k1EFkgcX
MUDtX8jmCZ2IxhGzOPILKnogo5C4FWUgo3sweTAdBgNVHQ4EFgQU6gxXzHcdkeUm
tlm3bRCE+MyQFNQwHwYDVR0jBBgwFoAU6gxXzHcdkeUmtlm3bRCE+MyQFNQwFAYD
VR0RBA0wC4IJbG9jYWxob3N0MAwGA1UdEwEB/wQCMAAwEwYDVR0lBAwwCgYIKwYB
BQUHAwEwCgYIKoZIzj0EAwIDRwAwRAIgCF6Umhp9ww9douPlu7Z+upjxerdWUu4H
1G1ANFMHm4oCIF/9/1q0Ac6rAiNrBo/k/vYVTN3MC6gHSMFHdcDf6iPB
-----END CERTIFICATE-----
";
    const SELF_SIGNED_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZl4Xavc2a7L3S/Yr
V6mxWknbZqVH/wwTSc8VwmtIcZGhRANCAATuETrGsJd/ii+gNQPMHwpXsplIb89k
HPT1dUYLIAI/55j6k1EFkgcXMUDtX8jmCZ2IxhGzOPILKnogo5C4FWUg
-----END PRIVATE KEY-----
";

    /// Counts what the SDK asks of an HTTP client; its connections always fail.
    #[derive(Debug, Default)]
    struct Counts {
        validations: AtomicUsize,
        connectors: AtomicUsize,
    }

    #[derive(Debug, Clone, Default)]
    struct CountingClient(Arc<Counts>);

    impl HttpClient for CountingClient {
        fn http_connector(
            &self,
            _: &HttpConnectorSettings,
            _: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.0.connectors.fetch_add(1, Ordering::SeqCst);
            Refused.into_shared()
        }

        fn validate_base_client_config(
            &self,
            _: &RuntimeComponentsBuilder,
            _: &ConfigBag,
        ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
            self.0.validations.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Refused;

    impl HttpConnector for Refused {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            HttpConnectorFuture::ready(Err(ConnectorError::io("refused".into())))
        }
    }

    fn dynamodb(http_client: SharedHttpClient, endpoint: &str) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .http_client(http_client)
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    #[tokio::test]
    async fn clients_are_built_without_a_connector_and_get_one_on_first_request() {
        // GIVEN an HTTP client that counts the SDK's eager validation
        let counts = CountingClient::default();
        let direct = dynamodb(counts.clone().into_shared(), "http://localhost:1");
        assert_eq!(
            counts.0.validations.load(Ordering::SeqCst),
            1,
            "the control"
        );

        // WHEN a client is built with it behind `RootsOnFirstUse`
        let counts = CountingClient::default();
        let client = dynamodb(
            RootsOnFirstUse(counts.clone().into_shared()).into_shared(),
            "http://localhost:1",
        );

        // THEN nothing is built until the first request, which gets its connector
        assert_eq!(counts.0.validations.load(Ordering::SeqCst), 0);
        assert_eq!(counts.0.connectors.load(Ordering::SeqCst), 0);
        assert!(client.list_tables().send().await.is_err());
        assert_eq!(counts.0.connectors.load(Ordering::SeqCst), 1);
        drop(direct);
    }

    #[tokio::test]
    async fn https_still_verifies_certificates() {
        // GIVEN an HTTPS server whose certificate no trusted root signed
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(SELF_SIGNED_CERT.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(SELF_SIGNED_KEY.as_bytes()).expect("key"),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(acceptor.accept(socket).await);
            }
        });

        // WHEN a client built on the configured HTTPS client calls it
        let client = dynamodb(https_client(), &format!("https://localhost:{port}"));
        let error = client
            .list_tables()
            .send()
            .await
            .expect_err("an untrusted certificate is refused");

        // THEN the TLS handshake refused the certificate
        let error = DisplayErrorContext(&error).to_string();
        assert!(error.contains("invalid peer certificate"), "{error}");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }

    #[tokio::test]
    async fn the_configuration_has_the_lazy_client_and_the_environment_providers() {
        let sdk = load().await;
        let client = sdk.http_client().expect("an HTTP client");
        assert!(format!("{client:?}").contains("RootsOnFirstUse"));
        let credentials = format!("{:?}", sdk.credentials_provider().expect("credentials"));
        assert!(
            credentials.contains("EnvironmentVariableCredentialsProvider"),
            "{credentials}"
        );
    }
}
