//! The DynamoDB store: connections, subscriptions, deltas and publish claims in one
//! table (see [`items`] for the keys). No request path scans; everything is a Get, a
//! Query on one partition, or a conditional write.
//!
//! ## Publishing without transactions
//! Seqs must be gap-free and a `(channel, id)` must publish once. A publish:
//! 1. reads the message's claim `m#<id>`; if it points at a stored delta with this id,
//!    the publish is a duplicate and gets the original ack;
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

pub mod items;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, ConsumedCapacity, DeleteRequest, PutRequest, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, Select, WriteRequest,
};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::clock;
use crate::config::RateLimit;
use crate::protocol::{Channel, Delta, MAX_SEQ, MessageId, Payload};
use items::{
    ClaimItem, ConnectionItem, DELTA_PREFIX, DeltaItem, EPOCH_SK, EpochItem, LIVE_SK, META_SK,
    MalformedItem, SUBSCRIPTION_PREFIX, channel_pk, claim_sk, connection_pk, delta_sk,
    subscription_sk,
};

type Item = HashMap<String, AttributeValue>;

/// A DynamoDB call failed, or an item could not be read back.
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
}

impl From<StoreError> for lambda_runtime::Diagnostic {
    fn from(err: StoreError) -> Self {
        let error_type = match &err {
            StoreError::Dynamo(_) | StoreError::Unprocessed { .. } => "Store.Unavailable",
            StoreError::Malformed(_) | StoreError::Conversion(_) => "Store.Malformed",
        };
        Self {
            error_type: error_type.into(),
            error_message: err.to_string(),
        }
    }
}

fn dynamo<E, R>(err: SdkError<E, R>) -> StoreError
where
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    StoreError::Dynamo(Box::new(err.into()))
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

/// Adds up the capacity DynamoDB reports (`ReturnConsumedCapacity: TOTAL`) for a store's
/// requests, for the cost figures of `make bench`. Failed conditional writes are not
/// reported by DynamoDB, so they are not counted.
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(std::sync::Arc<std::sync::Mutex<Capacity>>);

/// Capacity units consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Capacity {
    /// Read capacity units.
    pub read_units: f64,
    /// Write capacity units.
    pub write_units: f64,
}

impl CapacityMeter {
    /// The units consumed so far.
    pub fn total(&self) -> Capacity {
        *self.0.lock().expect("meter lock")
    }

    /// Starts again from zero.
    pub fn reset(&self) {
        *self.0.lock().expect("meter lock") = Capacity::default();
    }

    fn add(&self, consumed: &[&ConsumedCapacity], write: bool) {
        let mut total = self.0.lock().expect("meter lock");
        for c in consumed {
            let units = c.capacity_units().unwrap_or(0.0);
            if write {
                total.write_units += units;
            } else {
                total.read_units += units;
            }
        }
    }
}

/// Outputs that report consumed capacity, and whether their operation writes.
trait Consumed {
    const WRITES: bool;
    fn consumed(&self) -> Vec<&ConsumedCapacity>;
}

macro_rules! consumed_one {
    ($($output:ty => $writes:expr),*) => {$(
        impl Consumed for $output {
            const WRITES: bool = $writes;
            fn consumed(&self) -> Vec<&ConsumedCapacity> {
                self.consumed_capacity().into_iter().collect()
            }
        }
    )*};
}

consumed_one!(
    aws_sdk_dynamodb::operation::get_item::GetItemOutput => false,
    aws_sdk_dynamodb::operation::query::QueryOutput => false,
    aws_sdk_dynamodb::operation::put_item::PutItemOutput => true,
    aws_sdk_dynamodb::operation::update_item::UpdateItemOutput => true,
    aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput => true
);

impl Consumed for aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemOutput {
    const WRITES: bool = true;
    fn consumed(&self) -> Vec<&ConsumedCapacity> {
        self.consumed_capacity().iter().collect()
    }
}

/// A new connection, as the `$connect` route stores it.
#[derive(Clone, Debug)]
pub struct NewConnection<'a> {
    /// API Gateway's connection id.
    pub connection_id: &'a str,
    /// The user.
    pub sub: &'a str,
    /// Capabilities, as JSON text.
    pub capabilities: &'a str,
    /// Token expiry, Unix seconds.
    pub token_exp: u64,
    /// When the connection opened, Unix milliseconds.
    pub connected_at: u64,
    /// The client's address.
    pub source_ip: Option<&'a str>,
}

/// A channel's head: its live epoch and newest seq (`None` and 0 when the channel has no
/// retained history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Head {
    /// The live epoch.
    pub epoch: Option<String>,
    /// Newest seq in the epoch.
    pub seq: u64,
}

/// A publish request.
#[derive(Clone, Copy, Debug)]
pub struct NewDelta<'a> {
    /// The channel.
    pub channel: &'a Channel,
    /// Idempotency key.
    pub id: &'a MessageId,
    /// Publisher's `sub`.
    pub from: &'a str,
    /// Payload.
    pub data: &'a Payload,
    /// Publish only if the head seq equals this.
    pub expect_seq: Option<u64>,
}

/// Where a publish's delta is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// Its seq.
    pub seq: u64,
    /// Its epoch.
    pub epoch: String,
    /// Whether an earlier publish with the same id stored it.
    pub duplicate: bool,
}

/// Why a publish stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// `expectSeq` did not match.
    #[error("head is {}, not the expected seq", .head.seq)]
    Conflict {
        /// The head at the time of the check.
        head: Head,
    },
    /// Another attempt with the same id holds a live lease.
    #[error("a publish with this id is still in progress")]
    InProgress,
    /// The channel was too busy to find a free seq in the allotted attempts.
    #[error("the channel is too contended; retry")]
    Contended,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a subscription was not made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// The connection already has the maximum number of subscriptions.
    #[error("a connection may subscribe to at most {0} channels")]
    TooMany(u32),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A page of retained deltas.
