//! What every candidate shares: one channel on a table of its own, a meter every request
//! reports to (requests, `ConsumedCapacity`, refused writes), the item shapes (the same
//! keys as the store's, see `deltacast::store::items`), and the check that the stored
//! deltas are gap-free and once per message.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, ConsumedCapacity, KeySchemaElement, KeyType,
    ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
};
use deltacast::store::items::{DELTA_PREFIX, EPOCH_SK, channel_pk, claim_sk, delta_sk};

/// An item.
pub type Item = HashMap<String, AttributeValue>;

/// The one epoch of every run: epochs change only when a channel expires, never here.
pub const EPOCH: &str = "e1";

/// Counts what a run asks of DynamoDB.
#[derive(Default)]
pub struct Meter {
    requests: AtomicU64,
    /// Write and read units, in thousandths (atomics hold integers).
    wcu_milli: AtomicU64,
    rcu_milli: AtomicU64,
    retries: AtomicU64,
    batches: AtomicU64,
    round_trips: AtomicU64,
}

impl Meter {
    /// A request and the capacity it reports (`TOTAL` reports only `CapacityUnits`, so
    /// the caller says whether they are write or read units).
    pub fn record(&self, consumed: Option<&ConsumedCapacity>, write: bool) {
        self.record_units(
            consumed.and_then(|c| c.capacity_units).unwrap_or(0.0),
            write,
        );
    }

    /// A request that consumed `units` write (or read) units.
    pub fn record_units(&self, units: f64, write: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let milli = (units * 1000.0).round() as u64;
        let total = if write {
            &self.wcu_milli
        } else {
            &self.rcu_milli
        };
        total.fetch_add(milli, Ordering::Relaxed);
    }

    /// A conditional write DynamoDB refused: it bills the write (1 unit for an item of at
    /// most 1 KB, as all of these are) but reports no capacity with the error.
    pub fn refused(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.wcu_milli.fetch_add(1000, Ordering::Relaxed);
    }

    /// A lost race.
    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A sequencer batch.
    pub fn batch(&self) {
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    /// How many requests paid the added network latency.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// `(requests, wcu, rcu, retries, batches)`.
    pub fn totals(&self) -> (u64, f64, f64, u64, u64) {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            get(&self.requests),
            get(&self.wcu_milli) as f64 / 1000.0,
            get(&self.rcu_milli) as f64 / 1000.0,
            get(&self.retries),
            get(&self.batches),
        )
    }
}

/// One channel of one run.
pub struct Ctx {
    /// The client.
    pub client: Client,
    /// The candidate's table.
    pub table: String,
    /// The channel's partition key.
    pub pk: String,
    /// What the run asked of DynamoDB.
    pub meter: Meter,
    /// Network latency added to each request (DynamoDB Local has none).
    pub rtt: Duration,
    /// Every `(from, id)` whose delta a candidate reported as stored, by seq.
    pub stored: Mutex<Vec<(u64, String)>>,
}

impl Ctx {
    /// A fresh context for `channel` on `table`.
    pub fn new(client: Client, table: &str, channel: &str, rtt: Duration) -> Self {
        Ctx {
            rtt,
            client,
            table: table.to_owned(),
            pk: channel_pk(channel),
            meter: Meter::default(),
            stored: Mutex::new(Vec::new()),
        }
    }

    /// The added network latency of one request: call before each metered request.
    pub async fn round_trip(&self) {
        self.meter.round_trips.fetch_add(1, Ordering::Relaxed);
        if !self.rtt.is_zero() {
            tokio::time::sleep(self.rtt).await;
        }
    }

    /// `(pk, sk)` as an item's key attributes.
    pub fn key(&self, sk: String) -> Item {
        HashMap::from([
            ("pk".to_owned(), s(&self.pk)),
            ("sk".to_owned(), AttributeValue::S(sk)),
        ])
    }

