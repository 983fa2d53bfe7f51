//! The counters each client keeps while it runs (errors by kind, publish failures by
//! code, deliveries, duplicates), summed into the report at the end. Plain numbers per
//! client, so the hot path takes no lock.

/// Error and event counters a client keeps; summed into the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    GatewayInternalError,
    UnparseableFrame,
    UnknownFrame,
    SubscribeTimeout,
    SubscribeError,
    HistoryTimeout,
    HistoryError,
    OtherError,
    EpochChanged,
    StrayReply,
    HandshakeServerError,
    HandshakeUnauthorized,
    HandshakeOtherStatus,
    HandshakeIo,
    HandshakeTimeout,
    SubscribeRefused,
    PublishRefused,
}

pub(crate) const COUNTERS: [(Counter, &str); 17] = [
    (
        Counter::GatewayInternalError,
        "internal_server_error_frames",
    ),
    (Counter::UnparseableFrame, "unparseable_frames"),
    (Counter::UnknownFrame, "unknown_frames"),
    (Counter::SubscribeTimeout, "subscribe_timeouts"),
    (Counter::SubscribeError, "subscribe_internal_errors"),
    (Counter::HistoryTimeout, "history_timeouts"),
    (Counter::HistoryError, "history_internal_errors"),
    (Counter::OtherError, "other_error_frames"),
    (Counter::EpochChanged, "epoch_changes"),
    (Counter::StrayReply, "stray_replies"),
    (Counter::HandshakeServerError, "handshake_5xx"),
    (Counter::HandshakeUnauthorized, "handshake_401_403"),
    (Counter::HandshakeOtherStatus, "handshake_other_status"),
    (Counter::HandshakeIo, "handshake_io_errors"),
    (Counter::HandshakeTimeout, "handshake_timeouts"),
    (Counter::SubscribeRefused, "subscribe_refused"),
    (Counter::PublishRefused, "publish_refused"),
];

/// The pseudo-code under which publish attempts that got no answer within the request
/// timeout are counted (reported apart from the server's answers).
pub(crate) const TIMEOUT: &str = "timeout";

/// Publish error codes counted separately (the server's, [`TIMEOUT`], and `other` for any
/// code not listed).
pub(crate) const PUBLISH_CODES: [&str; 9] = [
    "internal",
    "rate_limited",
    "in_flight",
    TIMEOUT,
    "bad_request",
    "forbidden",
    "too_large",
    "conflict",
    "other",
];

#[derive(Clone, Debug, Default)]
pub(crate) struct ClientStats {
    pub(crate) counters: [u64; COUNTERS.len()],
    pub(crate) publish_errors: [u64; PUBLISH_CODES.len()],
    pub(crate) publishes_sent: u64,
    pub(crate) publish_attempts: u64,
    pub(crate) publishes_acked: u64,
    /// Acks of a publish already acked (a resent publish acked again).
    pub(crate) duplicate_acks: u64,
    /// `delta` and `deltas` frames received on a live subscription (not history replies).
    pub(crate) frames_received: u64,
    /// Deltas those frames carried.
    pub(crate) deltas_pushed: u64,
    pub(crate) deliveries: u64,
    pub(crate) deliveries_publishing: u64,
    pub(crate) history_deltas: u64,
    pub(crate) history_requests: u64,
    pub(crate) duplicates_received: u64,
    pub(crate) duplicates_after_dedupe: u64,
    pub(crate) out_of_order_applied: u64,
    pub(crate) not_recovered: u64,
    pub(crate) content_mismatches: u64,
    pub(crate) reconnects: u64,
    pub(crate) unexpected_disconnects: u64,
    pub(crate) catch_up_fallbacks: u64,
    /// Seqs applied, by the path by which each first came: push, catch-up, history.
    pub(crate) applied_pushed: u64,
    pub(crate) applied_catch_up: u64,
    pub(crate) applied_history: u64,
    /// Owed seqs first recovered by `history` whose push came later.
    pub(crate) late_pushes: u64,
    /// Owed seqs recovered by `history` and never pushed while the connection stayed open.
    pub(crate) missed_pushes: u64,
    /// Per resubscribe: the `subscribed` head minus the last applied seq.
    pub(crate) missed_while_away: u64,
    /// Pushed frames of a seq already received (not a late push after `history`).
    pub(crate) duplicate_pushes: u64,
    /// Connections opened (1 for a client that stayed connected).
    pub(crate) connections: u64,
}

impl ClientStats {
    pub(crate) fn bump(&mut self, counter: Counter) {
        // COUNTERS lists the variants in declaration order (a unit test checks).
        self.counters[counter as usize] += 1;
    }

    pub(crate) fn publish_error(&mut self, code: &str) {
        let index = PUBLISH_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(PUBLISH_CODES.len() - 1);
        self.publish_errors[index] += 1;
    }

    pub(crate) fn absorb(&mut self, other: &ClientStats) {
        for (a, b) in self.counters.iter_mut().zip(other.counters) {
            *a += b;
        }
        for (a, b) in self.publish_errors.iter_mut().zip(other.publish_errors) {
            *a += b;
        }
        self.publishes_sent += other.publishes_sent;
        self.publish_attempts += other.publish_attempts;
        self.publishes_acked += other.publishes_acked;
        self.duplicate_acks += other.duplicate_acks;
        self.frames_received += other.frames_received;
        self.deltas_pushed += other.deltas_pushed;
        self.deliveries += other.deliveries;
        self.deliveries_publishing += other.deliveries_publishing;
        self.history_deltas += other.history_deltas;
        self.history_requests += other.history_requests;
        self.duplicates_received += other.duplicates_received;
        self.duplicates_after_dedupe += other.duplicates_after_dedupe;
        self.out_of_order_applied += other.out_of_order_applied;
        self.not_recovered += other.not_recovered;
        self.content_mismatches += other.content_mismatches;
        self.reconnects += other.reconnects;
        self.unexpected_disconnects += other.unexpected_disconnects;
        self.catch_up_fallbacks += other.catch_up_fallbacks;
        self.applied_pushed += other.applied_pushed;
        self.applied_catch_up += other.applied_catch_up;
        self.applied_history += other.applied_history;
        self.late_pushes += other.late_pushes;
        self.missed_pushes += other.missed_pushes;
        self.missed_while_away += other.missed_while_away;
        self.duplicate_pushes += other.duplicate_pushes;
        self.connections += other.connections;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_listed_in_order() {
        for (index, (counter, _)) in COUNTERS.iter().enumerate() {
            assert_eq!(*counter as usize, index);
        }
    }

    #[test]
    fn publish_answers_are_counted_by_code() {
        let mut stats = ClientStats::default();
        for code in [
            "rate_limited",
            "in_flight",
            "in_flight",
            TIMEOUT,
            "brand_new",
        ] {
            stats.publish_error(code);
        }
        let count = |code: &str| {
            stats.publish_errors[PUBLISH_CODES.iter().position(|c| *c == code).unwrap()]
        };
        assert_eq!(count("rate_limited"), 1);
        assert_eq!(count("in_flight"), 2);
        assert_eq!(count(TIMEOUT), 1);
        assert_eq!(count("other"), 1, "an unknown code is counted, as other");
        assert_eq!(count("internal"), 0);
    }
}
