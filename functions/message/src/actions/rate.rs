//! The rate limits every action goes through: the connection's token bucket and the
//! user's (across their connections). Tokens are taken up front ([`admit`]); a read then
//! settles the difference between its deposit and its real price ([`settle`]). The
//! prices are in [`deltacast::cost`].

use deltacast::config::RateLimit;
use deltacast::protocol::{ErrorCode, ErrorFrame};
use deltacast::store::{BucketOf, ReadBuckets};
use tracing::warn;

use super::ActionError;
use crate::context::{App, Sender};

/// Takes `deposit` tokens (at most a bucket's burst, so that a small bucket still serves
/// reads) from the connection's bucket and the user's, both at once; refuses with
/// `rate_limited` (naming the limit and its settings) when either holds fewer, writing
/// nothing when that shows in their reads (see [`deltacast::store::Store::take_tokens_from_all`]).
pub async fn admit(sender: &Sender<'_>, app: &App, deposit: f64) -> Result<(), ActionError> {
    check(sender, app, deposit).await?.take(app).await
}

/// The sender's buckets as read, each holding the tokens of a request: [`check`] read
/// them, [`Checked::take`] takes the tokens.
pub struct Checked<'a> {
    buckets: Vec<(BucketOf<'a>, RateLimit, f64)>,
    read: ReadBuckets,
    at_ms: u64,
}

/// The first half of [`admit`]: reads both buckets (at once) and refuses with
/// `rate_limited` when either holds fewer than `deposit`, writing nothing; a request that
/// may still be refused for another reason checks that before it takes the tokens.
pub async fn check<'a>(
    sender: &'a Sender<'_>,
    app: &App,
    deposit: f64,
) -> Result<Checked<'a>, ActionError> {
    let buckets: Vec<_> = buckets(sender, app)
        .into_iter()
        .map(|(bucket, limit)| (bucket, limit, deposit.min(limit.burst)))
        .collect();
    match app.store.read_buckets(&buckets, sender.received_at).await? {
        Err(short) => {
            let (bucket, limit, tokens) = buckets[short];
            Err(limited(bucket, limit, tokens))
        }
        Ok(read) => Ok(Checked {
            buckets,
            read,
            at_ms: sender.received_at,
        }),
    }
}

impl Checked<'_> {
    /// The second half of [`admit`]: takes the tokens checked.
    pub async fn take(self, app: &App) -> Result<(), ActionError> {
        let Checked {
            buckets,
            read,
            at_ms,
        } = self;
        match app.store.take_read_tokens(&buckets, read, at_ms).await? {
            Some(short) => {
                let (bucket, limit, tokens) = buckets[short];
                Err(limited(bucket, limit, tokens))
            }
            None => Ok(()),
        }
    }
}

/// Settles a request admitted with `deposit` at its real `price`: each bucket is charged
/// the difference to what it gave (a refund when the price is lower). The request has
/// been served (or refused after its admission), so a failure is logged, not raised.
pub async fn settle(sender: &Sender<'_>, app: &App, deposit: f64, price: f64) {
    for (bucket, limit) in buckets(sender, app) {
        let owed = price - deposit.min(limit.burst);
        if owed == 0.0 {
            continue;
        }
        if let Err(err) = app
            .store
            .charge_tokens(bucket, sender.received_at, limit, owed)
            .await
            && !err.is_connection_gone()
        {
            warn!(error = %err, "could not settle a read with its rate limit");
        }
    }
}

/// The sender's buckets: its connection's, then its user's unless that limit is off. A
/// sender without a connection (an HTTP request) has its user's bucket only, at
/// `USER_RATE_LIMIT_*`, or at `RATE_LIMIT_*` when the user limit is off: a request over
/// HTTP is never unlimited.
fn buckets<'a>(sender: &'a Sender<'_>, app: &App) -> Vec<(BucketOf<'a>, RateLimit)> {
    let user = BucketOf::User(&sender.identity.sub);
    if sender.connection_id.is_empty() {
        let limit = app
            .settings
            .user_rate_limit
            .unwrap_or(app.settings.rate_limit);
        return vec![(user, limit)];
    }
    let mut buckets = vec![(
        BucketOf::Connection(sender.connection_id),
        app.settings.rate_limit,
    )];
    if let Some(limit) = app.settings.user_rate_limit {
        buckets.push((user, limit));
    }
    buckets
}

