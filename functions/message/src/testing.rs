//! Test support shared by the handler's and the actions' tests: a [`World`] with a fresh
//! DynamoDB Local table, a connected `alice`, and a recording push, driven the way API
//! Gateway drives the function, with real `$default` payloads.

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use deltacast::answers;
use deltacast::auth::{Capabilities, Identity};
use deltacast::clock;
use deltacast::config::{Env, Settings};
use deltacast::push::Push;
use deltacast::store::items::InboxItem;
use deltacast::store::{CapacityMeter, Subscriber};
use deltacast_tests::push::RecordingPush;
use deltacast_tests::{all_items, events, fresh_store};
use serde_json::{Value, json};

use crate::context::App;
use crate::handler::handle;

/// The connection alice sends on.
pub const CONN: &str = "conn-A";

/// One DynamoDB item.
pub type Item = std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>;

/// The table's items but the rate-limit buckets (connections' liveness items and users'
/// buckets): a request that reaches storage takes a token even when it is refused.
pub fn except_buckets(mut items: Vec<Item>) -> Vec<Item> {
    items.retain(|item| {
        !item["sk"]
            .as_s()
            .is_ok_and(|sk| sk == "live" || sk == "rate")
    });
    items
}

/// The seqs of the deltas in a `history` reply.
pub fn page_seqs(page: &Value) -> Vec<u64> {
    page["deltas"]
        .as_array()
        .expect("a history reply has deltas")
        .iter()
        .map(|delta| delta["seq"].as_u64().expect("a seq"))
        .collect()
}

/// A fresh table with alice connected, and a push that records every frame.
pub struct World {
    /// The function's shared state, on a fresh table.
    pub app: App,
    /// Every frame the function sent.
    pub push: RecordingPush,
    /// The sender most tests use: chat:* and news rights.
    pub alice: Identity,
    /// The inbox messages (claim key and lease) the stand-in sequencer has handled.
    sequenced: std::sync::Mutex<std::collections::HashSet<(String, u64)>>,
}

/// An identity for `sub` with `caps`, valid for an hour.
pub fn identity(sub: &str, caps: Value) -> Identity {
    Identity {
        sub: sub.into(),
        capabilities: Capabilities::from_json(&caps.to_string()).unwrap(),
        exp: clock::now_secs() + 3600,
    }
}

/// A world whose settings add `vars` to the defaults.
pub async fn world_with(vars: &[(&str, &str)]) -> World {
    let store = fresh_store().await;
    let mut pairs = vec![("TABLE_NAME".to_owned(), store.table().to_owned())];
    pairs.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = Settings::from(&Env::from_pairs(pairs)).unwrap();
    store
        .put_connection(&events::new_connection(CONN, "alice"))
        .await
        .unwrap();
    World {
        app: App {
            store,
            settings,
            doors: Default::default(),
        },
        push: RecordingPush::new(),
        alice: identity(
            "alice",
            json!({"chat:*": ["subscribe", "publish", "history"], "news": ["subscribe"],
                   "state:*": ["subscribe", "publish"], "room:*": ["subscribe", "presence"]}),
        ),
        sequenced: Default::default(),
    }
}

/// A world with default settings.
pub async fn world() -> World {
    world_with(&[]).await
}

impl World {
    /// The same world, its store adding the capacity of every request to the meter.
    pub fn metered(mut self) -> (Self, CapacityMeter) {
        let meter = CapacityMeter::default();
        self.app.store = self.app.store.clone().with_meter(meter.clone());
        (self, meter)
    }

    /// Sends a frame as alice on CONN; returns the frames CONN received for it.
    pub async fn send(&self, body: Value) -> Vec<Value> {
        self.send_as(CONN, &self.alice, &body.to_string()).await
    }

    /// Sends a raw frame as `who` on `connection_id`; returns the frames it received.
    pub async fn send_as(&self, connection_id: &str, who: &Identity, body: &str) -> Vec<Value> {
        self.deliver(events::message(connection_id, who, body))
            .await
    }

