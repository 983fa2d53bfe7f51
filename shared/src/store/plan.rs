//! The pure part of sequencing: what becomes of each message of a batch against the
//! channel's head as the batch advances it (the next seq, or a refusal by `expectSeq`,
//! the backlog bound or the channel's bucket), the door's admission share its deltas
//! record (`admission`), and which image of a claim a batch keeps. No I/O:
//! `sequence.rs` reads the head, asks [`Batch::plan`] and writes.

use std::collections::HashMap;

use super::admission::{BEHIND_MS, Load, next_share};
use super::history::Head;
use super::inbox::{IN_FLIGHT_RETRY_MS, MAX_BACKLOG, Published};
use super::items::InboxItem;
use crate::config::RateLimit;
use crate::store::Bucket;

/// What became of one inbox message.
#[derive(Clone, Debug, PartialEq)]
pub enum Sequenced {
    /// Stored (now, or before: `duplicate`).
    Published(Published),
    /// Its `expectSeq` was not the head; the head.
    Conflict(Head),
    /// The channel is over its limit, or too far behind; retry after this many ms.
    RateLimited {
        /// Milliseconds.
        retry_after_ms: u64,
    },
}

/// What becomes of one message of a batch, against the head as the batch advances it.
#[derive(Debug, PartialEq)]
pub(super) enum Step {
    /// Stored at `seq`, the channel's bucket at `tat` after it.
    Write { seq: u64, tat: Option<u64> },
    /// Refused.
    Refuse(Sequenced),
}

impl Step {
    /// Whether it stores a delta.
    pub(super) fn writes(&self) -> bool {
        matches!(self, Step::Write { .. })
    }
}

/// The channel as a batch finds it.
pub(super) struct Batch<'a> {
    /// The live epoch, or the one the batch starts.
    pub(super) epoch: &'a str,
    /// Whether the batch starts `epoch`.
    pub(super) fresh: bool,
    /// The head seq in `epoch`.
    pub(super) head: u64,
    /// The channel's bucket, from the newest delta.
    pub(super) tat: Option<u64>,
    /// The door's admission share, per mille, from the newest delta (`admission`).
    pub(super) admit: Option<u16>,
    /// The channel's limit, unless off.
    pub(super) limit: Option<RateLimit>,
    /// How long a claim's lease is, ms: a message was claimed that long before its
    /// lease ends.
    pub(super) lease_ms: u64,
    /// Now, Unix ms.
    pub(super) now: u64,
}

/// A batch's plan.
#[derive(Debug)]
pub(super) struct Plan {
    /// Each message's step, in order.
    pub(super) steps: Vec<(InboxItem, Step)>,
    /// The admission share its deltas record for the door (`admission`).
    pub(super) admit: Option<u16>,
}

impl Batch<'_> {
    /// Each message's step, in order (a conflict, a refusal by the backlog bound or the
    /// limit, or the next seq), and the admission share that follows, from the limit's
    /// refusals and how long the messages waited.
    pub(super) fn plan(&self, pending: Vec<InboxItem>) -> Plan {
        let mut head = self.head;
        let mut bucket = Bucket::from_stored(self.tat);
        let mut plan = Vec::with_capacity(pending.len());
        let mut refused_by_limit = 0;
        let waited = |item: &InboxItem| {
            let claimed = item.lease.saturating_sub(self.lease_ms);
            self.now.saturating_sub(claimed)
        };
        let behind = pending.iter().map(waited).min().unwrap_or(0) > BEHIND_MS;
        for item in pending {
            let after = if self.fresh {
                0
            } else {
                effective_after(&item, self.epoch)
            };
            let step = if item.exp.is_some_and(|exp| exp != head) {
                Step::Refuse(Sequenced::Conflict(Head {
                    epoch: (!self.fresh || head > 0).then(|| self.epoch.to_owned()),
                    seq: head,
                }))
            } else if head + 1 - after.min(head) > MAX_BACKLOG {
                Step::Refuse(Sequenced::RateLimited {
                    retry_after_ms: 2 * IN_FLIGHT_RETRY_MS,
                })
            } else if let Some(wait) = self.limit.and_then(|l| bucket.wait_ms(l, self.now, 1.0)) {
                refused_by_limit += 1;
                Step::Refuse(Sequenced::RateLimited {
                    retry_after_ms: wait,
                })
            } else {
                if let Some(limit) = self.limit {
                    bucket = bucket.charge(limit, self.now, 1.0);
                }
                head += 1;
                Step::Write {
                    seq: head,
                    tat: bucket.stored(),
                }
            };
            plan.push((item, step));
        }
        let written = plan.iter().filter(|(_, step)| step.writes()).count();
        let load = Load {
            admitted: written,
            refused: refused_by_limit,
            behind,
        };
        let admit = self.limit.and_then(|_| next_share(self.admit, load));
        Plan { steps: plan, admit }
    }
}

