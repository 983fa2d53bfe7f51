//! A validated configuration with everything derived from it: the run id, the channel
//! names, each publisher's share, the phase deadlines and each client's URL with its
//! token. Every bound of [`LoadConfig`] is checked here, before anything connects.

use std::net::IpAddr;
use std::time::Duration;

use tokio_tungstenite::tungstenite::http::Uri;

use crate::config::{
    LoadConfig, LoadError, MAX_CHANNELS, MAX_CHANNELS_PER_CONNECTION, MAX_CONNECTIONS,
    MAX_PAYLOAD_BYTES, MAX_PUBLISHES, MAX_RATE, MAX_RUN_TIME, TokenSource,
};

/// A validated configuration with everything derived from it.
pub(crate) struct Plan {
    pub(crate) config: LoadConfig,
    pub(crate) run_id: String,
    /// Publishes to send at most.
    pub(crate) publish_total: u64,
    /// How long publishing is expected to take (for churn times).
    pub(crate) publish_expected: Duration,
    /// The hard end of the publish phase, after its start.
    pub(crate) publish_limit: Duration,
    pub(crate) max_run_time: Duration,
}

pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn check_url(url: &str, allow_remote: bool) -> Result<(), LoadError> {
    let invalid = |reason: &str| LoadError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = url.parse().map_err(|_| invalid("not a URL"))?;
    match uri.scheme_str() {
        Some("ws" | "wss") => {}
        _ => return Err(invalid("the scheme must be ws:// or wss://")),
    }
    let host = uri.host().ok_or_else(|| invalid("no host"))?;
    if !allow_remote && !is_loopback(host) {
        return Err(LoadError::RemoteNotAllowed {
            host: host.to_owned(),
        });
    }
    if uri.query().is_some_and(|q| q.contains("token=")) {
        return Err(invalid(
            "give the token through LoadConfig::token, not the URL",
        ));
    }
    Ok(())
}

impl Plan {
    pub(crate) fn new(config: LoadConfig) -> Result<Self, LoadError> {
        check_url(&config.url, config.allow_remote)?;
        let invalid = |text: String| Err(LoadError::InvalidConfig(text));
        let c = &config;
        if c.connections == 0 || c.connections > MAX_CONNECTIONS {
            return invalid(format!("connections must be 1 to {MAX_CONNECTIONS}"));
        }
        if c.channels == 0 || c.channels > MAX_CHANNELS {
            return invalid(format!("channels must be 1 to {MAX_CHANNELS}"));
        }
        if c.channels_per_connection == 0
            || c.channels_per_connection > c.channels
            || c.channels_per_connection > MAX_CHANNELS_PER_CONNECTION
        {
            return invalid(format!(
                "channels per connection must be 1 to min(channels, {MAX_CHANNELS_PER_CONNECTION})"
            ));
        }
        if c.subscribers.is_some_and(|n| n == 0 || n > c.connections) {
            return invalid("subscribers must be 1 to the number of connections".into());
        }
        if c.publishers == 0 || c.publishers > c.connections {
            return invalid("publishers must be 1 to the number of connections".into());
        }
        if !(c.rate_per_second > 0.0 && c.rate_per_second <= MAX_RATE) {
            return invalid(format!("rate must be above 0 and at most {MAX_RATE}"));
        }
        if c.payload_bytes > MAX_PAYLOAD_BYTES {
            return invalid(format!("payload bytes must be at most {MAX_PAYLOAD_BYTES}"));
        }
        if !(0.0..=1.0).contains(&c.churn) {
            return invalid("churn must be between 0 and 1".into());
        }
        if c.churn > 0.0 && (c.churn_rounds == 0 || c.churn_rounds > 100) {
            return invalid("churn rounds must be 1 to 100".into());
        }
        if c.away_min > c.away_max || c.away_max > Duration::from_secs(600) {
            return invalid("away times must satisfy min <= max <= 600 s".into());
        }
        if c.catch_up_attempts == Some(0) {
            return invalid("catch-up attempts must be at least 1 (None: never fall back)".into());
        }
        if c.connect_concurrency == 0 || c.publish_window == 0 {
            return invalid("connect concurrency and publish window must be at least 1".into());
        }
        for (name, value) in [
            ("settle timeout", c.settle_timeout),
            ("drain timeout", c.drain_timeout),
            ("connect timeout", c.connect_timeout),
            ("request timeout", c.request_timeout),
            ("gap timeout", c.gap_timeout),
        ] {
            if value.is_zero() || value > MAX_RUN_TIME {
                return invalid(format!("{name} must be above 0 and at most 6 h"));
            }
        }
        if c.channel_prefix.is_empty()
            || c.channel_prefix.len() > 64
            || !c
                .channel_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-:.@".contains(&b))
        {
            return invalid("the channel prefix must be 1-64 characters of A-Za-z0-9_-:.@".into());
        }
        let by_duration = c
            .duration
            .map(|d| (d.as_secs_f64() * c.rate_per_second).ceil() as u64);
        let publish_total = match (c.publishes, by_duration) {
            (Some(n), Some(m)) => n.min(m),
            (Some(n), None) => n,
            (None, Some(m)) => m,
            (None, None) => return invalid("give publishes, duration or both".into()),
        };
        if publish_total > MAX_PUBLISHES {
            return invalid(format!("at most {MAX_PUBLISHES} publishes per run"));
        }
        if let Some(d) = c.duration
            && (d.is_zero() || d > MAX_RUN_TIME)
        {
            return invalid("duration must be above 0 and at most 6 h".into());
        }
        let publish_expected = Duration::from_secs_f64(publish_total as f64 / c.rate_per_second);
        let publish_limit = match (c.duration, c.publish_timeout) {
            (Some(d), _) => d,
            (None, Some(t)) => t,
            // Room for rate limiting and reconnects, but bounded.
            (None, None) => publish_expected * 2 + Duration::from_secs(30),
        };
        if publish_limit.is_zero() {
            return invalid("the publish timeout must be above 0".into());
        }
        if publish_limit > MAX_RUN_TIME {
            return invalid(
                "the publish phase would last over 6 h; lower publishes or raise the rate".into(),
            );
        }
        let max_run_time = c.max_run_time.unwrap_or(
            c.connect_timeout
                + publish_limit
                + c.drain_timeout
                + c.settle_timeout
                + Duration::from_secs(30),
        );
        if max_run_time.is_zero() || max_run_time > MAX_RUN_TIME {
            return invalid("max run time must be above 0 and at most 6 h".into());
        }
        let run_id = format!("{:08x}", rand::random::<u32>());
        Ok(Self {
            config,
            run_id,
            publish_total,
            publish_expected,
            publish_limit,
            max_run_time,
        })
    }

