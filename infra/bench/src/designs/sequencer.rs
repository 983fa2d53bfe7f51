//! `sequencer`: an inbox and a single sequencer. A publisher writes its claim carrying the
//! data (the inbox item, `attribute_not_exists`) and hands it to one in-process task
//! through a channel, which stands in for the DynamoDB stream of the inbox items. The
//! task takes whatever is waiting (up to 100, a stream batch), reads the head once,
//! writes the batch's deltas one after another (sequentially: the deltas' stream must
//! see them in seq order) and acks each publisher. A publish's latency runs from the
//! inbox write to the ack; the stream's own delay (a poll interval on AWS) is not in it.
//!
//! `sequencer-tx` writes a batch's deltas in one `TransactWriteItems` instead (up to 100
//! items, each still `attribute_not_exists`): one round trip per batch rather than one
//! per delta, at twice the write units.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use aws_sdk_dynamodb::types::{Put, TransactWriteItem};

use super::Outcome;
use super::dynamo::{Ctx, sdk};

/// A stream batch's most records.
const BATCH: usize = 100;

/// A message in the inbox, as the stream hands it over.
struct Inbound {
    from: String,
    id: String,
    data: String,
    ack: oneshot::Sender<Result<u64, String>>,
}

/// The inbox's consumer.
pub struct Sequencer {
    inbox: mpsc::UnboundedSender<Inbound>,
    task: JoinHandle<()>,
}

impl Sequencer {
    /// Starts the sequencer of `ctx`'s channel; `transaction`: one transaction per batch.
    pub fn start(ctx: Arc<Ctx>, transaction: bool) -> Self {
        let (inbox, mut stream) = mpsc::unbounded_channel::<Inbound>();
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while stream.recv_many(&mut batch, BATCH).await > 0 {
                ctx.meter.batch();
                let result = if transaction {
                    sequence_in_one(&ctx, &batch).await
                } else {
                    sequence(&ctx, &batch).await
                };
                for (i, message) in batch.drain(..).enumerate() {
                    let answer = match &result {
                        Ok(head) => Ok(head + 1 + i as u64),
                        Err(e) => Err(e.clone()),
                    };
                    let _ = message.ack.send(answer);
                }
            }
        });
        Sequencer { inbox, task }
    }

    /// One publish of `from`'s message `id`.
    pub async fn publish(
        &self,
        ctx: &Ctx,
        from: &str,
        id: &str,
        data: &str,
    ) -> Result<Outcome, String> {
        let claim = ctx.claim(from, id, None, Some(data));
        if ctx
            .put_if(claim, "attribute_not_exists(pk)", None)
            .await?
            .is_some()
        {
            return Err(format!("{from}/{id}: the inbox item exists"));
        }
        let (ack, acked) = oneshot::channel();
        self.inbox
            .send(Inbound {
                from: from.to_owned(),
                id: id.to_owned(),
                data: data.to_owned(),
                ack,
            })
            .map_err(|_| "the sequencer stopped")?;
        acked.await.map_err(|_| "the sequencer dropped an ack")??;
        Ok(Outcome::Stored)
    }

    /// Waits for the sequencer to finish once every publisher is done.
    pub async fn stop(self) {
        drop(self.inbox);
        let _ = self.task.await;
    }
}

/// Stores a batch's deltas after the head; returns the head they follow.
async fn sequence(ctx: &Ctx, batch: &[Inbound]) -> Result<u64, String> {
    let head = ctx.newest_seq().await?;
    for (i, m) in batch.iter().enumerate() {
        let seq = head + 1 + i as u64;
        if !ctx.put_delta(seq, &m.from, &m.id, &m.data).await? {
            return Err(format!(
                "seq {seq} taken although one sequencer owns the channel"
            ));
        }
    }
    Ok(head)
}

/// Stores a batch's deltas after the head in one transaction; returns the head.
async fn sequence_in_one(ctx: &Ctx, batch: &[Inbound]) -> Result<u64, String> {
    let head = ctx.newest_seq().await?;
    let mut request = ctx.client.transact_write_items();
    for (i, m) in batch.iter().enumerate() {
        let put = Put::builder()
            .table_name(&ctx.table)
            .set_item(Some(ctx.delta(
                head + 1 + i as u64,
                &m.from,
                &m.id,
                &m.data,
            )))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| e.to_string())?;
        request = request.transact_items(TransactWriteItem::builder().put(put).build());
    }
    ctx.round_trip().await;
    request
        .send()
        .await
        .map_err(|e| format!("batch transaction: {}", sdk(e)))?;
    // DynamoDB Local reports 2 units per transaction whatever its size; AWS bills 2 per
    // item of at most 1 KB, as these are.
    ctx.meter.record_units(2.0 * batch.len() as f64, true);
    ctx.stored.lock().expect("stored").extend(
        batch
            .iter()
            .enumerate()
            .map(|(i, m)| (head + 1 + i as u64, format!("{}/{}", m.from, m.id))),
    );
    Ok(head)
}
