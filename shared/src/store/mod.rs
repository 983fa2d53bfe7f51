//! The DynamoDB store: connections, subscriptions, deltas and publish claims in one
//! table (see [`items`] for the keys). No request path scans; everything is a Get, a
//! Query on one partition, or a conditional write.
//!
//! ## Layout
//! One file per concern, each adding its methods to [`Store`]:
//! - `connections`: storing, reading, touching and removing a connection;
//! - `rate_limit`: the token buckets of connections and users;
//! - `subscriptions`: subscribe (with its limit), unsubscribe, a channel's subscribers;
//! - `expiry_notice`: telling a connection once that its token expired;
//! - `history`: a channel's head and its retained deltas;
//! - `publish`: appending a delta exactly once (below);
//! - `batch`: batch writes with retries of unprocessed items;
//! - `capacity`: the consumed-capacity meter every request reports to, and
//!   `item_size`: an item's billed size, for the refused writes DynamoDB does not report;
//! - `attributes`: attribute values and the one way to read a refused condition;
//! - [`items`]: keys and item shapes.
//!
//! ## A connection that is gone writes nothing
//! `$disconnect` deletes the connection's items, its liveness item among them, while
//! frames the client sent just before closing may still be processed. Every write a frame
//! makes on behalf of a connection is therefore conditional on the liveness item
//! (`attribute_exists(pk)`): the rate-limit token ([`Store::take_tokens`]) and the
//! subscription counter ([`Store::subscribe`]); so is the fan-out's token-expired claim
//! ([`Store::claim_expiry_notice`]). Without it the frame is refused with
//! [`StoreError::ConnectionGone`] and writes nothing, so closing right after a flood does
//! not get around the rate limit, and `touch` never brings a connection back.
//!
//! ## Publishing without transactions
//! Seqs must be gap-free and a `(channel, publisher, id)` must publish once: the id is the
//! publisher's idempotency key, so the same id from another `sub` is another message. A
//! publish:
//! 1. reads the message's claim `m#<len(sub)>:<sub>#<id>`; if it points at a stored delta
//!    with this id and this publisher, the publish is a duplicate and gets the original ack;
//! 2. reads the head (the channel's epoch item, then its newest delta);
//! 3. checks `expectSeq` (a mismatch writes nothing);
//! 4. writes the claim `{seq: head+1, lease}` conditionally, so only one attempt at a
//!    time works on a message id;
//! 5. writes the delta at `head+1` with `attribute_not_exists`, so each seq is taken
//!    once. A lost race re-reads the head and moves the claim.
//!
//! The SDK retries a write whose response was lost (a timeout, a 5xx), and the retry of
//! a write that took effect fails its own condition. So a refused claim or delta write
//! asks for the item in the way: when it is this call's claim, or this message's delta
//! at that seq, the write counts as done rather than lost.
//!
//! A seq exists exactly when its delta item does, so there are no gaps, and the claim
//! serialises attempts on one id, so there are no duplicates. A claim whose lease ran out
//! without a delta (its writer crashed) is taken over by the next retry. The common path
//! writes two items (≤1 KB delta: 2 write units) where a transaction would bill 4.
//!
//! ## What a frame costs
//! The write and read units of each request, refused conditional writes included, are
//! tabulated in `docs/data-model.md` ("Write and read units"), the one place they are
//! kept; the capacity tests check each row, counting with [`CapacityMeter`].

mod attributes;
mod batch;
mod capacity;
mod connections;
mod expiry_notice;
mod history;
mod item_size;
pub mod items;
mod publish;
mod rate_limit;
mod subscriptions;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

use crate::clock;
use items::MalformedItem;

pub use batch::MAX_BATCH_ATTEMPTS;
pub use capacity::{Capacity, CapacityMeter};
pub use connections::NewConnection;
pub use history::{DeltaPage, EXPIRED_READ_BUDGET, Head};
pub use publish::{NewDelta, PublishError, Published};
pub use rate_limit::{Bucket, BucketOf};
pub use subscriptions::{SubscribeError, Subscriber, Subscription};

