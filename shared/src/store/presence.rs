//! A channel's presence: entering (one transaction: the connection must still be there,
//! the member item, and the membership listed under the connection so that `$disconnect`
//! finds it), updating one's data, leaving, and reading the members a page at a time.
//! Changes reach watchers through the stream: the sequencer folds member records into the
//! presence document (`presence_fold`), whose patches the fan-out sends.
//!
//! The member limit is checked against the count the fold keeps on the presence document,
//! which trails the members by one fold (a fraction of a second): a burst of enters can
//! pass it by the enters of that moment. A member who is already in may always update.

use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{ConditionCheck, Put, TransactWriteItem};

use super::attributes::{delete_request, dynamo, n, number, s, text};
use super::capacity::trace_request;
use super::item_size::{item_bytes, write_units};
use super::items::{LIVE_SK, connection_pk};
use super::state_items::{MemberItem, PRESENCE_SK, members_pk, membership_sk, state_pk};
use super::{Store, StoreError};
use crate::clock;
use crate::protocol::{Member, Payload};

/// A member to store.
#[derive(Clone, Debug)]
pub struct NewMember<'a> {
    /// The channel.
    pub channel: &'a str,
    /// The member's connection.
    pub connection_id: &'a str,
    /// Its user.
    pub sub: &'a str,
    /// Its data, as JSON text.
    pub data: Option<&'a str>,
    /// Now (when API Gateway received the frame), Unix ms.
    pub at: u64,
    /// When its connection opened, Unix ms (its items expire after the connection TTL).
    pub connected_at: u64,
}

/// What an `enter` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entered {
    /// The connection is a member (newly, or with its data updated).
    Entered,
    /// The channel has `max` members already.
    Full {
        /// The limit.
        max: u64,
    },
}

/// One page of members.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberPage {
    /// The presence version when the page was read (read before the page).
    pub version: u64,
    /// The members, by member id.
    pub members: Vec<Member>,
    /// The member id to ask `after` for the next page, when there may be more.
    pub next: Option<String>,
}

