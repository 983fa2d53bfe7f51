//! What became of a publish handed to the sequencer, for a publisher with no connection
//! to be acked on (an HTTP request, which waits for its answer): read without writing
//! anything, so asking again costs reads only.

use super::attributes::dynamo;
use super::inbox::Published;
use super::items::{InboxItem, claim_sk, inbox_pk};
use super::{Store, StoreError};
use crate::clock;

/// Where a publish stands.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored: its seq and epoch (`duplicate` is set, as for any ack found again).
    Published(Published),
    /// Claimed and not stored yet: the sequencer has it, or its writer is storing it.
    Pending,
    /// No claim: the sequencer refused the message (`conflict` or `rate_limited`) and
    /// deleted its claim, or the claim expired. Nothing of it is stored.
    Refused,
}

impl Store {
    /// Where the publish of `id` by `from` on `channel` stands: one consistent read of its
    /// claim, then, while it is claimed, the bounded search for its delta that a publish
    /// of the same id makes ([`Store::enqueue`]).
    pub async fn publish_outcome(
        &self,
        channel: &str,
        from: &str,
        id: &str,
    ) -> Result<PublishOutcome, StoreError> {
        let claim = self
            .send(self.read_item(inbox_pk(channel), claim_sk(from, id)))
            .await
            .map_err(dynamo)?
            .item
            .map(serde_dynamo::from_item::<_, InboxItem>)
            .transpose()?
            .filter(|claim| claim.ttl >= clock::now_secs());
        let Some(claim) = claim else {
            return Ok(PublishOutcome::Refused);
        };
        let state = self.channel_state(channel).await?;
        Ok(match self.find_published(channel, &claim, &state).await? {
            Some(published) => PublishOutcome::Published(published),
            None => PublishOutcome::Pending,
        })
    }
}
