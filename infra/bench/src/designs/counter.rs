//! `counter`: an atomic head counter. `UpdateItem ADD seq :1` hands each publish its own
//! seq in one round trip (no races, no retries), then the claim and the delta are written
//! at that seq. The crash repair a real implementation needs (a tombstone for a seq whose
//! publisher died between the counter and the delta, so no reader waits for it) is left
//! out: it costs nothing on the path measured here.

use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, ReturnValue};

use super::Outcome;
use super::dynamo::{Ctx, n, number, sdk};

/// Sort key of the channel's counter item.
const COUNTER_SK: &str = "head";

/// One publish of `from`'s message `id`.
pub async fn publish(ctx: &Ctx, from: &str, id: &str, data: &str) -> Result<Outcome, String> {
    ctx.round_trip().await;
    let out = ctx
        .client
        .update_item()
        .table_name(&ctx.table)
        .set_key(Some(ctx.key(COUNTER_SK.to_owned())))
        .update_expression("ADD seq :one")
        .expression_attribute_values(":one", n(1))
        .return_values(ReturnValue::UpdatedNew)
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| format!("counter: {}", sdk(e)))?;
    ctx.meter.record(out.consumed_capacity(), true);
    let seq = out
        .attributes()
        .and_then(|a| number(a, "seq"))
        .ok_or("counter: no seq returned")?;
    let claim = ctx.claim(from, id, Some(seq), None);
    if ctx
        .put_if(claim, "attribute_not_exists(pk)", None)
        .await?
        .is_some()
    {
        return Err(format!("{from}/{id}: the claim exists"));
    }
    if !ctx.put_delta(seq, from, id, data).await? {
        return Err(format!(
            "seq {seq} taken although the counter handed it out once"
        ));
    }
    Ok(Outcome::Stored)
}