#[derive(Debug, Default)]
pub struct DeltaPage {
    /// Deltas in seq order.
    pub deltas: Vec<Delta>,
    /// Whether more retained deltas follow.
    pub more: bool,
}

/// Attempts at a publish: enough for dozens of publishers racing on one channel.
const MAX_PUBLISH_ATTEMPTS: u32 = 32;

/// How long a publish waits for another attempt's live lease on its id before answering
/// [`PublishError::InProgress`]: well inside the message function's 10 s timeout.
const LEASE_WAIT: Duration = Duration::from_secs(2);

/// Times a batch is sent before its unprocessed items are given up on (under 3 s of
/// backoff in all).
const MAX_BATCH_ATTEMPTS: u32 = 10;

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

    fn measured<T: Consumed>(&self, out: T) -> T {
        if let Some(meter) = &self.meter {
            meter.add(&out.consumed(), T::WRITES);
        }
        out
    }

    /// The DynamoDB client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn connection_expiry(&self, connected_at_ms: u64) -> u64 {
        connected_at_ms / 1000 + self.lifetimes.connection_ttl.as_secs()
    }

    // ----- connections -------------------------------------------------------------

    /// Stores a new connection and its liveness item.
    pub async fn put_connection(&self, new: &NewConnection<'_>) -> Result<(), StoreError> {
        let ttl = self.connection_expiry(new.connected_at);
        let meta = ConnectionItem {
            pk: connection_pk(new.connection_id),
            sk: META_SK.into(),
            sub: new.sub.into(),
            caps: new.capabilities.into(),
            exp: new.token_exp,
            at: new.connected_at,
            ip: new.source_ip.map(str::to_owned),
            ttl,
        };
        let live = HashMap::from([
            ("pk".to_owned(), s(connection_pk(new.connection_id))),
            ("sk".to_owned(), s(LIVE_SK)),
            ("seen".to_owned(), n(new.connected_at)),
            ("ttl".to_owned(), n(ttl)),
        ]);
        self.write_batch(vec![
            put_request(serde_dynamo::to_item(meta)?),
            put_request(live),
        ])
        .await
    }

    /// Reads a connection's main item.
    pub async fn connection(
        &self,
        connection_id: &str,
    ) -> Result<Option<ConnectionItem>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(connection_pk(connection_id)))
            .key("sk", s(META_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        out.item
            .map(serde_dynamo::from_item)
            .transpose()
            .map_err(StoreError::from)
    }

    /// Records traffic on a connection (`seen`), without resurrecting a removed one.
    pub async fn touch(&self, connection_id: &str, now_ms: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(connection_pk(connection_id)))
            .key("sk", s(LIVE_SK))
            .update_expression("SET seen = :now")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match result {
            Ok(out) => {
                self.measured(out);
                Ok(())
            }
            Err(err) if is_update_condition_failure(&err) => Ok(()),
            Err(err) => Err(dynamo(err)),
        }
    }

    /// Removes a connection and every item that names it: its own items and its
    /// subscriptions' channel-side items. Returns how many items were deleted.
    pub async fn remove_connection(&self, connection_id: &str) -> Result<usize, StoreError> {
        let pk = connection_pk(connection_id);
        let mut requests = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dynamo)
                .map(|out| self.measured(out))?;
            for item in out.items() {
                let Some(sk) = item.get("sk").and_then(|v| v.as_s().ok()) else {
                    continue;
                };
                requests.push(delete_request(&pk, sk));
                if let Some(channel) = sk.strip_prefix(SUBSCRIPTION_PREFIX) {
                    requests.push(delete_request(
                        &channel_pk(channel),
                        &subscription_sk(connection_id),
                    ));
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        let removed = requests.len();
        self.write_batch(requests).await?;
        Ok(removed)
    }

    /// Takes one token from the connection's publish bucket as of `at_ms` (when the frame
    /// reached API Gateway, not when it is processed). Returns `false` when the bucket is
    /// empty, and then writes nothing. The bucket lives on the connection's liveness item,
    /// so every function instance shares it and it goes with the connection; accepted
    /// publishes also refresh `seen`. Concurrent frames are serialised with a version
    /// condition.
    pub async fn take_publish_token(
        &self,
        connection_id: &str,
        at_ms: u64,
        limit: RateLimit,
    ) -> Result<bool, StoreError> {
        let pk = connection_pk(connection_id);
        for attempt in 0..8 {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .key("pk", s(&pk))
                .key("sk", s(LIVE_SK))
                .projection_expression("tk, tat, rv")
                .consistent_read(true)
                .send()
                .await
                .map_err(dynamo)
                .map(|out| self.measured(out))?
                .item;
            let Some(item) = item else {
                // The connection is gone or never stored: nothing to limit or write.
                warn!(connection_id, "no liveness item; publish not rate limited");
                return Ok(true);
            };
            let version = number(&item, "rv").unwrap_or(0);
            let previous = match (number(&item, "tk"), number(&item, "tat")) {
                (Some(tokens), Some(at)) => Bucket { tokens, at_ms: at },
                _ => Bucket::full(limit, at_ms),
            };
            let Some(next) = previous.take(limit, at_ms) else {
                return Ok(false);
            };
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .key("pk", s(&pk))
                .key("sk", s(LIVE_SK))
                .update_expression("SET tk = :tk, tat = :tat, rv = :next, seen = :seen")
                .condition_expression(
                    "attribute_exists(pk) AND (attribute_not_exists(rv) OR rv = :rv)",
                )
                .expression_attribute_values(
                    ":tk",
                    AttributeValue::N(format!("{:.3}", next.tokens)),
                )
                .expression_attribute_values(":tat", n(next.at_ms))
                .expression_attribute_values(":rv", n(version))
                .expression_attribute_values(":next", n(version + 1))
                .expression_attribute_values(":seen", n(clock::now_ms()))
                .send()
                .await;
            match result {
                Ok(out) => {
                    self.measured(out);
                    return Ok(true);
                }
                Err(err) if is_update_condition_failure(&err) => continue,
                Err(err) => return Err(dynamo(err)),
            }
        }
        // Lost every race: other frames of this connection are taking the tokens.
        Ok(false)
    }

    // ----- subscriptions -----------------------------------------------------------

    /// Subscribes a connection to a channel (both sides of the subscription). Returns
    /// `false` when it was already subscribed.
    pub async fn subscribe(
        &self,
        connection_id: &str,
        sub: &str,
        channel: &Channel,
        connected_at_ms: u64,
        max_subscriptions: u32,
    ) -> Result<bool, SubscribeError> {
        let conn_pk = connection_pk(connection_id);
        let marker_sk = subscription_sk(channel.as_str());
        let existing = self
            .client
            .get_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(&conn_pk))
            .key("sk", s(&marker_sk))
            .projection_expression("pk")
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        let already = existing.item.is_some();
        if !already {
            let count = self
                .client
                .query()
                .table_name(&self.table)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
                .expression_attribute_values(":pk", s(&conn_pk))
                .expression_attribute_values(":s", s(SUBSCRIPTION_PREFIX))
                .select(Select::Count)
                .consistent_read(true)
                .send()
                .await
                .map_err(dynamo)
                .map(|out| self.measured(out))?
                .count;
            if count >= max_subscriptions as i32 {
                return Err(SubscribeError::TooMany(max_subscriptions));
            }
        }
        let ttl = n(self.connection_expiry(connected_at_ms));
        let by_channel = HashMap::from([
            ("pk".to_owned(), s(channel_pk(channel.as_str()))),
            ("sk".to_owned(), s(subscription_sk(connection_id))),
            ("sub".to_owned(), s(sub)),
            ("ttl".to_owned(), ttl.clone()),
        ]);
        let by_connection = HashMap::from([
            ("pk".to_owned(), s(conn_pk)),
            ("sk".to_owned(), s(marker_sk)),
            ("ttl".to_owned(), ttl),
        ]);
        self.write_batch(vec![put_request(by_channel), put_request(by_connection)])
            .await?;
        Ok(!already)
    }

    /// Removes a subscription (both sides); a no-op when there is none.
    pub async fn unsubscribe(
        &self,
        connection_id: &str,
        channel: &Channel,
    ) -> Result<(), StoreError> {
        self.write_batch(vec![
            delete_request(
                &channel_pk(channel.as_str()),
                &subscription_sk(connection_id),
            ),
            delete_request(
                &connection_pk(connection_id),
                &subscription_sk(channel.as_str()),
            ),
        ])
        .await
    }

    /// The connection ids subscribed to a channel, one Query page at a time.
    pub async fn subscribers_page(
        &self,
        channel: &str,
        start: Option<Item>,
    ) -> Result<(Vec<String>, Option<Item>), StoreError> {
        let now = clock::now_secs();
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key_condition_expression("pk = :pk AND begins_with(sk, :s)")
            .expression_attribute_values(":pk", s(channel_pk(channel)))
            .expression_attribute_values(":s", s(SUBSCRIPTION_PREFIX))
            .projection_expression("sk, #ttl")
            .expression_attribute_names("#ttl", "ttl")
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        let ids = out
            .items()
            .iter()
            .filter(|item| number::<u64>(item, "ttl").is_none_or(|ttl| ttl > now))
            .filter_map(|item| {
                item.get("sk")
                    .and_then(|v| v.as_s().ok())
                    .and_then(|sk| sk.strip_prefix(SUBSCRIPTION_PREFIX))
                    .map(str::to_owned)
            })
            .collect();
        let next = out.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((ids, next))
    }

    // ----- deltas ------------------------------------------------------------------

    /// The channel's head.
    pub async fn head(&self, channel: &str) -> Result<Head, StoreError> {
        Ok(self.channel_state(channel).await?.head())
    }

    async fn channel_state(&self, channel: &str) -> Result<ChannelState, StoreError> {
        let pk = channel_pk(channel);
        let epoch = self
            .client
            .get_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(&pk))
            .key("sk", s(EPOCH_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?
            .item
            .map(serde_dynamo::from_item::<_, EpochItem>)
            .transpose()?;
        let Some(epoch) = epoch else {
            return Ok(ChannelState {
                recorded: None,
                live: None,
            });
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":d", s(format!("{DELTA_PREFIX}{}#", epoch.ep)))
            .projection_expression("sk, seq, #ttl")
            .expression_attribute_names("#ttl", "ttl")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        let now = clock::now_secs();
        let newest = match out.items().first() {
            Some(item) => Some((
                required_number(item, &pk, "seq")?,
                required_number(item, &pk, "ttl")?,
            )),
            None => None,
        };
        let live = match newest {
            // History starts over once the newest delta has expired.
            Some((_, ttl)) if ttl <= now => None,
            Some((seq, _)) => Some(seq),
            // An epoch whose first publish never completed is still usable while recent.
            None if epoch.at / 1000 + self.lifetimes.retention.as_secs() > now => Some(0),
            None => None,
        };
        Ok(ChannelState {
            live: live.map(|seq| (epoch.ep.clone(), seq)),
            recorded: Some(epoch.ep),
        })
    }

    /// Reads deltas with seq > `after` in `epoch`, in order: at most `limit`, and no more
    /// than about `max_bytes` of frames. Expired deltas are skipped.
    pub async fn deltas_after(
        &self,
        channel: &str,
        epoch: &str,
        after: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<DeltaPage, StoreError> {
        let mut page = DeltaPage::default();
        if after >= MAX_SEQ {
            // No seq follows; the key range below would be empty (and invalid).
            return Ok(page);
        }
        let mut bytes = 0usize;
        let now = clock::now_secs();
        let mut start: Option<Item> = None;
        loop {
            let want = (limit + 1 - page.deltas.len()).min(200) as i32;
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
                .expression_attribute_values(":pk", s(channel_pk(channel)))
                .expression_attribute_values(":from", s(delta_sk(epoch, after.saturating_add(1))))
                .expression_attribute_values(":to", s(delta_sk(epoch, MAX_SEQ)))
                .consistent_read(true)
                .limit(want)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(dynamo)
                .map(|out| self.measured(out))?;
            for item in out.items.unwrap_or_default() {
                let item: DeltaItem = serde_dynamo::from_item(item)?;
                if item.expired(now) {
                    continue;
                }
                // Envelope: type, channel, seq, epoch, id, from, ts and punctuation.
                let size = item.data.len() + item.id.len() + item.from.len() + channel.len() + 128;
                if page.deltas.len() == limit
                    || (!page.deltas.is_empty() && bytes + size > max_bytes)
                {
                    page.more = true;
                    return Ok(page);
                }
                bytes += size;
                page.deltas.push(Delta::try_from(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(page),
            }
        }
    }

    async fn delta(
        &self,
        channel: &str,
        epoch: &str,
        seq: u64,
    ) -> Result<Option<DeltaItem>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(channel_pk(channel)))
            .key("sk", s(delta_sk(epoch, seq)))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        Ok(out.item.map(serde_dynamo::from_item).transpose()?)
    }

    async fn claim(&self, channel: &str, id: &str) -> Result<Option<ClaimItem>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(channel_pk(channel)))
            .key("sk", s(claim_sk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(dynamo)
            .map(|out| self.measured(out))?;
        let claim: Option<ClaimItem> = out.item.map(serde_dynamo::from_item).transpose()?;
        Ok(claim.filter(|c| c.ttl > clock::now_secs()))
    }

    /// Appends a delta, exactly once per `(channel, id)`; see the module docs.
    pub async fn publish(&self, new: NewDelta<'_>) -> Result<Published, PublishError> {
        let channel = new.channel.as_str();
        let id = new.id.as_str();
        // The lease of the claim this call holds, once it holds one.
        let mut held: Option<u64> = None;
        // Waiting helps when another attempt holds the id or won a race for the claim or
        // the epoch; a seq lost to another message is retried at once with a fresh head.
        let mut pause = false;
        let started = Instant::now();
        for attempt in 0..MAX_PUBLISH_ATTEMPTS {
            if std::mem::take(&mut pause) {
                tokio::time::sleep(backoff(attempt)).await;
            }
            // Who else is working on this id?
            let mut stale_lease = None;
            if held.is_none()
                && let Some(claim) = self.claim(channel, id).await?
            {
                if let Some(delta) = self.delta(channel, &claim.ep, claim.seq).await?
                    && delta.id == id
                {
                    return Ok(Published {
                        seq: delta.seq,
                        epoch: delta.ep,
                        duplicate: true,
                    });
                }
                if claim.lease > clock::now_ms() {
                    // Bounded by time, not attempts: the caller must answer before the
                    // function times out.
                    if started.elapsed() >= LEASE_WAIT || attempt + 1 == MAX_PUBLISH_ATTEMPTS {
                        return Err(PublishError::InProgress);
                    }
                    pause = true;
                    continue;
                }
                stale_lease = Some(claim.lease);
            }

            let state = self.channel_state(channel).await?;
            let head = state.head();
            if let Some(expected) = new.expect_seq
                && expected != head.seq
            {
                if let Some(lease) = held {
                    self.release_claim(channel, id, lease).await?;
                }
                return Err(PublishError::Conflict { head });
            }
            let (epoch, seq, fresh) = match &state.live {
                Some((epoch, seq)) => (epoch.clone(), seq + 1, false),
                None => (new_epoch(), 1, true),
            };

            let lease = clock::now_ms() + self.lifetimes.publish_lease.as_millis() as u64;
            let previous_lease = held.or(stale_lease);
            if !self
                .write_claim(channel, id, &epoch, seq, lease, previous_lease)
                .await?
            {
                held = None;
                pause = true;
                continue;
            }
            held = Some(lease);

            if fresh
                && !self
                    .start_epoch(channel, &epoch, state.recorded.as_deref())
                    .await?
            {
                pause = true;
                continue;
            }

            let delta = Delta {
                channel: channel.to_owned(),
                seq,
                epoch: epoch.clone(),
                id: id.to_owned(),
                from: new.from.to_owned(),
                ts: clock::now_ms(),
                data: new.data.clone(),
            };
            let ttl = delta.ts / 1000 + self.lifetimes.retention.as_secs();
            let item =
                serde_dynamo::to_item(DeltaItem::new(&delta, ttl)).map_err(StoreError::from)?;
            if self.put_delta(item, id, &epoch, seq).await? {
                debug!(channel, seq, "delta stored");
                return Ok(Published {
                    seq,
                    epoch,
                    duplicate: false,
                });
            }
            debug!(channel, seq, attempt, "seq taken; retrying");
        }
        if let Some(lease) = held {
            self.release_claim(channel, id, lease).await?;
        }
        Err(PublishError::Contended)
    }

    /// Creates or moves the claim. `previous_lease` is the lease of the claim being
    /// moved or taken over; without it the claim must not exist yet (or have expired).
    async fn write_claim(
        &self,
        channel: &str,
        id: &str,
        epoch: &str,
        seq: u64,
        lease: u64,
        previous_lease: Option<u64>,
    ) -> Result<bool, StoreError> {
        let ttl = clock::now_secs() + self.lifetimes.retention.as_secs();
        let claim = ClaimItem {
            pk: channel_pk(channel),
            sk: claim_sk(id),
            ep: epoch.into(),
            seq,
            lease,
            ttl,
        };
        let mut request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(&claim)?))
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(clock::now_secs()));
        request = match previous_lease {
            Some(previous) => request
                .condition_expression("lease = :previous OR #ttl < :now")
                .expression_attribute_values(":previous", n(previous)),
            None => request.condition_expression("attribute_not_exists(pk) OR #ttl < :now"),
        };
        match self.put_unless_refused(request).await? {
            Put::Written => Ok(true),
            // A retry by the SDK (after a timeout or a 5xx) of a write that took effect
            // finds this very claim; it is held, not lost to another attempt.
            Put::Refused(Some(found)) => Ok(
                serde_dynamo::from_item::<_, ClaimItem>(found).is_ok_and(|found| found == claim)
            ),
            Put::Refused(None) => Ok(false),
        }
    }

    /// Deletes a claim this call holds, so a refused publish leaves nothing behind.
    async fn release_claim(&self, channel: &str, id: &str, lease: u64) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .key("pk", s(channel_pk(channel)))
            .key("sk", s(claim_sk(id)))
            .condition_expression("lease = :lease")
            .expression_attribute_values(":lease", n(lease))
            .send()
            .await;
        match result {
            Ok(out) => {
                self.measured(out);
                Ok(())
            }
            Err(err) => match err.into_service_error() {
                aws_sdk_dynamodb::operation::delete_item::DeleteItemError::ConditionalCheckFailedException(_) => Ok(()),
                other => Err(StoreError::Dynamo(Box::new(other.into()))),
            },
        }
    }

    /// Records a new epoch, unless another publisher replaced `previous` first.
    async fn start_epoch(
        &self,
        channel: &str,
        epoch: &str,
        previous: Option<&str>,
    ) -> Result<bool, StoreError> {
        let item = serde_dynamo::to_item(EpochItem {
            pk: channel_pk(channel),
            sk: EPOCH_SK.into(),
            ep: epoch.into(),
            at: clock::now_ms(),
        })?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .set_item(Some(item));
        request = match previous {
            Some(previous) => request
                .condition_expression("ep = :previous")
                .expression_attribute_values(":previous", s(previous)),
            None => request.condition_expression("attribute_not_exists(pk)"),
        };
        match request.send().await {
            Ok(out) => {
                self.measured(out);
                Ok(true)
            }
            Err(err) if is_put_condition_failure(&err) => Ok(false),
            Err(err) => Err(dynamo(err)),
        }
    }

    /// Writes the delta of message `id` at `seq` unless the seq is taken. Returns whether
    /// the seq holds this message's delta, which is also the case when the SDK retried
    /// (after a timeout or a 5xx) a write that had taken effect: the retry then finds
    /// its own delta.
    async fn put_delta(
        &self,
        item: Item,
        id: &str,
        epoch: &str,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let request = self
            .client
            .put_item()
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)");
        match self.put_unless_refused(request).await? {
            Put::Written => Ok(true),
            Put::Refused(Some(found)) => {
                let text = |name: &str| found.get(name).and_then(|v| v.as_s().ok());
                let ours = text("id").is_some_and(|found| found == id)
                    && text("ep").is_some_and(|found| found == epoch)
                    && number(&found, "seq") == Some(seq);
                if ours {
                    debug!(seq, "the delta at this seq is already this message's");
                }
                Ok(ours)
            }
            Put::Refused(None) => Ok(false),
        }
    }

    /// Sends a conditional put; a failed condition returns the item found in its place.
    async fn put_unless_refused(&self, request: PutItemFluentBuilder) -> Result<Put, StoreError> {
        let result = request
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(out) => {
                self.measured(out);
                Ok(Put::Written)
            }
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    Ok(Put::Refused(failed.item().cloned()))
                }
                _ => Err(dynamo(err)),
            },
        }
    }

    // ----- batches -----------------------------------------------------------------

    /// Writes requests in batches of 25, retrying unprocessed items with backoff, and
    /// fails with [`StoreError::Unprocessed`] when some stay unprocessed after
    /// [`MAX_BATCH_ATTEMPTS`] sends.
    async fn write_batch(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt == MAX_BATCH_ATTEMPTS {
                    warn!(
                        unprocessed = pending.len(),
                        attempts = attempt,
                        "batch write given up"
                    );
                    return Err(StoreError::Unprocessed {
                        items: pending.len(),
                        attempts: attempt,
                    });
                }
                if attempt > 0 {
                    tokio::time::sleep(backoff(attempt)).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .return_consumed_capacity(ReturnConsumedCapacity::Total)
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(dynamo)
                    .map(|out| self.measured(out))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                attempt += 1;
            }
        }
        Ok(())
    }
}

