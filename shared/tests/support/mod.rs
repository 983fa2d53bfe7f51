//! What the store's DynamoDB Local tests share: a store on a fresh table (from the common
//! harness, `deltacast_tests`) whose client may carry SDK interceptors, so that lost
//! responses and throttled batches are simulated while the SDK's own retries run as they
//! would against AWS; and small readers of the table.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeDeserializationInterceptorContextMut,
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents, SharedInterceptor};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::client::interceptors::context::Input;
use aws_smithy_runtime_api::http::{Response, StatusCode};
use aws_smithy_types::body::SdkBody;
use deltacast::protocol::{Channel, MessageId, Payload};
use deltacast::store::{NewDelta, PublishError, Published, Store};

/// An item as the SDK holds it.
pub type Item = HashMap<String, AttributeValue>;

/// The channel the tests publish on.
pub const CHANNEL: &str = "chat:lobby";

/// A store on a fresh table, its client carrying `interceptors` and retrying quickly.
pub async fn store_with(interceptors: Vec<SharedInterceptor>) -> Store {
    let (_, table) = deltacast_tests::fresh_table().await;
    let mut config = aws_sdk_dynamodb::config::Builder::from(&deltacast_tests::sdk_config().await)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(5)),
        );
    for interceptor in interceptors {
        config.push_interceptor(interceptor);
    }
    Store::new(
        Client::from_conf(config.build()),
        table,
        deltacast_tests::lifetimes(),
    )
}

/// A store on a fresh table.
pub async fn store() -> Store {
    deltacast_tests::fresh_store().await
}

/// The same store, with connection `c1` of `alice` stored.
pub async fn connected(store: Store) -> Store {
    store
        .put_connection(&deltacast_tests::events::new_connection("c1", "alice"))
        .await
        .unwrap();
    store
}

/// Every item of the table, sorted by key (for before/after comparisons).
pub async fn items(store: &Store) -> Vec<Item> {
    let mut items = deltacast_tests::all_items(store).await;
    let key = |item: &Item| {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        (text("pk"), text("sk"))
    };
    items.sort_by_key(key);
    items
}

/// The delta items of the table.
pub async fn deltas(store: &Store) -> Vec<Item> {
    items(store)
        .await
        .into_iter()
        .filter(|item| item["sk"].as_s().unwrap().starts_with("d#"))
        .collect()
}

/// The item at `pk`/`sk`, if any.
pub async fn item(store: &Store, pk: &str, sk: &str) -> Option<Item> {
    store
        .client()
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .expect("get")
        .item
}

/// Writes `item` as it is.
pub async fn put(store: &Store, item: Item) {
    store
        .client()
        .put_item()
        .table_name(store.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put");
}

/// Publishes `1` as alice's message `id` on [`CHANNEL`].
pub async fn publish(store: &Store, id: &str) -> Result<Published, PublishError> {
    publish_as(store, "alice", id, None).await
}

/// Puts alice's message `id` with `data` (JSON) in [`CHANNEL`]'s inbox, as the message
/// function does for connection `conn`, guarded by `expect_seq` and the channel `limit`.
pub async fn enqueue(
    store: &Store,
    id: &str,
    data: &str,
    expect_seq: Option<u64>,
    conn: &str,
    limit: Option<deltacast::config::RateLimit>,
) -> deltacast::store::Enqueued {
    let channel = Channel::parse(CHANNEL).unwrap();
    let id = MessageId::parse(id).unwrap();
    let data = Payload::from_json(data.into()).unwrap();
    let new = NewDelta {
        channel: &channel,
        id: &id,
        from: "alice",
        data: &data,
        expect_seq,
    };
    store.enqueue(new, conn, limit).await.unwrap()
}

/// Publishes `1` as `from`'s message `id` on [`CHANNEL`], guarded by `expect_seq`.
pub async fn publish_as(
    store: &Store,
    from: &str,
    id: &str,
    expect_seq: Option<u64>,
) -> Result<Published, PublishError> {
    let channel = Channel::parse(CHANNEL).unwrap();
    let id = MessageId::parse(id).unwrap();
    let data = Payload::from_json("1".into()).unwrap();
    store
        .publish(NewDelta {
            channel: &channel,
            id: &id,
            from,
            data: &data,
            expect_seq,
        })
        .await
}

/// An interceptor as the SDK's client configuration takes it.
pub fn intercepted(interceptor: impl Intercept + 'static) -> SharedInterceptor {
    SharedInterceptor::new(interceptor)
}

type Matcher = dyn Fn(&Input) -> bool + Send + Sync;

/// Replaces DynamoDB's response to one request (the first that `matches` once armed)
/// with another, after DynamoDB has handled the request: as a lost response would (the
/// SDK then sends the request again), or as a stale read would.
#[derive(Clone)]
pub struct ReplaceResponse {
    matches: Arc<Matcher>,
    status: u16,
    body: &'static str,
    /// Whether the next matching request gets the replacement.
    pub armed: Arc<AtomicBool>,
    /// Whether the request in flight gets it.
    pending: Arc<AtomicBool>,
    /// Whether a response was replaced.
    pub fired: Arc<AtomicBool>,
}

impl fmt::Debug for ReplaceResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplaceResponse")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// DynamoDB's answer to a request it may or may not have carried out.
const INTERNAL_ERROR: &str = r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"response lost"}"#;