    /// The delta of `from`'s message `id` at `seq`.
    pub fn delta(&self, seq: u64, from: &str, id: &str, data: &str) -> Item {
        let mut item = self.key(delta_sk(EPOCH, seq));
        item.insert("seq".into(), n(seq));
        item.insert("ep".into(), s(EPOCH));
        item.insert("id".into(), s(id));
        item.insert("from".into(), s(from));
        item.insert("ts".into(), n(deltacast::clock::now_ms()));
        item.insert("data".into(), s(data));
        item.insert("ttl".into(), n(deltacast::clock::now_secs() + 86_400));
        item
    }

    /// The claim (inbox item) of `from`'s message `id`: at `seq` with a lease (the race,
    /// the counter) or carrying the data for the sequencer.
    pub fn claim(&self, from: &str, id: &str, seq: Option<u64>, data: Option<&str>) -> Item {
        let mut item = self.key(claim_sk(from, id));
        item.insert("ep".into(), s(EPOCH));
        if let Some(seq) = seq {
            item.insert("seq".into(), n(seq));
            item.insert("lease".into(), n(deltacast::clock::now_ms() + 15_000));
        }
        if let Some(data) = data {
            item.insert("data".into(), s(data));
        }
        item.insert("ttl".into(), n(deltacast::clock::now_secs() + 86_400));
        item
    }

    /// Writes the channel's epoch item (before the run; not metered).
    pub async fn start_epoch(&self) -> Result<(), String> {
        let mut item = self.key(EPOCH_SK.to_owned());
        item.insert("ep".into(), s(EPOCH));
        item.insert("at".into(), n(deltacast::clock::now_ms()));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| format!("epoch item: {}", sdk(e)))?;
        Ok(())
    }

    /// A conditional put (`condition`, with `values`). `Ok(None)` when written,
    /// `Ok(Some(found))` when refused (`found` is the item in the way, if any).
    pub async fn put_if(
        &self,
        item: Item,
        condition: &str,
        values: Option<(&str, AttributeValue)>,
    ) -> Result<Option<Option<Item>>, String> {
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if let Some((name, value)) = values {
            request = request.expression_attribute_values(name, value);
        }
        self.round_trip().await;
        match request.send().await {
            Ok(out) => {
                self.meter.record(out.consumed_capacity(), true);
                Ok(None)
            }
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(refused) => {
                    self.meter.refused();
                    Ok(Some(refused.item))
                }
                other => Err(format!("put: {other}")),
            },
            Err(e) => Err(format!("put: {}", sdk(e))),
        }
    }

    /// Writes `from`'s delta of message `id` at `seq` unless the seq is taken; true when
    /// the seq holds this message's delta (also after the SDK retried a write that had
    /// taken effect, which then finds its own delta).
    pub async fn put_delta(
        &self,
        seq: u64,
        from: &str,
        id: &str,
        data: &str,
    ) -> Result<bool, String> {
        let item = self.delta(seq, from, id, data);
        let ours = match self.put_if(item, "attribute_not_exists(pk)", None).await? {
            None => true,
            Some(Some(found)) => {
                found.get("id") == Some(&s(id)) && found.get("from") == Some(&s(from))
            }
            Some(None) => false,
        };
        if ours {
            self.stored
                .lock()
                .expect("stored")
                .push((seq, format!("{from}/{id}")));
        }
        Ok(ours)
    }

    /// A Query of the epoch's deltas.
    fn deltas(&self) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :d)")
            .expression_attribute_values(":pk", s(&self.pk))
            .expression_attribute_values(":d", s(format!("{DELTA_PREFIX}{EPOCH}#")))
    }

    /// The newest seq of the epoch: a Query of one item, newest first.
    pub async fn newest_seq(&self) -> Result<u64, String> {
        self.round_trip().await;
        let out = self
            .deltas()
            .projection_expression("seq")
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| format!("head query: {}", sdk(e)))?;
        self.meter.record(out.consumed_capacity(), false);
        Ok(out
            .items()
            .first()
            .and_then(|item| number(item, "seq"))
            .unwrap_or(0))
    }

    /// A consistent GetItem of `sk`.
    pub async fn get(&self, sk: String) -> Result<Option<Item>, String> {
        self.round_trip().await;
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(sk)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| format!("get: {}", sdk(e)))?;
        self.meter.record(out.consumed_capacity(), false);
        Ok(out.item)
    }

    /// What is wrong with the stored deltas, given that `completed` publishes were
    /// answered: the seqs must be exactly 1..=completed, each message's once, and each
    /// the one its publisher was told.
    pub async fn problems(&self, completed: u64) -> Result<Vec<String>, String> {
        let mut found: Vec<(u64, String)> = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .deltas()
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| format!("check query: {}", sdk(e)))?;
            for item in out.items() {
                let text = |name: &str| match item.get(name) {
                    Some(AttributeValue::S(v)) => v.clone(),
                    _ => String::new(),
                };
                found.push((
                    number(item, "seq").unwrap_or(0),
                    format!("{}/{}", text("from"), text("id")),
                ));
            }
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        let mut told = self.stored.lock().expect("stored").clone();
        told.sort();
        Ok(check(found, told, completed))
    }
}