/// The `rate_limited` refusal of a request that needed `tokens`: it may come back once
/// that many have refilled (sooner said than done while the bucket is in debt).
fn limited(bucket: BucketOf<'_>, limit: RateLimit, tokens: f64) -> ActionError {
    let (whose, settings) = match bucket {
        BucketOf::Connection(_) => ("this connection", "RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST"),
        BucketOf::User(_) => (
            "your user across its connections",
            "USER_RATE_LIMIT_PER_SECOND, USER_RATE_LIMIT_BURST",
        ),
    };
    let message = format!(
        "rate limit reached for {whose}: {} tokens per second, bursts of {} ({settings}); \
         a request costs 1 token, a read more by what it returns",
        limit.per_second, limit.burst
    );
    let wait = (tokens / limit.per_second * 1000.0).ceil().max(1.0) as u64;
    ActionError::Refused(Box::new(
        ErrorFrame::new(ErrorCode::RateLimited, message).retry_after(wait),
    ))
}

#[cfg(test)]
mod tests {
    use crate::actions::ActionError;
    use crate::context::Sender;
    use crate::testing::*;
    use deltacast::protocol::{ErrorCode, MAX_READ_BYTES};
    use serde_json::{Value, json};

    /// Bytes of `data` in the deltas among `frames`.
    fn delta_bytes(frames: &[Value]) -> usize {
        frames
            .iter()
            .filter(|f| f["type"] == "delta")
            .map(|f| f["data"].as_str().unwrap().len())
            .sum()
    }

