//! What a delivery costs: DynamoDB capacity measured with `ReturnConsumedCapacity`,
//! checked against the pricing rule, and turned into dollars with list prices, beside the
//! same model for the design of AWS's simple-websockets-chat-app sample (scan every
//! connection, post to every connection).
//!
//! Prices are AWS's published us-east-1 list prices (on-demand DynamoDB after the
//! November 2024 reduction, Lambda on arm64, API Gateway WebSocket messages in the first
//! billion); they are inputs of the model, printed with it.

use deltacast::config::RateLimit;
use deltacast::protocol::{Channel, MessageId, Payload};
use deltacast::store::{BucketOf, CapacityMeter, Enqueued, NewConnection, NewDelta, Store};
use serde::Serialize;

/// List prices, USD.
#[derive(Clone, Debug, Serialize)]
pub struct Prices {
    /// Per million DynamoDB write request units.
    pub dynamodb_write_per_million: f64,
    /// Per million DynamoDB read request units.
    pub dynamodb_read_per_million: f64,
    /// Per million Lambda requests.
    pub lambda_request_per_million: f64,
    /// Per GB-second of Lambda on arm64.
    pub lambda_gb_second: f64,
    /// Per million API Gateway WebSocket messages (32 KB units).
    pub websocket_message_per_million: f64,
}

/// The prices the model uses.
pub const PRICES: Prices = Prices {
    dynamodb_write_per_million: 0.625,
    dynamodb_read_per_million: 0.125,
    lambda_request_per_million: 0.20,
    lambda_gb_second: 0.000_013_333_4,
    websocket_message_per_million: 1.00,
};

/// Measured capacity per operation, as the store's meter counts it (refused conditional
/// writes included, though one publisher at a time meets none: a publish that loses races
/// to concurrent ones pays 2 units more per lost race, see docs/data-model.md).
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    /// Write units per publish of a `payload_bytes` delta (steady state).
    pub wcu_per_publish: f64,
    /// Read units per publish.
    pub rcu_per_publish: f64,
    /// Read units per delivery (the fan-out's subscriber Query, per subscriber).
    pub rcu_per_delivery: f64,
    /// What the pricing rule says a publish should write.
    pub expected_wcu_per_publish: f64,
    /// Payload used.
    pub payload_bytes: usize,
}

/// A store on a table of its own in DynamoDB Local at `dynamodb`, made from `template`:
/// no stream trigger prunes its made-up subscribers.
pub async fn own_store(dynamodb: &str, template: &std::path::Path) -> Result<Store, String> {
    let client =
        aws_sdk_dynamodb::Client::new(&deltacast_local::stack::local_sdk_config(dynamodb).await);
    let table = format!("bench-cost-{:016x}", rand::random::<u64>());
    deltacast_local::template::StackSpec::load(template)
        .map_err(|e| e.to_string())?
        .table
        .create(&client, &table)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Store::new(
        client,
        table,
        deltacast::store::Lifetimes {
            retention: std::time::Duration::from_secs(86_400),
            connection_ttl: std::time::Duration::from_secs(3 * 3600),
            publish_lease: std::time::Duration::from_secs(15),
        },
    ))
}

