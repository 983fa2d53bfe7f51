//! `race`: today's publish (`deltacast::store`'s module docs), compacted for the bench.
//! Read the publisher's claim, read the head (epoch item, newest delta), write the claim
//! at head+1, write the delta at head+1 with `attribute_not_exists`; a lost race re-reads
//! the head and moves the claim. Every publisher on the channel contends for the same
//! next seq, so the more publishers, the more lost races per publish.

use deltacast::store::items::{EPOCH_SK, claim_sk};

use super::Outcome;
use super::dynamo::{Ctx, n};

/// The store's attempt limit (`MAX_PUBLISH_ATTEMPTS`).
const MAX_ATTEMPTS: u32 = 32;

/// One publish of `from`'s message `id`.
pub async fn publish(ctx: &Ctx, from: &str, id: &str, data: &str) -> Result<Outcome, String> {
    // Who else is working on this id? (Nobody: ids are fresh; the read is what it costs.)
    ctx.get(claim_sk(from, id)).await?;
    let mut lease: Option<u64> = None;
    for _ in 0..MAX_ATTEMPTS {
        ctx.get(EPOCH_SK.to_owned()).await?;
        let seq = ctx.newest_seq().await? + 1;
        let claim = ctx.claim(from, id, Some(seq), None);
        let new_lease = super::dynamo::number(&claim, "lease");
        let refused = match lease {
            None => ctx.put_if(claim, "attribute_not_exists(pk)", None).await?,
            Some(previous) => {
                ctx.put_if(claim, "lease = :previous", Some((":previous", n(previous))))
                    .await?
            }
        };
        if refused.is_some() {
            return Err(format!(
                "{from}/{id}: the claim was taken by another attempt"
            ));
        }
        lease = new_lease;
        if ctx.put_delta(seq, from, id, data).await? {
            return Ok(Outcome::Stored);
        }
        ctx.meter.retry();
    }
    Ok(Outcome::GaveUp)
}