/// The problems of stored deltas `found` (seq, message), given what publishers were
/// `told` and how many publishes `completed`.
pub fn check(
    mut found: Vec<(u64, String)>,
    mut told: Vec<(u64, String)>,
    completed: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    found.sort();
    told.sort();
    if found.len() as u64 != completed {
        problems.push(format!(
            "{} deltas stored for {completed} publishes",
            found.len()
        ));
    }
    if let Some(at) = found
        .iter()
        .enumerate()
        .find(|(i, (seq, _))| *seq != *i as u64 + 1)
    {
        problems.push(format!("seq {} where {} was due", at.1.0, at.0 + 1));
    }
    let messages: HashSet<&String> = found.iter().map(|(_, m)| m).collect();
    if messages.len() != found.len() {
        problems.push(format!(
            "{} duplicate messages",
            found.len() - messages.len()
        ));
    }
    if found != told {
        problems.push("the stored deltas differ from the acks".into());
    }
    problems
}

/// Creates a pk/sk table on demand (the store's key schema).
pub async fn create_table(client: &Client, name: &str) -> Result<(), String> {
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .attribute_definitions(attribute("sk"))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .map_err(|e| format!("create table {name}: {}", sdk(e)))?;
    Ok(())
}

/// Deletes a table this run created.
pub async fn delete_table(client: &Client, name: &str) -> Result<(), String> {
    client
        .delete_table()
        .table_name(name)
        .send()
        .await
        .map_err(|e| format!("delete table {name}: {}", sdk(e)))?;
    Ok(())
}

/// A string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// A number attribute of an item.
pub fn number(item: &Item, name: &str) -> Option<u64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

/// An SDK error with its causes.
pub fn sdk<E: std::error::Error + 'static, R: std::fmt::Debug>(e: SdkError<E, R>) -> String {
    aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::check;

    fn deltas(pairs: &[(u64, &str)]) -> Vec<(u64, String)> {
        pairs.iter().map(|(s, m)| (*s, (*m).to_owned())).collect()
    }

    #[test]
    fn gap_free_once_per_message_passes() {
        let found = deltas(&[(2, "p1/m1"), (1, "p0/m0"), (3, "p0/m1")]);
        assert!(check(found.clone(), found, 3).is_empty());
    }

    #[test]
    fn gaps_duplicates_and_unacked_deltas_are_problems() {
        let gap = deltas(&[(1, "p0/m0"), (3, "p0/m1")]);
        assert_eq!(check(gap.clone(), gap, 2), ["seq 3 where 2 was due"]);
        let twice = deltas(&[(1, "p0/m0"), (2, "p0/m0")]);
        assert_eq!(check(twice.clone(), twice, 2), ["1 duplicate messages"]);
        let unacked = deltas(&[(1, "p0/m0"), (2, "p0/m1")]);
        assert_eq!(
            check(unacked, deltas(&[(1, "p0/m0")]), 1),
            [
                "2 deltas stored for 1 publishes",
                "the stored deltas differ from the acks"
            ]
        );
    }
}