/// A DynamoDB call failed, an item could not be read back, or the connection a frame
/// came from is gone.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request failed (throttling, network, permissions, ...).
    #[error("DynamoDB request failed: {}", aws_smithy_types::error::display::DisplayErrorContext(.0))]
    Dynamo(#[from] Box<aws_sdk_dynamodb::Error>),
    /// A stored item is not what its key says.
    #[error(transparent)]
    Malformed(#[from] MalformedItem),
    /// An item could not be converted.
    #[error("item conversion failed: {0}")]
    Conversion(#[from] serde_dynamo::Error),
    /// A batch write left items unprocessed (DynamoDB kept throttling) after every retry.
    #[error("batch write left {items} item(s) unprocessed after {attempts} attempts")]
    Unprocessed {
        /// How many items of the batch stayed unprocessed.
        items: usize,
        /// How many times the batch was sent.
        attempts: u32,
    },
    /// The connection has no liveness item (it closed, or never was stored), so the frame
    /// was refused and nothing was written. Expected after a client closes with frames in
    /// flight; not a fault of the store.
    #[error("connection {connection_id} is gone; nothing was written")]
    ConnectionGone {
        /// The connection the frame came from.
        connection_id: String,
    },
}

impl StoreError {
    /// Whether the error is the expected refusal of a frame from a closed connection,
    /// rather than a storage failure worth an error log.
    pub fn is_connection_gone(&self) -> bool {
        matches!(self, Self::ConnectionGone { .. })
    }
}

impl From<StoreError> for lambda_runtime::Diagnostic {
    fn from(err: StoreError) -> Self {
        let error_type = match &err {
            StoreError::Dynamo(_) | StoreError::Unprocessed { .. } => "Store.Unavailable",
            StoreError::Malformed(_) | StoreError::Conversion(_) => "Store.Malformed",
            StoreError::ConnectionGone { .. } => "Store.ConnectionGone",
        };
        Self {
            error_type: error_type.into(),
            error_message: err.to_string(),
        }
    }
}

/// How long store records live; from [`crate::config::Settings`].
#[derive(Clone, Debug)]
pub struct Lifetimes {
    /// How long deltas (and claims) stay readable.
    pub retention: Duration,
    /// How long connection and subscription items live after the connection opened.
    pub connection_ttl: Duration,
    /// How long an unfinished publish holds its message id.
    pub publish_lease: Duration,
}

/// The table, with a client built once per process.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
    lifetimes: Lifetimes,
    meter: Option<CapacityMeter>,
}

impl Store {
    /// A store on `table` using `client`.
    pub fn new(client: Client, table: impl Into<String>, lifetimes: Lifetimes) -> Self {
        Self {
            client,
            table: table.into(),
            lifetimes,
            meter: None,
        }
    }

    /// The same store, adding the capacity of its requests to `meter`.
    pub fn with_meter(mut self, meter: CapacityMeter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The DynamoDB client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// A strongly consistent read of one item, for the caller to narrow.
    fn read_item(
        &self,
        pk: impl Into<String>,
        sk: impl Into<String>,
    ) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
        self.client
            .get_item()
            .table_name(&self.table)
            .key("pk", attributes::s(pk))
            .key("sk", attributes::s(sk))
            .consistent_read(true)
    }

    /// An update of a connection's liveness item (last seen, rate-limit bucket and
    /// subscription count live there), for the caller to add its expressions to.
    fn update_liveness(
        &self,
        connection_id: &str,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", attributes::s(items::connection_pk(connection_id)))
            .key("sk", attributes::s(items::LIVE_SK))
    }

    /// When a connection's items (and its subscriptions') expire, Unix seconds.
    fn connection_expiry(&self, connected_at_ms: u64) -> u64 {
        connected_at_ms / 1000 + self.lifetimes.connection_ttl.as_secs()
    }
}

/// Backoff between storage attempts: up to 10 ms × 2^attempt, capped at 500 ms.
fn backoff(attempt: u32) -> Duration {
    clock::full_jitter(
        Duration::from_millis(10),
        Duration::from_millis(500),
        attempt,
    )
}