impl ReplaceResponse {
    /// Answers the first matching request with `status` and `body`, armed from the start.
    pub fn new(
        matches: impl Fn(&Input) -> bool + Send + Sync + 'static,
        status: u16,
        body: &'static str,
    ) -> Self {
        Self {
            matches: Arc::new(matches),
            status,
            body,
            armed: Arc::new(AtomicBool::new(true)),
            pending: Arc::default(),
            fired: Arc::default(),
        }
    }

    /// Loses the response to the first PutItem whose sort key starts with `prefix`.
    pub fn lose_put(prefix: &'static str) -> Self {
        Self::new(
            move |input| {
                input
                    .downcast_ref::<aws_sdk_dynamodb::operation::put_item::PutItemInput>()
                    .and_then(|input| input.item()?.get("sk")?.as_s().ok())
                    .is_some_and(|sk| sk.starts_with(prefix))
            },
            500,
            INTERNAL_ERROR,
        )
    }

    /// Loses the response to the first UpdateItem of an item whose sort key is `sk`.
    pub fn lose_update(sk: &'static str) -> Self {
        Self::new(
            move |input| {
                input
                    .downcast_ref::<aws_sdk_dynamodb::operation::update_item::UpdateItemInput>()
                    .and_then(|input| input.key()?.get("sk")?.as_s().ok())
                    .is_some_and(|found| found == sk)
            },
            500,
            INTERNAL_ERROR,
        )
    }

    /// Answers the first read of a channel's newest delta with nothing, as a read racing
    /// another publisher's write would.
    pub fn stale_newest_delta() -> Self {
        Self::new(
            |input| {
                input
                    .downcast_ref::<aws_sdk_dynamodb::operation::query::QueryInput>()
                    .and_then(|input| input.key_condition_expression())
                    .is_some_and(|condition| condition.contains("begins_with"))
            },
            200,
            r#"{"Count":0,"Items":[],"ScannedCount":0}"#,
        )
    }

    /// The same, waiting for [`Self::arm`].
    pub fn disarmed(self) -> Self {
        self.armed.store(false, Ordering::SeqCst);
        self
    }

    /// Replaces the response to the next matching request.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Whether a response was replaced.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Intercept for ReplaceResponse {
    fn name(&self) -> &'static str {
        "ReplaceResponse"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if (self.matches)(context.input()) && self.armed.swap(false, Ordering::SeqCst) {
            self.pending.store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn modify_before_deserialization(
        &self,
        context: &mut BeforeDeserializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.pending.swap(false, Ordering::SeqCst) {
            *context.response_mut() =
                Response::new(StatusCode::try_from(self.status)?, SdkBody::from(self.body));
            self.fired.store(true, Ordering::SeqCst);
        }
        Ok(())
    }
}

/// Reports every item of every BatchWriteItem as unprocessed, as sustained throttling
/// would.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    request: Arc<Mutex<Option<serde_json::Value>>>,
    /// How many batches were answered.
    pub calls: Arc<AtomicU32>,
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

/// Counts the Query requests a store sends and the items they read (DynamoDB's
/// `ScannedCount`: items read before any filter).
#[derive(Debug, Clone, Default)]
pub struct CountQueries {
    /// Query requests answered.
    pub queries: Arc<AtomicU32>,
    /// Items those requests read.
    pub items: Arc<AtomicU32>,
}

impl CountQueries {
    /// The counts so far, `(queries, items)`, and starts again from zero.
    pub fn take(&self) -> (u32, u32) {
        (
            self.queries.swap(0, Ordering::SeqCst),
            self.items.swap(0, Ordering::SeqCst),
        )
    }
}

impl Intercept for CountQueries {
    fn name(&self) -> &'static str {
        "CountQueries"
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Ok(output) = context.output_or_error()
            && let Some(output) =
                output.downcast_ref::<aws_sdk_dynamodb::operation::query::QueryOutput>()
        {
            self.queries.fetch_add(1, Ordering::SeqCst);
            self.items
                .fetch_add(output.scanned_count() as u32, Ordering::SeqCst);
        }
        Ok(())
    }
}
