//! Sending frames to connections through the API Gateway Management API, with the
//! per-connection retry the fan-out relies on.

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::error::SdkError;
use aws_sdk_apigatewaymanagement::operation::post_to_connection::PostToConnectionError;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use aws_smithy_types::error::display::DisplayErrorContext;

/// Why a frame was not delivered.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PushError {
    /// The connection no longer exists (HTTP 410).
    #[error("connection is gone")]
    Gone,
    /// API Gateway throttled the call (HTTP 429).
    #[error("throttled")]
    Throttled,
    /// The frame is over API Gateway's 128 KB limit.
    #[error("frame too large")]
    TooLarge,
    /// The caller may not post to this connection (HTTP 403).
    #[error("forbidden")]
    Forbidden,
    /// Anything else: a 5xx, a timeout, a network error.
    #[error("post failed: {0}")]
    Failed(String),
}

impl PushError {
    /// Whether trying again may succeed.
    pub fn retryable(&self) -> bool {
        matches!(self, PushError::Throttled | PushError::Failed(_))
    }
}

/// Something that delivers frames to connections.
pub trait Push: Send + Sync {
    /// Sends one text frame to one connection.
    fn post(
        &self,
        connection_id: &str,
        frame: &str,
    ) -> impl Future<Output = Result<(), PushError>> + Send;
}

/// The API Gateway Management API.
#[derive(Clone, Debug)]
pub struct ManagementApi {
    client: Client,
}

impl ManagementApi {
    /// A client for `endpoint` (`https://{api-id}.execute-api.{region}.amazonaws.com/{stage}`).
    /// The SDK's own retries are off: [`post_with_retry`] decides what to retry.
    pub fn new(sdk: &SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
            .endpoint_url(endpoint)
            .retry_config(RetryConfig::disabled())
            .build();
        Self {
            client: Client::from_conf(config),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl Push for ManagementApi {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        self.client
            .post_to_connection()
            .connection_id(connection_id)
            .data(Blob::new(frame.as_bytes()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
    }
}

fn classify<R: std::fmt::Debug>(err: SdkError<PostToConnectionError, R>) -> PushError {
    if let SdkError::ServiceError(service) = &err {
        match service.err() {
            PostToConnectionError::GoneException(_) => return PushError::Gone,
            PostToConnectionError::LimitExceededException(_) => return PushError::Throttled,
            PostToConnectionError::PayloadTooLargeException(_) => return PushError::TooLarge,
            PostToConnectionError::ForbiddenException(_) => return PushError::Forbidden,
            _ => {}
        }
    }
    PushError::Failed(DisplayErrorContext(&err).to_string())
}

/// How hard to try one post.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries in all, at least 1.
    pub attempts: u32,
    /// The first backoff; doubled each retry, capped at 2 s, with full jitter.
    pub base: Duration,
}

impl RetryPolicy {
    fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .base
            .saturating_mul(1 << retry.min(16))
            .min(Duration::from_secs(2));
        cap.mul_f64(rand::random::<f64>())
    }
}

/// Posts a frame, retrying throttling and transient failures with backoff and jitter.
pub async fn post_with_retry<P: Push>(
    push: &P,
    connection_id: &str,
    frame: &str,
    policy: RetryPolicy,
) -> Result<(), PushError> {
    let mut retry = 0;
    loop {
        match push.post(connection_id, frame).await {
            Err(err) if err.retryable() && retry + 1 < policy.attempts.max(1) => {
                tokio::time::sleep(policy.delay(retry)).await;
                retry += 1;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers posts from a script, for testing the retry loop without a network.
    struct Scripted(Mutex<Vec<Result<(), PushError>>>);

    impl Push for Scripted {
        async fn post(&self, _: &str, _: &str) -> Result<(), PushError> {
            self.0.lock().unwrap().remove(0)
        }
    }

    const FAST: RetryPolicy = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn retries_throttling_and_transient_failures() {
        let push = Scripted(Mutex::new(vec![
            Err(PushError::Throttled),
            Err(PushError::Failed("503".into())),
            Ok(()),
        ]));
        assert_eq!(post_with_retry(&push, "c", "f", FAST).await, Ok(()));
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts() {
        let push = Scripted(Mutex::new(vec![
            Err(PushError::Throttled),
            Err(PushError::Throttled),
            Err(PushError::Throttled),
            Ok(()),
        ]));
        assert_eq!(
            post_with_retry(&push, "c", "f", FAST).await,
            Err(PushError::Throttled)
        );
        assert_eq!(push.0.lock().unwrap().len(), 1, "made exactly 3 attempts");
    }

    #[tokio::test]
    async fn does_not_retry_gone_connections() {
        let push = Scripted(Mutex::new(vec![Err(PushError::Gone), Ok(())]));
        assert_eq!(
            post_with_retry(&push, "c", "f", FAST).await,
            Err(PushError::Gone)
        );
    }

    #[test]
    fn backoff_is_capped_and_jittered() {
        let policy = RetryPolicy {
            attempts: 10,
            base: Duration::from_millis(100),
        };
        for retry in 0..20 {
            assert!(policy.delay(retry) <= Duration::from_secs(2));
        }
    }
}
