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
//! - `door`: what a publish to a channel over its limit meets first (the admission
//!   share, before the publisher's tokens);
//! - `inbox`: a publish's first step, its inbox item and idempotency claim (below);
//! - `outcome`: where a publish handed to the sequencer stands, for a publisher that
//!   waits for its answer (an HTTP request) instead of being acked on a connection;
//! - `sequence`: its second step, seqs for a batch of inbox messages and their deltas;
//!   `plan`: the pure part of it, and `admission`: the share of publishes the door lets
//!   through while a channel is over its limit;
//! - `batch`: batch writes with retries of unprocessed items;
//! - `transact`: new items written all or none, in one transaction (a sequencer batch);
//! - `capacity`: the consumed-capacity meter every request reports to, and
//!   `item_size`: an item's billed size, for the refused writes DynamoDB does not report;
//! - `attributes`: attribute values and the one way to read a refused condition;
//! - [`items`]: keys and item shapes; [`state_items`]: those of live state;
//! - `state_ops`: an `update`'s one write, its op item (and idempotency claim) in one of
//!   the channel's op shards; `state_fold`: folding op records into the document (the
//!   sequencer), at most `STATE_PATCH_RATE` changes a second; `state_doc`: reading and
//!   writing the document item;
//! - `streams`: a user's open event streams (the HTTP API), counted against a limit;
//! - `presence`: entering, updating and leaving a channel's presence, and its member
//!   list; `presence_fold`: folding member records into the presence document (count,
//!   version, the watchers' patch).
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
//! ## Publishing: an inbox and a sequencer
//! Seqs must be gap-free and a `(channel, publisher, id)` must publish once, however many
//! publishers share a channel. Publishers that each read the head and race for the next
//! seq serialise on the channel and spend their retries losing (measured in
//! `docs/publish-designs.md`), so a publish is two steps:
//! 1. [`Store::enqueue`] (the message function): one conditional put of the message into
//!    the channel's inbox, keyed by the publisher's id, which is also its idempotency
//!    claim; a put that finds the claim answers the original ack or "in flight";
//! 2. [`Store::sequence_now`] (the message function, once): the message's delta at the
//!    next seq with `attribute_not_exists`, acked at once, as on a quiet channel it is; if
//!    another writer took that seq, the message is left in the inbox for
//!    [`Store::sequence`] (the sequencer function, fed by the table's stream): one head
//!    read for a whole batch, then each delta at the next seq, and the ack to the
//!    publisher's connection.
//!
//! Publishers never meet: a publish is the inbox put and the delta write (≤1 KB each: 2
//! write units on a quiet channel, as a publish cost before; 3 on a busy one, where the
//! sequencer writes a batch's deltas in one transaction, which bills 2 per delta). The sequencer's module docs say why no message is stored
//! twice, and [`Store::publish`] does both steps in the caller, for tools and tests.
//!
//! ## What a frame costs
//! The write and read units of each request, refused conditional writes included, are
//! tabulated in `docs/data-model.md` ("Write and read units"), the one place they are
//! kept; the capacity tests check each row, counting with [`CapacityMeter`].

mod admission;
mod attributes;
mod batch;
mod capacity;
mod connections;
mod door;
mod expiry_notice;
mod history;
mod inbox;
mod item_size;
pub mod items;
mod outcome;
mod plan;
mod presence;
mod presence_fold;
mod rate_limit;
mod sequence;
mod state_doc;
mod state_fold;
pub mod state_items;
mod state_ops;
mod streams;
mod subscriptions;
mod transact;

use std::time::Duration;

use aws_sdk_dynamodb::Client;

use crate::clock;
use items::MalformedItem;

pub use admission::{DOOR_RETRY_MS, MAX_FRAME_WAIT_MS};
pub use batch::MAX_BATCH_ATTEMPTS;
pub use capacity::{Capacity, CapacityMeter};
pub use connections::NewConnection;
pub use door::{ChannelRead, Door, DoorMemory};
pub use history::{DeltaPage, EXPIRED_READ_BUDGET, Head};
pub use inbox::{
    BUSY_WINDOW_MS, Claim, Enqueued, IN_FLIGHT_RETRY_MS, MAX_BACKLOG, NewDelta, Published,
};
pub use outcome::PublishOutcome;
pub use plan::Sequenced;
pub use presence::{Entered, MemberPage, NewMember};
pub use presence_fold::{MAX_PRESENCE_PATCH_BYTES, MemberChange, MemberRecord, PresenceFolded};
pub use rate_limit::{Bucket, BucketOf, ReadBuckets};
pub use sequence::PublishError;
pub use state_doc::{MAX_ITEM_BYTES, StoredState};
pub use state_fold::{FoldDone, OpRecord, Rejection};
pub use state_ops::{NewOps, OpsStored};
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
    /// A batch request left items unprocessed (DynamoDB kept throttling) after every retry.
    #[error("batch request left {items} item(s) unprocessed after {attempts} attempts")]
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
    /// Other writers kept getting to an item first, every time.
    #[error("{what}: other writers got in first {attempts} times")]
    Contended {
        /// The item.
        what: String,
        /// How many times this writer tried.
        attempts: u32,
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
            StoreError::Dynamo(_)
            | StoreError::Unprocessed { .. }
            | StoreError::Contended { .. } => "Store.Unavailable",
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