    #[tokio::test]
    async fn a_repeated_catch_up_returns_a_capped_page_and_pays_for_it() {
        // The attack: one small `subscribe` with `since: 0` replayed a channel's whole
        // retained history (megabytes, one push per delta), and repeating it was free.
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "0.001"),
            ("USER_RATE_LIMIT_BURST", "0"),
        ])
        .await;
        w.store_deltas("chat:big", 20, 20_000).await;
        let (mut served, mut limited) = (0, 0);
        for _ in 0..10 {
            let frames = w
                .send(json!({"action": "subscribe", "channel": "chat:big", "since": 0}))
                .await;
            let last = frames.last().unwrap();
            if last["code"] == "rate_limited" {
                assert_eq!(frames.len(), 1, "a refusal pushes nothing");
                limited += 1;
                continue;
            }
            served += 1;
            assert_eq!(last["type"], "subscribed");
            assert_eq!(last["recovered"], false, "the rest is left for history");
            let bytes = delta_bytes(&frames);
            assert!(
                (100_000..=MAX_READ_BYTES).contains(&bytes),
                "{bytes} bytes of catch-up"
            );
        }
        // Each costs 1 + ~7.4 (bytes) + 0.6 (six pushes) ≈ 9 tokens; a read needs its 8.5
        // deposit: five fit a burst of 50.
        assert_eq!((served, limited), (5, 5));
    }

    /// A sender without a connection (an HTTP request) as `sub`.
    fn connectionless(w: &World, sub: &str) -> Sender<'static> {
        let now = deltacast::clock::now_ms();
        Sender {
            connection_id: "",
            identity: identity(sub, json!({"*": ["publish"]})),
            connected_at: now,
            received_at: now,
            retry: w.app.retry(),
        }
    }

    #[tokio::test]
    async fn a_request_without_a_connection_pays_its_users_bucket_alone() {
        let w = world_with(&[
            ("USER_RATE_LIMIT_PER_SECOND", "0.001"),
            ("USER_RATE_LIMIT_BURST", "3"),
        ])
        .await;
        let (bob, carol) = (connectionless(&w, "bob"), connectionless(&w, "carol"));
        for _ in 0..3 {
            super::admit(&bob, &w.app, 1.0)
                .await
                .expect("within bob's burst");
        }
        match super::admit(&bob, &w.app, 1.0).await {
            Err(ActionError::Refused(frame)) => {
                assert_eq!(frame.code, ErrorCode::RateLimited);
                assert!(frame.message.contains("your user"), "{}", frame.message);
            }
            other => panic!("{other:?}"),
        }
        super::admit(&carol, &w.app, 1.0)
            .await
            .expect("carol's bucket is her own");
    }

    #[tokio::test]
    async fn without_a_user_limit_a_request_without_a_connection_pays_the_connection_rate_per_user()
    {
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "0.001"),
            ("RATE_LIMIT_BURST", "2"),
            ("USER_RATE_LIMIT_BURST", "0"),
        ])
        .await;
        let (bob, carol) = (connectionless(&w, "bob"), connectionless(&w, "carol"));
        for _ in 0..2 {
            super::admit(&bob, &w.app, 1.0)
                .await
                .expect("within the burst");
        }
        assert!(
            super::admit(&bob, &w.app, 1.0).await.is_err(),
            "never unlimited"
        );
        // Requests without a connection do not share one bucket among all users.
        super::admit(&carol, &w.app, 1.0)
            .await
            .expect("carol's bucket is her own");
    }

    #[tokio::test]
    async fn a_small_read_is_refunded_most_of_its_deposit() {
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "0.001"),
            ("RATE_LIMIT_BURST", "20"),
            ("USER_RATE_LIMIT_BURST", "0"),
        ])
        .await;
        w.store_deltas("chat:small", 3, 10).await;
        let mut served = 0;
        for _ in 0..15 {
            let page = w
                .send(json!({"action": "history", "channel": "chat:small", "since": 0}))
                .await;
            if page[0]["type"] == "history" {
                assert_eq!(page[0]["deltas"].as_array().unwrap().len(), 3);
                served += 1;
            } else {
                assert_eq!(page[0]["code"], "rate_limited");
            }
        }
        // Each read costs about 1.03 tokens, and is admitted while 8.5 are left: 12 of a
        // burst of 20 (without the refund: 2).
        assert_eq!(served, 12);
    }

    #[tokio::test]
    async fn a_users_connections_share_one_limit() {
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "0.001"),
            ("RATE_LIMIT_BURST", "10"),
            ("USER_RATE_LIMIT_PER_SECOND", "0.001"),
            ("USER_RATE_LIMIT_BURST", "15"),
        ])
        .await;
        let connections = ["conn-A", "conn-2", "conn-3", "conn-4"];
        for connection in &connections[1..] {
            w.app
                .store
                .put_connection(&deltacast_tests::events::new_connection(
                    connection, "alice",
                ))
                .await
                .unwrap();
        }
        let mut acks = 0;
        for connection in connections {
            for i in 0..10 {
                let frame = json!({"action": "publish", "channel": "chat:a", "id": format!("{connection}-{i}"), "data": i});
                let reply = w.send_as(connection, &w.alice, &frame.to_string()).await;
                match reply[0]["type"].as_str() {
                    Some("ack") => acks += 1,
                    _ => {
                        assert_eq!(reply[0]["code"], "rate_limited");
                        let message = reply[0]["message"].as_str().unwrap();
                        assert!(
                            message.contains("USER_RATE_LIMIT_BURST")
                                || message.contains("RATE_LIMIT_BURST"),
                            "{message}"
                        );
                    }
                }
            }
        }
        assert_eq!(
            acks, 15,
            "the user's burst, across four connections of 10 each"
        );
        assert_eq!(w.delta_items().await, 15);
    }

    #[tokio::test]
    async fn a_bucket_smaller_than_a_deposit_still_serves_reads() {
        let w = world_with(&[
            ("RATE_LIMIT_PER_SECOND", "20"),
            ("RATE_LIMIT_BURST", "5"),
            ("USER_RATE_LIMIT_BURST", "0"),
        ])
        .await;
        w.store_deltas("chat:small", 3, 10).await;
        // Deposits of 8.5 (history) and 7 (this catch-up), each capped at the burst of 5;
        // the catch-up arrives a second later, when the bucket is full again.
        let at = |ms: u64, body: Value| {
            let mut request = deltacast_tests::events::message(CONN, &w.alice, &body.to_string());
            request.request_context.request_time_epoch = ms as i64;
            request
        };
        let t0 = deltacast::clock::now_ms();
        let page = w
            .deliver(at(
                t0,
                json!({"action": "history", "channel": "chat:small", "since": 0}),
            ))
            .await;
        assert_eq!(page[0]["type"], "history", "{page:?}");
        let frames = w
            .deliver(at(
                t0 + 1000,
                json!({"action": "subscribe", "channel": "chat:small", "since": 0}),
            ))
            .await;
        assert_eq!(frames.last().unwrap()["type"], "subscribed", "{frames:?}");
    }

    #[tokio::test]
    async fn resubscribing_at_once_to_many_channels_one_is_up_to_date_on_is_not_limited() {
        // A client reconnecting resubscribes to all its channels at once, with `since`;
        // up to date, each catch-up costs about a token, and so is its deposit.
        let w = world_with(&[("USER_RATE_LIMIT_BURST", "0")]).await;
        const CHANNELS: usize = 20;
        for c in 0..CHANNELS {
            w.store_deltas(&format!("chat:{c}"), 2, 10).await;
        }
        let frames = futures::future::join_all((0..CHANNELS).map(|c| {
            let body = json!({"action": "subscribe", "channel": format!("chat:{c}"), "since": 2});
            let request = deltacast_tests::events::message(CONN, &w.alice, &body.to_string());
            crate::handler::handle(request, &w.app, &w.push)
        }))
        .await;
        assert!(frames.iter().all(|response| response.is_ok()));
        let replies = w.push.frames(CONN);
        let subscribed = replies.iter().filter(|f| f["type"] == "subscribed").count();
        assert_eq!(subscribed, CHANNELS, "{replies:?}");
    }
}