/// Measures `publishes` publishes (after a first one, which starts the epoch) and the read
/// of a channel of `subscribers` against DynamoDB Local.
pub async fn measure(
    store: Store,
    payload_bytes: usize,
    publishes: usize,
    subscribers: usize,
) -> Result<Capacity, String> {
    let meter = CapacityMeter::default();
    let store = store.with_meter(meter.clone());
    let connection = NewConnection {
        connection_id: "bench-publisher",
        sub: "bench",
        capabilities: "{}",
        token_exp: deltacast::clock::now_secs() + 3600,
        connected_at: deltacast::clock::now_ms(),
        source_ip: None,
    };
    store
        .put_connection(&connection)
        .await
        .map_err(|e| e.to_string())?;
    let channel = Channel::parse("bench:cost").map_err(|e| e.to_string())?;
    let data = Payload::from_json(format!(
        "\"{}\"",
        "x".repeat(payload_bytes.saturating_sub(2))
    ))
    .map_err(|e| e.to_string())?;
    let rate = RateLimit {
        per_second: 1e6,
        burst: 1e6,
    };
    let publish = |n: usize| {
        let (store, channel, data) = (&store, &channel, &data);
        async move {
            let id = MessageId::parse(&format!("m{n}")).map_err(|e| e.to_string())?;
            // The message function takes a token from the connection's bucket and the
            // user's before every publish.
            for bucket in [
                BucketOf::Connection("bench-publisher"),
                BucketOf::User("bench"),
            ] {
                store
                    .take_tokens(bucket, deltacast::clock::now_ms(), rate, 1.0)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let new = NewDelta {
                channel,
                id: &id,
                from: "bench",
                data,
                expect_seq: None,
            };
            // Then it claims the id and stores the delta at once (a quiet channel: the
            // sequencer's stream filter never passes the claim).
            let claim = match store
                .enqueue(new, "bench-publisher", None)
                .await
                .map_err(|e| e.to_string())?
            {
                Enqueued::Claimed(claim) => *claim,
                other => return Err(format!("not claimed: {other:?}")),
            };
            match store.sequence_now(claim, None).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err("seq taken on a channel with one publisher".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        }
    };
    publish(0).await?; // the first publish also creates the epoch
    meter.reset();
    for n in 1..=publishes {
        publish(n).await?;
    }
    let total = meter.total();
    for i in 0..subscribers {
        let subscriber = format!("conn-{i:05}");
        store
            .put_connection(&deltacast::store::NewConnection {
                connection_id: &subscriber,
                sub: "bench",
                capabilities: "{}",
                token_exp: deltacast::clock::now_secs() + 3600,
                connected_at: deltacast::clock::now_ms(),
                source_ip: None,
            })
            .await
            .map_err(|e| e.to_string())?;
        store
            .subscribe(
                &subscriber,
                "bench",
                deltacast::clock::now_secs() + 3600,
                &channel,
                deltacast::clock::now_ms(),
                10,
            )
            .await
            .map_err(|e| e.to_string())?;
    }
    meter.reset();
    let mut start = None;
    let mut read = 0;
    loop {
        let (ids, next) = store
            .subscribers_page("bench:cost", start)
            .await
            .map_err(|e| e.to_string())?;
        read += ids.len();
        match next {
            Some(key) => start = Some(key),
            None => break,
        }
    }
    if read != subscribers {
        return Err(format!("read {read} subscribers of {subscribers}"));
    }
    // Pricing rule: the two buckets and the claim are small items (1 unit each); the
    // delta item is its payload plus about 150 bytes of keys and attributes, in 1 KB units.
    let delta_units = ((payload_bytes + 150) as f64 / 1024.0).ceil();
    Ok(Capacity {
        wcu_per_publish: total.write_units / publishes as f64,
        rcu_per_publish: total.read_units / publishes as f64,
        rcu_per_delivery: meter.total().read_units / subscribers as f64,
        expected_wcu_per_publish: 3.0 + delta_units,
        payload_bytes,
    })
}

/// Dollars per million deliveries for one design.
#[derive(Clone, Debug, Serialize)]
pub struct CostBreakdown {
    /// DynamoDB.
    pub dynamodb: f64,
    /// Lambda requests and compute.
    pub lambda: f64,
    /// API Gateway messages.
    pub api_gateway: f64,
    /// The sum.
    pub total: f64,
}

/// The workload both designs are priced on.
#[derive(Clone, Debug, Serialize)]
pub struct Workload {
    /// Open connections.
    pub connections: usize,
    /// Subscribers per channel.
    pub channel_size: usize,
    /// Deltas per fan-out invocation (stream batch).
    pub deltas_per_batch: f64,
    /// Function memory, MB, and billed duration, ms, per invocation.
    pub message_mb: f64,
    /// Billed ms of one `message` invocation (a publish).
    pub message_ms: f64,
    /// Fan-out memory, MB.
    pub fanout_mb: f64,
    /// Billed ms of fan-out per delivery.
    pub fanout_ms_per_delivery: f64,
}

/// deltacast: a publish is one inbound message, one `message` invocation, its DynamoDB
/// writes and reads, one ack; each delivery is one outbound message and its share of the
/// fan-out's Query and compute.
pub fn deltacast_per_million(capacity: &Capacity, w: &Workload) -> CostBreakdown {
    let deliveries_per_publish = w.channel_size as f64;
    let publishes = 1e6 / deliveries_per_publish;
    let dynamodb = publishes
        * (capacity.wcu_per_publish * PRICES.dynamodb_write_per_million
            + capacity.rcu_per_publish * PRICES.dynamodb_read_per_million)
        / 1e6
        + 1e6 * capacity.rcu_per_delivery * PRICES.dynamodb_read_per_million / 1e6;
    let message_gb_s = w.message_mb / 1024.0 * w.message_ms / 1000.0;
    let fanout_invocations = publishes / w.deltas_per_batch;
    let fanout_gb_s = w.fanout_mb / 1024.0 * w.fanout_ms_per_delivery / 1000.0 * 1e6;
    let lambda = (publishes + fanout_invocations) * PRICES.lambda_request_per_million / 1e6
        + (publishes * message_gb_s + fanout_gb_s) * PRICES.lambda_gb_second;
    let messages = publishes * 2.0 + 1e6;
    let api_gateway = messages * PRICES.websocket_message_per_million / 1e6;
    CostBreakdown {
        dynamodb,
        lambda,
        api_gateway,
        total: dynamodb + lambda + api_gateway,
    }
}

/// AWS's simple-websockets-chat-app at the same workload: no channels, so every message is
/// sent to every connection (only `channel_size` of them wanted it), and the sender
/// function scans the whole connections table (about 100 bytes per connection,
/// eventually consistent) for each message. A delivery is a message someone wanted.
pub fn scan_everything_per_million(w: &Workload) -> CostBreakdown {
    let publishes = 1e6 / w.channel_size as f64;
    let scan_rcu = ((w.connections * 100) as f64 / 4096.0).ceil() * 0.5;
    let dynamodb = publishes * scan_rcu * PRICES.dynamodb_read_per_million / 1e6;
    // One invocation per message that posts to every connection, sequentially, at about
    // as much compute per post as deltacast's fan-out.
    let gb_s = w.message_mb / 1024.0
        * (w.message_ms + w.fanout_ms_per_delivery * w.connections as f64)
        / 1000.0;
    let lambda =
        publishes * (PRICES.lambda_request_per_million / 1e6 + gb_s * PRICES.lambda_gb_second);
    let messages = publishes * (1.0 + w.connections as f64);
    let api_gateway = messages * PRICES.websocket_message_per_million / 1e6;
    CostBreakdown {
        dynamodb,
        lambda,
        api_gateway,
        total: dynamodb + lambda + api_gateway,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_measured_publish_matches_the_pricing_rule() {
        let endpoint = std::env::var("DELTACAST_TEST_DYNAMODB")
            .expect("DELTACAST_TEST_DYNAMODB names DynamoDB Local's endpoint");
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let store = own_store(&endpoint, &template).await.unwrap();
        let capacity = measure(store, 512, 5, 5).await.unwrap();
        assert_eq!(
            capacity.expected_wcu_per_publish, 4.0,
            "2 buckets + claim + a 512-byte delta"
        );
        assert_eq!(capacity.wcu_per_publish, capacity.expected_wcu_per_publish);
        assert_eq!(
            capacity.rcu_per_publish, 4.0,
            "2 buckets and the head once (epoch item and newest delta); a quiet channel's \
             claim never reaches the sequencer"
        );
    }
}
