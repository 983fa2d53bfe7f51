//! One client's view of its channels and publishes: subscription state, the buffer of
//! deltas not yet applied, gap tracking, the window of unacknowledged publishes, and what
//! the client hands back when it stops.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::stats::ClientStats;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Subscription {
    /// Not asked on this connection yet.
    Idle,
    /// Asked `attempt` times; resend at the deadline.
    Pending { deadline: Instant, attempt: u32 },
    /// `subscribed` received on this connection.
    Live,
    /// Refused for good (`forbidden`, `bad_request`).
    Refused,
}

/// One channel as one client sees it.
pub(crate) struct ChannelState {
    /// Index into [`Shared::channels`].
    pub(crate) table: usize,
    /// The channel's history epoch, once known.
    pub(crate) epoch: Option<String>,
    /// The seq of the first `subscribed`: the client's starting point.
    pub(crate) start: Option<u64>,
    /// Last applied seq.
    pub(crate) applied: u64,
    /// Seqs applied (must end as `applied - start`).
    pub(crate) applied_count: u64,
    /// Highest seq the client knows exists.
    pub(crate) known_head: u64,
    /// Received, not yet applied, with the path by which each first came.
    pub(crate) buffer: BTreeMap<u64, Via>,
    /// On this connection: every seq above this one is owed to the client by a push (the
    /// fan-out's, or the catch-up of a `recovered: true` resubscribe). `None` until
    /// `subscribed`.
    pub(crate) owed_after: Option<u64>,
    /// Owed seqs that came first from `history` on this connection, whose push has not
    /// come (yet): a late push removes them, the rest are `missed_pushes`.
    pub(crate) awaiting_push: BTreeSet<u64>,
    /// Where its subscription stands on this connection.
    pub(crate) subscription: Subscription,
    /// An outstanding `history` request: resend at the deadline.
    pub(crate) history: Option<Instant>,
    /// How often the outstanding `history` request was sent.
    pub(crate) history_attempt: u32,
    /// Since when `applied + 1` has been missing while a later seq is known.
    pub(crate) gap_since: Option<Instant>,
    /// `history` replies in a row that did not fill the gap (each doubles the wait).
    pub(crate) gap_misses: u32,
    /// On this connection, subscribes with `since` went unanswered too often: subscribe
    /// without it and fill the gap with `history`.
    pub(crate) fallback: bool,
}

impl ChannelState {
    pub(crate) fn new(table: usize) -> Self {
        Self {
            table,
            epoch: None,
            start: None,
            applied: 0,
            applied_count: 0,
            known_head: 0,
            buffer: BTreeMap::new(),
            owed_after: None,
            awaiting_push: BTreeSet::new(),
            subscription: Subscription::Idle,
            history: None,
            history_attempt: 0,
            gap_since: None,
            gap_misses: 0,
            fallback: false,
        }
    }
}

/// An unacknowledged publish.
pub(crate) struct InFlight {
    /// This publisher's publish number.
    pub(crate) number: u64,
    pub(crate) table: usize,
    /// The frame, sent again as is on a retry.
    pub(crate) frame: String,
    /// When to send it (again).
    pub(crate) resend_at: Instant,
    /// Whether it is on the wire (so `resend_at` is its ack timeout).
    pub(crate) awaiting: bool,
    /// How often it was sent.
    pub(crate) attempts: u32,
}

pub(crate) struct Publisher {
    /// This publisher's ordinal, 0..P.
    pub(crate) ordinal: usize,
    /// Publishes it sends in all.
    pub(crate) quota: u64,
    /// The number of its next new publish.
    pub(crate) next: u64,
    /// Publishes not yet acked.
    pub(crate) in_flight: Vec<InFlight>,
    /// No sending before this (after `rate_limited`).
    pub(crate) paused_until: Option<Instant>,
    /// The next pause after `rate_limited` without `retryAfterMs`.
    pub(crate) backoff: Duration,
    /// It has sent its share (or publishing is over).
    pub(crate) done: bool,
}

/// What a client hands back at the end.
pub(crate) struct ClientOutcome {
    /// The client's index.
    pub(crate) index: usize,
    /// Its counters.
    pub(crate) stats: ClientStats,
    /// Its channels.
    pub(crate) channels: Vec<ChannelOutcome>,
    /// Whether it ever subscribed.
    pub(crate) subscribed: bool,
}

/// One channel of one client at the end.
pub(crate) struct ChannelOutcome {
    pub(crate) table: usize,
    pub(crate) start: Option<u64>,
    pub(crate) applied: u64,
    pub(crate) applied_count: u64,
    pub(crate) known_head: u64,
    pub(crate) buffered: usize,
    pub(crate) subscription: &'static str,
    pub(crate) history_pending: bool,
}

/// How a connection ended.
pub(crate) enum SessionEnd {
    Churn,
    Closed,
    Stop,
}

/// How a delta arrived (see `DeliveryPaths` in the report for the definitions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Via {
    /// A `delta` frame pushed by the fan-out.
    Push,
    /// A `delta` frame of the catch-up of a resubscribe with `since`: received before its
    /// `subscribed`, at or below the head that `subscribed` names.
    CatchUp,
    /// An entry of a `history` reply.
    History,
}