/// The head `item` recorded, as a seq of `epoch`: 0 when it recorded another epoch (or
/// none), since the channel started `epoch` after it was written.
pub(super) fn effective_after(item: &InboxItem, epoch: &str) -> u64 {
    if item.ep.as_deref() == Some(epoch) {
        item.after
    } else {
        0
    }
}

/// One entry per claim, in the order of first appearance, with its latest image (a claim
/// taken over names the connection to ack now).
pub(super) fn latest_per_claim(inbox: Vec<InboxItem>) -> Vec<InboxItem> {
    let mut order: Vec<String> = Vec::new();
    let mut latest: HashMap<String, InboxItem> = HashMap::new();
    for item in inbox {
        if !latest.contains_key(&item.sk) {
            order.push(item.sk.clone());
        }
        latest.insert(item.sk.clone(), item);
    }
    order
        .into_iter()
        .filter_map(|key| latest.remove(&key))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbox(sk: &str, conn: &str, ep: Option<&str>, after: u64) -> InboxItem {
        InboxItem {
            pk: "q#c".into(),
            sk: sk.into(),
            id: sk.into(),
            from: "alice".into(),
            data: "1".into(),
            conn: conn.into(),
            ep: ep.map(str::to_owned),
            after,
            exp: None,
            // Claimed 100 ms before the batch's `now` (a 15 s lease).
            lease: 1_000_000 - 100 + 15_000,
            ttl: 1,
            q: Some(1),
        }
    }

    #[test]
    fn a_claim_seen_twice_keeps_its_place_and_its_latest_connection() {
        let batch = vec![
            inbox("a", "c1", None, 0),
            inbox("b", "c1", None, 0),
            inbox("a", "c2", None, 0),
        ];
        let kept = latest_per_claim(batch);
        let keys: Vec<(&str, &str)> = kept
            .iter()
            .map(|i| (i.sk.as_str(), i.conn.as_str()))
            .collect();
        assert_eq!(keys, [("a", "c2"), ("b", "c1")]);
    }

    fn batch(head: u64, limit: Option<RateLimit>) -> Batch<'static> {
        Batch {
            epoch: "e1",
            fresh: false,
            head,
            tat: None,
            admit: None,
            limit,
            lease_ms: 15_000,
            now: 1_000_000,
        }
    }

    fn steps(plan: Plan) -> Vec<Step> {
        plan.steps.into_iter().map(|(_, step)| step).collect()
    }

    #[test]
    fn a_batch_takes_the_next_seqs_in_order() {
        let items = (0..3)
            .map(|n| inbox(&format!("m{n}"), "c", Some("e1"), 5))
            .collect();
        assert_eq!(
            steps(batch(5, None).plan(items)),
            [6, 7, 8].map(|seq| Step::Write { seq, tat: None })
        );
    }

    #[test]
    fn expect_seq_is_checked_against_the_head_as_the_batch_advances_it() {
        let mut guarded = inbox("b", "c", Some("e1"), 5);
        guarded.exp = Some(6);
        let mut stale = inbox("c", "c", Some("e1"), 5);
        stale.exp = Some(6);
        let plan = batch(5, None).plan(vec![inbox("a", "c", Some("e1"), 5), guarded, stale]);
        let head = |seq| {
            Step::Refuse(Sequenced::Conflict(Head {
                epoch: Some("e1".into()),
                seq,
            }))
        };
        assert_eq!(
            steps(plan),
            [
                Step::Write { seq: 6, tat: None },
                Step::Write { seq: 7, tat: None },
                head(7)
            ]
        );
    }

    #[test]
    fn a_message_too_far_behind_its_recorded_head_is_refused() {
        let head = 2 * MAX_BACKLOG;
        let near = inbox("a", "c", Some("e1"), head - MAX_BACKLOG + 1);
        let far = inbox("b", "c", Some("e1"), head - MAX_BACKLOG + 1);
        let other_epoch = inbox("c", "c", Some("e0"), head);
        let plan = batch(head, None).plan(vec![near, far, other_epoch]);
        assert_eq!(
            steps(plan),
            [
                Step::Write {
                    seq: head + 1,
                    tat: None
                },
                Step::Refuse(Sequenced::RateLimited {
                    retry_after_ms: 2 * IN_FLIGHT_RETRY_MS
                }),
                Step::Refuse(Sequenced::RateLimited {
                    retry_after_ms: 2 * IN_FLIGHT_RETRY_MS
                }),
            ],
            "seq − after may be MAX_BACKLOG, no more; another epoch's `after` counts as 0"
        );
    }

    #[test]
    fn the_channel_bucket_admits_its_burst_then_says_when_to_retry() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 2.0,
        };
        let items = (0..3)
            .map(|n| inbox(&format!("m{n}"), "c", Some("e1"), 0))
            .collect();
        let plan = steps(batch(0, Some(limit)).plan(items));
        // 100 ms per token: the bucket is full again 100 ms after each publish.
        assert_eq!(
            plan,
            [
                Step::Write {
                    seq: 1,
                    tat: Some(1_000_100)
                },
                Step::Write {
                    seq: 2,
                    tat: Some(1_000_200)
                },
                Step::Refuse(Sequenced::RateLimited {
                    retry_after_ms: 100
                }),
            ]
        );
        // A batch that finds the bucket as the newest delta left it goes on from there.
        let later = Batch {
            tat: Some(1_000_200),
            now: 1_000_150,
            ..batch(2, Some(limit))
        };
        let plan = steps(later.plan(vec![inbox("m3", "c", Some("e1"), 2)]));
        assert_eq!(
            plan,
            [Step::Write {
                seq: 3,
                tat: Some(1_000_300)
            }]
        );
    }

    #[test]
    fn a_batch_the_limit_refused_some_of_tells_the_door_its_share() {
        let limit = RateLimit {
            per_second: 10.0,
            burst: 2.0,
        };
        let items = || {
            (0..3)
                .map(|n| inbox(&format!("m{n}"), "c", Some("e1"), 0))
                .collect::<Vec<_>>()
        };
        // 2 of 3 admitted: the door lets through 2/3 of what it did, with headroom.
        assert_eq!(batch(0, Some(limit)).plan(items()).admit, Some(800));
        let shared = Batch {
            admit: Some(500),
            ..batch(0, Some(limit))
        };
        assert_eq!(shared.plan(items()).admit, Some(400));
        // Without a limit, or within it, the door lets everything through.
        assert_eq!(batch(0, None).plan(items()).admit, None);
        let roomy = RateLimit {
            per_second: 10.0,
            burst: 5.0,
        };
        assert_eq!(batch(0, Some(roomy)).plan(items()).admit, None);
    }

    #[test]
    fn a_batch_whose_youngest_message_waited_too_long_halves_the_share_and_stores_all() {
        let limit = RateLimit {
            per_second: 1000.0,
            burst: 100.0,
        };
        let claimed_ago = |sk: &str, ms: u64| {
            let mut item = inbox(sk, "c", Some("e1"), 0);
            item.lease = 1_000_000 - ms + 15_000;
            item
        };
        // A standing queue: even the youngest message waited over BEHIND_MS.
        let queued = batch(0, Some(limit)).plan(vec![
            claimed_ago("a", 3 * BEHIND_MS),
            claimed_ago("b", BEHIND_MS + 1),
        ]);
        assert!(queued.steps.iter().all(|(_, step)| step.writes()));
        assert_eq!(queued.admit, Some(500));
        // A burst: old messages, but the youngest is fresh; the share stays all.
        let burst =
            batch(0, Some(limit)).plan(vec![claimed_ago("a", 3 * BEHIND_MS), claimed_ago("b", 10)]);
        assert_eq!(burst.admit, None);
        // Without a limit the door lets everything through, behind or not.
        let unlimited = batch(0, None).plan(vec![claimed_ago("a", 3 * BEHIND_MS)]);
        assert_eq!(unlimited.admit, None);
    }

    #[test]
    fn after_counts_only_in_the_epoch_it_was_recorded_in() {
        assert_eq!(effective_after(&inbox("a", "c", Some("e1"), 7), "e1"), 7);
        assert_eq!(effective_after(&inbox("a", "c", Some("e1"), 7), "e2"), 0);
        assert_eq!(effective_after(&inbox("a", "c", None, 7), "e2"), 0);
    }
}
