//! A state channel's `update`: one conditional put of its op item, which is also its
//! idempotency claim, into one of the channel's op shards. Nothing else is read or
//! written: the fold (the sequencer, fed by the stream) applies it to the document.

use super::attributes::Conditional;
use super::items::claim_sk;
use super::state_items::{OpItem, op_pk, op_shard};
use super::{Store, StoreError};

/// An update to store.
#[derive(Clone, Debug)]
pub struct NewOps<'a> {
    /// The state channel.
    pub channel: &'a str,
    /// The message id (the idempotency key).
    pub id: &'a str,
    /// The publisher's `sub`.
    pub from: &'a str,
    /// The ops, as JSON text.
    pub ops: &'a str,
    /// When API Gateway received them, Unix ms.
    pub at: u64,
    /// The connection that sent them.
    pub conn: &'a str,
}

/// What storing an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpsStored {
    /// Stored: the fold will apply it once.
    Stored,
    /// This publisher's id was stored before: nothing changed.
    Duplicate,
}

impl Store {
    /// Stores `new` in its shard (of `shards`) unless its `(sub, id)` is there already;
    /// with `ttl`, the claim expires then (Unix seconds).
    pub async fn put_ops(
        &self,
        new: NewOps<'_>,
        shards: u32,
        ttl: Option<u64>,
    ) -> Result<OpsStored, StoreError> {
        let item = OpItem {
            pk: op_pk(new.channel, op_shard(new.from, new.id, shards)),
            sk: claim_sk(new.from, new.id),
            id: new.id.into(),
            from: new.from.into(),
            ops: new.ops.into(),
            at: new.at,
            conn: new.conn.into(),
            ttl,
        };
        let mut request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(&item)?))
            .condition_expression("attribute_not_exists(pk)");
        if ttl.is_some() {
            // An expired claim that TTL has not deleted yet counts as gone.
            request = request
                .condition_expression("attribute_not_exists(pk) OR #ttl < :now")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(
                    ":now",
                    super::attributes::n(crate::clock::now_secs()),
                );
        }
        Ok(match self.put_or_find(request).await? {
            Conditional::Written(()) => OpsStored::Stored,
            Conditional::Refused(found) => {
                // The SDK's retry of a put that took effect finds the very same item.
                let same = found
                    .and_then(|f| serde_dynamo::from_item::<_, OpItem>(f).ok())
                    .is_some_and(|f| f == item);
                if same {
                    OpsStored::Stored
                } else {
                    OpsStored::Duplicate
                }
            }
        })
    }
}