    pub(crate) fn channel_name(&self, index: usize) -> String {
        format!("{}:{}:{index}", self.config.channel_prefix, self.run_id)
    }

    /// How many publishes publisher `p` sends: the global indexes `p, p + P, ...` below
    /// the total.
    pub(crate) fn quota(&self, p: usize) -> u64 {
        let publishers = self.config.publishers as u64;
        let p = p as u64;
        if self.publish_total > p {
            (self.publish_total - p).div_ceil(publishers)
        } else {
            0
        }
    }

    pub(crate) fn url_with_token(&self, client: usize) -> String {
        let token = match &self.config.token {
            TokenSource::Fixed(token) => token.clone(),
            TokenSource::Secret(secret) => deltacast_local::stack::dev_token(
                secret,
                &format!("load-{}-{client}", self.run_id),
                self.max_run_time + Duration::from_secs(600),
            ),
        };
        let separator = if self.config.url.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{separator}token={token}", self.config.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_unless_allowed() {
        for url in [
            "ws://127.0.0.1:3001/local",
            "ws://localhost:3001/local",
            "ws://[::1]:3001/local",
            "ws://127.1.2.3/x",
        ] {
            assert!(check_url(url, false).is_ok(), "{url}");
        }
        for url in [
            "ws://10.0.0.1:3001/local",
            "wss://abc.execute-api.us-east-1.amazonaws.com/prod",
            "ws://localhost.example.com/",
        ] {
            assert!(
                matches!(
                    check_url(url, false),
                    Err(LoadError::RemoteNotAllowed { .. })
                ),
                "{url}"
            );
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(matches!(
            check_url("http://127.0.0.1/", false),
            Err(LoadError::InvalidUrl { .. })
        ));
        assert!(matches!(
            check_url("ws://127.0.0.1/local?token=x", false),
            Err(LoadError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn configurations_are_bounded() {
        let base = || LoadConfig::new("ws://127.0.0.1:1/local", TokenSource::Secret("s".into()));
        assert!(Plan::new(base()).is_ok());
        let bad: [fn(&mut LoadConfig); 8] = [
            |c| c.connections = 0,
            |c| c.connections = MAX_CONNECTIONS + 1,
            |c| c.publishers = c.connections + 1,
            |c| c.rate_per_second = 0.0,
            |c| c.churn = 1.5,
            |c| c.channels_per_connection = c.channels + 1,
            |c| {
                c.publishes = None;
                c.duration = None;
            },
            |c| c.publishes = Some(MAX_PUBLISHES + 1),
        ];
        for change in bad {
            let mut config = base();
            change(&mut config);
            assert!(matches!(
                Plan::new(config),
                Err(LoadError::InvalidConfig(_))
            ));
        }
    }

    #[test]
    fn publishers_share_the_publishes() {
        let mut config = LoadConfig::new("ws://127.0.0.1:1/local", TokenSource::Secret("s".into()));
        config.publishers = 3;
        config.publishes = Some(10);
        let plan = Plan::new(config).unwrap();
        assert_eq!(plan.quota(0) + plan.quota(1) + plan.quota(2), 10);
        assert_eq!((plan.quota(0), plan.quota(1), plan.quota(2)), (4, 3, 3));
    }
}