/// A token bucket's state: tokens left as of `at_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens left.
    pub tokens: f64,
    /// When they were counted, Unix ms.
    pub at_ms: u64,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: RateLimit, at_ms: u64) -> Self {
        Self {
            tokens: limit.burst,
            at_ms,
        }
    }

    /// The bucket after taking one token at `at_ms`, or `None` when it is empty. Frames
    /// may be processed out of arrival order; time never runs backwards here.
    pub fn take(self, limit: RateLimit, at_ms: u64) -> Option<Self> {
        let elapsed = at_ms.saturating_sub(self.at_ms) as f64 / 1000.0;
        let tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        (tokens >= 1.0).then(|| Self {
            tokens: tokens - 1.0,
            at_ms: at_ms.max(self.at_ms),
        })
    }
}

/// What a conditional put did.
enum Put {
    /// The item was written.
    Written,
    /// The condition failed; the item in the way, when there was one.
    Refused(Option<Item>),
}

struct ChannelState {
    /// The epoch item's value, live or not.
    recorded: Option<String>,
    /// The live epoch and its newest seq.
    live: Option<(String, u64)>,
}

impl ChannelState {
    fn head(&self) -> Head {
        match &self.live {
            Some((epoch, seq)) => Head {
                epoch: Some(epoch.clone()),
                seq: *seq,
            },
            None => Head::default(),
        }
    }
}