impl Store {
    /// Makes `new` a member of its channel unless the channel has `max` members and it is
    /// not one of them. A connection that is gone is refused ([`StoreError::ConnectionGone`])
    /// and nothing is written.
    pub async fn enter(&self, new: &NewMember<'_>, max: u64) -> Result<Entered, StoreError> {
        if self.presence_number(new.channel, "n").await? >= max
            && !self.is_member(new.channel, new.connection_id).await?
        {
            // Members whose connection vanished may be what fills it: they go now, and
            // the count drops once their removal is folded.
            self.sweep_expired(new.channel).await?;
            return Ok(Entered::Full { max });
        }
        let item: super::attributes::Item = serde_dynamo::to_item(self.member_item(new))?;
        let item_copy = item.clone();
        let expiry = self.connection_expiry(new.connected_at);
        let membership = std::collections::HashMap::from([
            ("pk".to_owned(), s(connection_pk(new.connection_id))),
            ("sk".to_owned(), s(membership_sk(new.channel))),
            ("ttl".to_owned(), n(expiry)),
        ]);
        let live = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(connection_pk(new.connection_id)))
            .key("sk", s(LIVE_SK))
            .condition_expression("attribute_exists(pk)")
            .build()
            .expect("a condition check with its table, key and condition");
        let put = |item| {
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build()
                .expect("a put with its table and item")
        };
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(live).build())
            .transact_items(TransactWriteItem::builder().put(put(item)).build())
            .transact_items(TransactWriteItem::builder().put(put(membership)).build());
        let started = std::time::Instant::now();
        let result = Box::pin(request.send()).await;
        trace_request("TransactWriteItems", result.is_ok(), started);
        // Each of the three items bills 2 units per KB in a transaction, written or not.
        let units = 2.0 * (write_units(item_bytes(&item_copy)) + 2.0);
        self.meter_units(units, result.is_err());
        match result {
            Ok(_) => Ok(Entered::Entered),
            Err(err) => match err.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
                    if cancelled
                        .cancellation_reasons()
                        .first()
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed") =>
                {
                    Err(StoreError::ConnectionGone {
                        connection_id: new.connection_id.to_owned(),
                    })
                }
                _ => Err(dynamo(err)),
            },
        }
    }

    /// Replaces a member's data; `false` (nothing written) when it is not a member.
    pub async fn update_member(&self, new: &NewMember<'_>) -> Result<bool, StoreError> {
        let request = self
            .client
            .put_item()
            .set_item(Some(serde_dynamo::to_item(self.member_item(new))?))
            .condition_expression("attribute_exists(pk)");
        Ok(matches!(
            self.put_or_find(request).await?,
            super::attributes::Conditional::Written(())
        ))
    }

    /// Removes a connection from a channel's members (nothing to do when it is not one).
    pub async fn leave(&self, channel: &str, connection_id: &str) -> Result<(), StoreError> {
        self.write_batch(vec![
            delete_request(&members_pk(channel), connection_id),
            delete_request(&connection_pk(connection_id), &membership_sk(channel)),
        ])
        .await
    }

    /// Up to `limit` members after member id `after`, leaving out those whose connection
    /// has expired.
    pub async fn members_page(
        &self,
        channel: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage, StoreError> {
        let version = self.presence_number(channel, "v").await?;
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", s(members_pk(channel)))
            .limit(limit as i32)
            .consistent_read(true);
        if let Some(after) = after {
            request = request
                .exclusive_start_key("pk", s(members_pk(channel)))
                .exclusive_start_key("sk", s(after));
        }
        let out = self.send(request).await.map_err(dynamo)?;
        let now = clock::now_secs();
        let mut members = Vec::new();
        let mut expired = Vec::new();
        for item in out.items() {
            let item: MemberItem = serde_dynamo::from_item(item.clone())?;
            if item.exp <= now {
                expired.push(item);
                continue;
            }
            let data = item.data.and_then(|d| Payload::from_json(d).ok());
            members.push(Member {
                member: item.sk,
                sub: item.sub,
                data,
                at: item.at,
            });
        }
        // A member listed past its connection's expiry vanished without `$disconnect`:
        // removed now, so that watchers and the count see it leave.
        self.remove_expired(&expired).await?;
        let next = out
            .last_evaluated_key
            .as_ref()
            .and_then(|key| text(key, "sk"))
            .map(str::to_owned);
        Ok(MemberPage {
            version,
            members,
            next,
        })
    }

    /// Removes the channel's members whose connection has expired (reading the members'
    /// partition: done only when the channel is full).
    async fn sweep_expired(&self, channel: &str) -> Result<(), StoreError> {
        let mut start = None;
        loop {
            let out = self
                .send(
                    self.client
                        .query()
                        .table_name(&self.table)
                        .key_condition_expression("pk = :pk")
                        .filter_expression("#exp <= :now")
                        .expression_attribute_names("#exp", "exp")
                        .expression_attribute_values(":pk", s(members_pk(channel)))
                        .expression_attribute_values(":now", n(clock::now_secs()))
                        .set_exclusive_start_key(start),
                )
                .await
                .map_err(dynamo)?;
            let expired = out
                .items()
                .iter()
                .map(|item| serde_dynamo::from_item(item.clone()))
                .collect::<Result<Vec<MemberItem>, _>>()?;
            self.remove_expired(&expired).await?;
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(()),
            }
        }
    }

    /// Deletes expired members, each only if it is still the item read (not entered again).
    async fn remove_expired(&self, expired: &[MemberItem]) -> Result<(), StoreError> {
        for item in expired {
            let request = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(&item.pk))
                .key("sk", s(&item.sk))
                .condition_expression("#exp = :exp")
                .expression_attribute_names("#exp", "exp")
                .expression_attribute_values(":exp", n(item.exp));
            super::attributes::conditional(self.send(request).await)?;
        }
        Ok(())
    }

    fn member_item(&self, new: &NewMember<'_>) -> MemberItem {
        let exp = self.connection_expiry(new.connected_at);
        MemberItem {
            pk: members_pk(new.channel),
            sk: new.connection_id.to_owned(),
            sub: new.sub.to_owned(),
            data: new.data.map(str::to_owned),
            at: new.at,
            exp,
            ttl: exp,
        }
    }

    async fn is_member(&self, channel: &str, connection_id: &str) -> Result<bool, StoreError> {
        let out = self
            .send(
                self.read_item(members_pk(channel), connection_id)
                    .projection_expression("pk"),
            )
            .await
            .map_err(dynamo)?;
        Ok(out.item.is_some())
    }

    /// A number of the presence document (`n`, the members as of its last fold; `v`, its
    /// version); 0 before its first fold.
    async fn presence_number(&self, channel: &str, name: &str) -> Result<u64, StoreError> {
        let out = self
            .send(
                self.read_item(state_pk(channel), PRESENCE_SK)
                    .projection_expression(name),
            )
            .await
            .map_err(dynamo)?;
        Ok(out.item.as_ref().and_then(|i| number(i, name)).unwrap_or(0))
    }
}