    /// Hands `request` to the function as API Gateway would; returns the frames its
    /// connection received for it.
    pub async fn deliver(&self, request: ApiGatewayWebsocketProxyRequest) -> Vec<Value> {
        self.push.clear();
        let connection_id = request
            .request_context
            .connection_id
            .clone()
            .unwrap_or_default();
        let response = handle(request, &self.app, &self.push).await.unwrap();
        assert_eq!(response.status_code, 200);
        self.sequence().await;
        self.push.frames(&connection_id)
    }

    /// Does what the sequencer function does with the inbox items its stream filter
    /// passes (those with `q`): gives them their seqs through the real store and posts
    /// each publisher its answer.
    pub async fn sequence(&self) {
        let mut by_channel: std::collections::BTreeMap<String, Vec<InboxItem>> = Default::default();
        for item in all_items(&self.app.store).await {
            if !item["pk"].as_s().is_ok_and(|pk| pk.starts_with("q#")) || !item.contains_key("q") {
                continue;
            }
            let item: InboxItem = serde_dynamo::from_item(item).expect("an inbox item");
            if self
                .sequenced
                .lock()
                .unwrap()
                .insert((item.sk.clone(), item.lease))
            {
                let channel = item.channel().expect("a channel").to_owned();
                by_channel.entry(channel).or_default().push(item);
            }
        }
        let limit = self.app.settings.channel_rate_limit;
        for (channel, items) in by_channel {
            let outcomes = self
                .app
                .store
                .sequence(&channel, items, limit)
                .await
                .expect("sequenced");
            for (item, outcome) in outcomes {
                // Stored already (a retry's claim found stored): acked then.
                if matches!(&outcome, deltacast::store::Sequenced::Published(p) if p.duplicate) {
                    continue;
                }
                let frame = answers::sequenced(&item, &outcome, limit).expect("an answer");
                self.push.post(&item.conn, &frame).await.expect("posted");
            }
        }
    }

    /// Sets the number `attribute` to `value` on `channel`'s item `sk` (its epoch item, a
    /// delta), as another function would have left it.
    pub async fn set_on_channel(&self, channel: &str, sk: &str, attribute: &str, value: u64) {
        use aws_sdk_dynamodb::types::AttributeValue;
        let key = deltacast::store::items::channel_pk(channel);
        self.app
            .store
            .client()
            .update_item()
            .table_name(self.app.store.table())
            .key("pk", AttributeValue::S(key))
            .key("sk", AttributeValue::S(sk.to_owned()))
            .update_expression("SET #a = :v")
            .expression_attribute_names("#a", attribute)
            .expression_attribute_values(":v", AttributeValue::N(value.to_string()))
            .send()
            .await
            .expect("set");
    }

    /// Publishes as alice; returns the single reply.
    pub async fn publish(&self, channel: &str, id: &str, data: Value) -> Value {
        let frames = self
            .send(json!({"action": "publish", "channel": channel, "id": id, "data": data}))
            .await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        frames[0].clone()
    }

    /// Stores `count` deltas of `bytes` bytes of data each on `channel` straight through
    /// the store (taking no rate-limit tokens), as other publishers would have.
    pub async fn store_deltas(&self, channel: &str, count: usize, bytes: usize) {
        deltacast_tests::publish_deltas(&self.app.store, channel, count, bytes).await;
    }

    /// Alice's subscription on CONN as the fan-out reads it, her token's expiry with it.
    pub fn subscriber(&self) -> Subscriber {
        Subscriber {
            connection_id: CONN.into(),
            token_exp: Some(self.alice.exp),
            coalesce: false,
            presence: false,
        }
    }

    /// How many delta items the table holds.
    pub async fn delta_items(&self) -> usize {
        all_items(&self.app.store)
            .await
            .iter()
            .filter(|item| item["sk"].as_s().unwrap().starts_with("d#"))
            .count()
    }
}