/// A fresh epoch: the creation time and randomness, as an opaque string.
fn new_epoch() -> String {
    format!("{:x}{:04x}", clock::now_ms(), rand::random::<u16>())
}

/// Backoff between storage attempts: up to 10 ms × 2^attempt, capped at 500 ms.
fn backoff(attempt: u32) -> Duration {
    clock::full_jitter(
        Duration::from_millis(10),
        Duration::from_millis(500),
        attempt,
    )
}

fn is_put_condition_failure<R>(err: &SdkError<PutItemError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(PutItemError::ConditionalCheckFailedException(_))
    )
}

fn is_update_condition_failure<R>(err: &SdkError<UpdateItemError, R>) -> bool {
    matches!(
        err.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn number<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)?.as_n().ok()?.parse().ok()
}

/// A number attribute the item cannot do without; `pk` names the item in the error.
fn required_number(item: &Item, pk: &str, name: &str) -> Result<u64, MalformedItem> {
    number(item, name).ok_or_else(|| MalformedItem {
        key: format!(
            "{pk}/{}",
            item.get("sk")
                .and_then(|v| v.as_s().ok())
                .map_or("?", |sk| sk)
        ),
        reason: format!("`{name}` is missing or not a whole number"),
    })
}

fn put_request(item: Item) -> WriteRequest {
    WriteRequest::builder()
        .put_request(
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .expect("item is set"),
        )
        .build()
}

