//! Telling a connection once that its token has expired. The fan-out skips subscriptions
//! whose token has expired and sends the connection one `token_expired` error instead of
//! its deltas. Every later delta on any of its channels, in any invocation on any
//! instance, finds the same expired subscription, so "once" is a claim on the connection's
//! liveness item: `xn` is set only when absent (and only while the item exists, so a
//! removed connection is not brought back), and only the caller that set it posts. A post
//! that fails releases the claim, so a later fan-out tries again.
//!
//! The SDK retries a write whose response was lost, and the retry of a claim that took
//! effect fails its own condition. The claim therefore holds a random tag, and a refused
//! claim that finds its own tag counts as made, as the subscription counter does.

use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;

use super::attributes::{Conditional, conditional, new_tag, s, text};
use super::{Store, StoreError};

/// The liveness item's attribute that marks a connection as told.
const NOTICE: &str = "xn";

impl Store {
    /// Claims the right to tell `connection_id` that its token expired. Returns the
    /// claim's tag when this call made it, `None` when the connection was already told
    /// (or is being told) or is gone.
    pub async fn claim_expiry_notice(
        &self,
        connection_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let tag = new_tag();
        let request = self
            .update_liveness(connection_id)
            .update_expression("SET #xn = :tag")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(#xn)")
            .expression_attribute_names("#xn", NOTICE)
            .expression_attribute_values(":tag", s(&tag))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        Ok(match conditional(self.send(request).await)? {
            Conditional::Written(_) => Some(tag),
            // The SDK's retry of this very claim, which had taken effect.
            Conditional::Refused(Some(found)) if text(&found, NOTICE) == Some(tag.as_str()) => {
                Some(tag)
            }
            Conditional::Refused(_) => None,
        })
    }

    /// Gives back a claim made by [`Store::claim_expiry_notice`] whose notice could not be
    /// posted, so a later fan-out tells the connection; a no-op when `tag` no longer holds
    /// it (the connection is gone).
    pub async fn release_expiry_notice(
        &self,
        connection_id: &str,
        tag: &str,
    ) -> Result<(), StoreError> {
        let request = self
            .update_liveness(connection_id)
            .update_expression("REMOVE #xn")
            .condition_expression("#xn = :tag")
            .expression_attribute_names("#xn", NOTICE)
            .expression_attribute_values(":tag", s(tag));
        conditional(self.send(request).await)?;
        Ok(())
    }
}