fn delete_request(pk: &str, sk: &str) -> WriteRequest {
    WriteRequest::builder()
        .delete_request(
            DeleteRequest::builder()
                .key("pk", s(pk))
                .key("sk", s(sk))
                .build()
                .expect("key is set"),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 20.0,
        burst: 50.0,
    };

    #[test]
    fn a_full_bucket_allows_the_burst_then_the_rate() {
        let mut bucket = Bucket::full(LIMIT, 0);
        for _ in 0..50 {
            bucket = bucket.take(LIMIT, 0).expect("within the burst");
        }
        assert!(
            bucket.take(LIMIT, 0).is_none(),
            "the 51st at once is refused"
        );
        assert!(
            bucket.take(LIMIT, 49).is_none(),
            "not yet a whole token back"
        );
        let bucket = bucket
            .take(LIMIT, 50)
            .expect("one token after 50 ms at 20/s");
        assert!(bucket.take(LIMIT, 50).is_none());
    }

    #[test]
    fn refill_is_capped_at_the_burst_and_time_never_goes_back() {
        let idle = Bucket {
            tokens: 0.0,
            at_ms: 0,
        }
        .take(LIMIT, 3_600_000)
        .unwrap();
        assert_eq!(idle.tokens, 49.0);
        let late = Bucket {
            tokens: 5.0,
            at_ms: 1000,
        }
        .take(LIMIT, 400)
        .unwrap();
        assert_eq!(
            late,
            Bucket {
                tokens: 4.0,
                at_ms: 1000
            },
            "an earlier frame refills nothing"
        );
    }

    /// The store against DynamoDB Local (named by `DELTACAST_TEST_DYNAMODB`, as `make
    /// test` sets it), each test on a table of its own. Lost responses and throttled
    /// batches are simulated with SDK interceptors, so the SDK's own retries run as they
    /// would against AWS.
    mod dynamodb_local {
        use super::*;
        use aws_sdk_dynamodb::config::interceptors::{
            BeforeDeserializationInterceptorContextMut, BeforeSerializationInterceptorContextRef,
            BeforeTransmitInterceptorContextRef,
        };
        use aws_sdk_dynamodb::config::retry::RetryConfig;
        use aws_sdk_dynamodb::config::{
            BehaviorVersion, ConfigBag, Credentials, Intercept, Region, RuntimeComponents,
            SharedInterceptor,
        };
        use aws_sdk_dynamodb::error::BoxError;
        use aws_sdk_dynamodb::operation::put_item::PutItemInput;
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::{Arc, Mutex};

        const CHANNEL: &str = "chat:lobby";

        fn lifetimes() -> Lifetimes {
            Lifetimes {
                retention: Duration::from_secs(86_400),
                connection_ttl: Duration::from_secs(3 * 3600),
                publish_lease: Duration::from_secs(15),
            }
        }

        /// A store on a fresh table, its client carrying `interceptor`.
        async fn store_with(interceptor: Option<SharedInterceptor>) -> Store {
            let endpoint = std::env::var("DELTACAST_TEST_DYNAMODB").unwrap_or_else(|_| {
                panic!(
                    "DELTACAST_TEST_DYNAMODB is not set: run the tests with `make test`, which starts DynamoDB Local"
                )
            });
            let mut config = aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("local", "local", None, None, "test"))
                .endpoint_url(endpoint)
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(3)
                        .with_initial_backoff(Duration::from_millis(5)),
                );
            if let Some(interceptor) = interceptor {
                config.push_interceptor(interceptor);
            }
            let client = Client::from_conf(config.build());
            let table = format!("store-{:016x}", rand::random::<u64>());
            let key = |name: &str, kind| {
                (
                    AttributeDefinition::builder()
                        .attribute_name(name)
                        .attribute_type(ScalarAttributeType::S)
                        .build()
                        .unwrap(),
                    KeySchemaElement::builder()
                        .attribute_name(name)
                        .key_type(kind)
                        .build()
                        .unwrap(),
                )
            };
            let (pk, pk_schema) = key("pk", KeyType::Hash);
            let (sk, sk_schema) = key("sk", KeyType::Range);
            client
                .create_table()
                .table_name(&table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(pk)
                .attribute_definitions(sk)
                .key_schema(pk_schema)
                .key_schema(sk_schema)
                .send()
                .await
                .expect("table created");
            Store::new(client, table, lifetimes())
        }

        async fn store() -> Store {
            store_with(None).await
        }

        fn intercepted(interceptor: impl Intercept + 'static) -> Option<SharedInterceptor> {
            Some(SharedInterceptor::new(interceptor))
        }

        async fn items(store: &Store) -> Vec<Item> {
            let out = store
                .client()
                .scan()
                .table_name(store.table())
                .consistent_read(true)
                .send()
                .await
                .expect("scan");
            out.items.unwrap_or_default()
        }

        async fn deltas(store: &Store) -> Vec<Item> {
            items(store)
                .await
                .into_iter()
                .filter(|item| item["sk"].as_s().unwrap().starts_with(DELTA_PREFIX))
                .collect()
        }

        async fn publish(store: &Store, id: &str) -> Result<Published, PublishError> {
            let channel = Channel::parse(CHANNEL).unwrap();
            let id = MessageId::parse(id).unwrap();
            let data = Payload::from_json("1".into()).unwrap();
            store
                .publish(NewDelta {
                    channel: &channel,
                    id: &id,
                    from: "alice",
                    data: &data,
                    expect_seq: None,
                })
                .await
        }

        /// Answers the first PutItem whose sort key starts with `prefix` with a 500
        /// after DynamoDB has written it, as a lost response would: the SDK then sends
        /// the same request again.
        #[derive(Debug, Clone)]
        struct LoseFirstResponse {
            prefix: &'static str,
            armed: Arc<AtomicBool>,
            fired: Arc<AtomicBool>,
        }

        impl LoseFirstResponse {
            fn to(prefix: &'static str) -> Self {
                Self {
                    prefix,
                    armed: Arc::default(),
                    fired: Arc::default(),
                }
            }
        }

        impl Intercept for LoseFirstResponse {
            fn name(&self) -> &'static str {
                "LoseFirstResponse"
            }

            fn read_before_execution(
                &self,
                context: &BeforeSerializationInterceptorContextRef<'_>,
                _: &mut ConfigBag,
            ) -> Result<(), BoxError> {
                let target = context
                    .input()
                    .downcast_ref::<PutItemInput>()
                    .and_then(|input| input.item()?.get("sk")?.as_s().ok())
                    .is_some_and(|sk| sk.starts_with(self.prefix));
                if target && !self.fired.swap(true, Ordering::SeqCst) {
                    self.armed.store(true, Ordering::SeqCst);
                }
                Ok(())
            }

            fn modify_before_deserialization(
                &self,
                context: &mut BeforeDeserializationInterceptorContextMut<'_>,
                _: &RuntimeComponents,
                _: &mut ConfigBag,
            ) -> Result<(), BoxError> {
                if self.armed.swap(false, Ordering::SeqCst) {
                    *context.response_mut() = Response::new(
                        StatusCode::try_from(500)?,
                        SdkBody::from(
                            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"response lost"}"#,
                        ),
                    );
                }
                Ok(())
            }
        }

        /// Reports every item of every BatchWriteItem as unprocessed, as sustained
        /// throttling would.
        #[derive(Debug, Clone, Default)]
        struct Throttle {
            request: Arc<Mutex<Option<serde_json::Value>>>,
            calls: Arc<AtomicU32>,
        }

        impl Intercept for Throttle {
            fn name(&self) -> &'static str {
                "Throttle"
            }

            fn read_before_transmit(
                &self,
                context: &BeforeTransmitInterceptorContextRef<'_>,
                _: &RuntimeComponents,
                _: &mut ConfigBag,
            ) -> Result<(), BoxError> {
                let body: serde_json::Value =
                    serde_json::from_slice(context.request().body().bytes().unwrap_or_default())?;
                *self.request.lock().unwrap() = body.get("RequestItems").cloned();
                Ok(())
            }

            fn modify_before_deserialization(
                &self,
                context: &mut BeforeDeserializationInterceptorContextMut<'_>,
                _: &RuntimeComponents,
                _: &mut ConfigBag,
            ) -> Result<(), BoxError> {
                if let Some(items) = self.request.lock().unwrap().take() {
                    self.calls.fetch_add(1, Ordering::SeqCst);
                    let body = serde_json::json!({ "UnprocessedItems": items });
                    *context.response_mut() =
                        Response::new(StatusCode::try_from(200)?, SdkBody::from(body.to_string()));
                }
                Ok(())
            }
        }

        #[tokio::test]
        async fn a_retried_delta_write_that_took_effect_is_acked_once() {
            // GIVEN a client whose first delta write succeeds but loses its response
            let lose = LoseFirstResponse::to(DELTA_PREFIX);
            let store = store_with(intercepted(lose.clone())).await;
            // WHEN a message is published
            let published = publish(&store, "m1").await.expect("published");
            // THEN the SDK's retry found the message's own delta: one delta, the first seq
            assert!(lose.fired.load(Ordering::SeqCst), "no response was lost");
            assert_eq!(published.seq, 1);
            assert!(!published.duplicate);
            let stored = deltas(&store).await;
            assert_eq!(stored.len(), 1, "{stored:?}");
            assert_eq!(stored[0]["id"].as_s().unwrap(), "m1");
            assert_eq!(stored[0]["ep"].as_s().unwrap(), &published.epoch);
            // and the next message follows it
            assert_eq!(publish(&store, "m2").await.unwrap().seq, 2);
        }

        #[tokio::test]
        async fn a_delta_of_this_message_at_the_seq_is_its_write_and_another_is_not() {
            let store = store().await;
            let delta = |id: &str| Delta {
                channel: CHANNEL.into(),
                seq: 1,
                epoch: "e1".into(),
                id: id.into(),
                from: "alice".into(),
                ts: clock::now_ms(),
                data: Payload::from_json("1".into()).unwrap(),
            };
            let item =
                |id: &str| serde_dynamo::to_item(DeltaItem::new(&delta(id), u64::MAX / 2)).unwrap();
            assert!(store.put_delta(item("m1"), "m1", "e1", 1).await.unwrap());
            // The same message again at the same seq (a retried write): its own delta.
            assert!(store.put_delta(item("m1"), "m1", "e1", 1).await.unwrap());
            // Another message: the seq is taken.
            assert!(!store.put_delta(item("m2"), "m2", "e1", 1).await.unwrap());
            let stored = deltas(&store).await;
            assert_eq!(stored.len(), 1);
            assert_eq!(stored[0]["id"].as_s().unwrap(), "m1");
        }

        #[tokio::test]
        async fn a_retried_claim_write_that_took_effect_is_held() {
            // GIVEN a client whose first claim write succeeds but loses its response
            let lose = LoseFirstResponse::to("m#");
            let store = store_with(intercepted(lose.clone())).await;
            // WHEN a message is published
            let published = publish(&store, "m1").await.expect("not InProgress");
            // THEN the claim was recognised as this call's own, and the delta stored once
            assert!(lose.fired.load(Ordering::SeqCst), "no response was lost");
            assert_eq!(published.seq, 1);
            assert_eq!(deltas(&store).await.len(), 1);
        }

        #[tokio::test]
        async fn a_live_foreign_claim_answers_in_progress() {
            // GIVEN another attempt at m1 holding a live lease, its delta not yet written
            let store = store().await;
            let claim = ClaimItem {
                pk: channel_pk(CHANNEL),
                sk: claim_sk("m1"),
                ep: "e1".into(),
                seq: 1,
                lease: clock::now_ms() + 60_000,
                ttl: clock::now_secs() + 3600,
            };
            store
                .client()
                .put_item()
                .table_name(store.table())
                .set_item(Some(serde_dynamo::to_item(&claim).unwrap()))
                .send()
                .await
                .unwrap();
            let before = items(&store).await;
            // WHEN m1 is published again
            let result = publish(&store, "m1").await;
            // THEN the caller hears InProgress, and nothing was written
            assert!(
                matches!(result, Err(PublishError::InProgress)),
                "{result:?}"
            );
            assert_eq!(items(&store).await, before);
        }

        #[tokio::test]
        async fn a_batch_that_stays_unprocessed_is_given_up() {
            let throttle = Throttle::default();
            let store = store_with(intercepted(throttle.clone())).await;
            let result = store
                .put_connection(&NewConnection {
                    connection_id: "c1",
                    sub: "alice",
                    capabilities: "{}",
                    token_exp: clock::now_secs() + 3600,
                    connected_at: clock::now_ms(),
                    source_ip: None,
                })
                .await;
            match result {
                Err(err @ StoreError::Unprocessed { items: 2, attempts }) => {
                    assert_eq!(attempts, MAX_BATCH_ATTEMPTS);
                    assert_eq!(
                        err.to_string(),
                        format!(
                            "batch write left 2 item(s) unprocessed after {MAX_BATCH_ATTEMPTS} attempts"
                        )
                    );
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(throttle.calls.load(Ordering::SeqCst), MAX_BATCH_ATTEMPTS);
        }

        #[tokio::test]
        async fn a_malformed_newest_delta_is_an_error_not_seq_zero() {
            let store = store().await;
            let epoch = EpochItem {
                pk: channel_pk(CHANNEL),
                sk: EPOCH_SK.into(),
                ep: "e1".into(),
                at: clock::now_ms(),
            };
            let mut delta: Item = serde_dynamo::to_item(DeltaItem::new(
                &Delta {
                    channel: CHANNEL.into(),
                    seq: 4,
                    epoch: "e1".into(),
                    id: "m4".into(),
                    from: "alice".into(),
                    ts: clock::now_ms(),
                    data: Payload::from_json("1".into()).unwrap(),
                },
                clock::now_secs() + 3600,
            ))
            .unwrap();
            delta.insert("seq".into(), s("four"));
            for item in [serde_dynamo::to_item(epoch).unwrap(), delta] {
                store
                    .client()
                    .put_item()
                    .table_name(store.table())
                    .set_item(Some(item))
                    .send()
                    .await
                    .unwrap();
            }
            match store.head(CHANNEL).await {
                Err(StoreError::Malformed(err)) => {
                    assert_eq!(err.key, format!("h#{CHANNEL}/d#e1#000000000004"));
                    assert!(err.reason.contains("`seq`"), "{}", err.reason);
                }
                other => panic!("{other:?}"),
            }
            let result = publish(&store, "m5").await;
            assert!(
                matches!(result, Err(PublishError::Store(StoreError::Malformed(_)))),
                "{result:?}"
            );
        }

        #[tokio::test]
        async fn nothing_follows_the_largest_seq() {
            let store = store().await;
            let published = publish(&store, "m1").await.unwrap();
            let page = store
                .deltas_after(CHANNEL, &published.epoch, MAX_SEQ, 10, usize::MAX)
                .await
                .expect("an empty page, not a storage error");
            assert!(page.deltas.is_empty() && !page.more);
            let page = store
                .deltas_after(CHANNEL, &published.epoch, 0, 10, usize::MAX)
                .await
                .unwrap();
            assert_eq!(page.deltas.len(), 1);
        }
    }
}
