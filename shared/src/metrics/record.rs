//! What is counted: one function per metric, so names and labels are written once. The
//! names and units are CloudWatch's (the template's dashboard and alarms use them);
//! docs/operations.md lists them with what moves each.

use crate::protocol::ErrorCode;

/// Connections stored by `$connect`.
pub const CONNECTIONS_OPENED: &str = "ConnectionsOpened";
/// `$disconnect` invocations.
pub const CONNECTIONS_CLOSED: &str = "ConnectionsClosed";
/// Handshakes the authorizer refused, by `reason`.
pub const HANDSHAKES_REFUSED: &str = "HandshakesRefused";
/// Frames the message function handled, by `action` and `outcome`.
pub const REQUESTS: &str = "Requests";
/// Publishes answered, by `outcome`.
pub const PUBLISHES: &str = "Publishes";
/// State updates answered (or refused at the fold), by `outcome`.
pub const STATE_UPDATES: &str = "StateUpdates";
/// State channels' patch and snapshot frames posted.
pub const STATE_PATCHES: &str = "StatePatches";
/// Presence patch frames posted.
pub const PRESENCE_PATCHES: &str = "PresencePatches";
/// Deltas delivered to connections.
pub const DELIVERIES: &str = "Deliveries";
/// Delta frames posted (fewer than deliveries when subscriptions coalesce).
pub const FRAMES: &str = "Frames";
/// Management API posts retried.
pub const POSTS_RETRIED: &str = "PostsRetried";
/// Management API posts that failed after their retries (a 410 is not a failure).
pub const POSTS_FAILED: &str = "PostsFailed";
/// Connections removed because the Management API answered 410 Gone.
pub const CONNECTIONS_PRUNED: &str = "ConnectionsPruned";
/// Per stream batch: now minus the oldest record's creation, in milliseconds.
pub const FANOUT_LAG: &str = "FanoutLag";
/// Per stream batch: its records.
pub const BATCH_SIZE: &str = "BatchSize";
/// HTTP API requests answered, by `route` and `status`.
pub const HTTP_REQUESTS: &str = "HttpRequests";

/// Every counter (the rest are distributions).
pub const COUNTERS: [&str; 14] = [
    CONNECTIONS_OPENED,
    CONNECTIONS_CLOSED,
    HANDSHAKES_REFUSED,
    REQUESTS,
    PUBLISHES,
    STATE_UPDATES,
    STATE_PATCHES,
    PRESENCE_PATCHES,
    DELIVERIES,
    FRAMES,
    POSTS_RETRIED,
    POSTS_FAILED,
    CONNECTIONS_PRUNED,
    HTTP_REQUESTS,
];

/// Why the authorizer refused a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token (401).
    MissingToken,
    /// A token that is not valid or not current (401).
    InvalidToken,
    /// A genuine token whose claims are refused (403).
    Denied,
}

impl Refusal {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::Denied => "denied",
        }
    }
}

/// How a publish was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored with a new seq.
    Ok,
    /// Already stored: acknowledged again.
    Duplicate,
    /// Handed to the sequencer, which answers it (and counts it).
    Queued,
    /// Refused with an error code.
    Refused(ErrorCode),
}

impl PublishOutcome {
    /// The `outcome` label: `ok`, `duplicate`, `queued`, `conflict`, `rate_limited`,
    /// `in_flight`, `internal`, or `refused` for any other refusal.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::Queued => "queued",
            Self::Refused(
                code @ (ErrorCode::Conflict
                | ErrorCode::RateLimited
                | ErrorCode::InFlight
                | ErrorCode::Internal),
            ) => code.as_str(),
            Self::Refused(_) => "refused",
        }
    }
}

/// How a state update was answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// Stored; the sequencer folds it.
    Ok,
    /// Already stored: answered again.
    Duplicate,
    /// Refused before anything was written (`internal` kept apart).
    Refused(ErrorCode),
    /// Refused when folded: the document could not take it.
    NotApplied,
}

impl UpdateOutcome {
    /// The `outcome` label: `ok`, `duplicate`, `not_applied`, `internal`, `refused`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Duplicate => "duplicate",
            Self::NotApplied => "not_applied",
            Self::Refused(ErrorCode::Internal) => "internal",
            Self::Refused(_) => "refused",
        }
    }
}

/// The `outcome` label of an action: `ok` or its error code.
pub fn outcome_of(result: Result<(), ErrorCode>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(code) => code.as_str(),
    }
}

/// Counts `n` of counter `name` (no label).
fn add(name: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!(name).increment(n as u64);
    }
}

/// `$connect` stored a connection.
pub fn connection_opened() {
    add(CONNECTIONS_OPENED, 1);
}

/// `$disconnect` ran.
pub fn connection_closed() {
    add(CONNECTIONS_CLOSED, 1);
}

/// The authorizer refused a handshake.
pub fn handshake_refused(reason: Refusal) {
    metrics::counter!(HANDSHAKES_REFUSED, "reason" => reason.as_str()).increment(1);
}

/// The message function handled a frame (`action` is `unparsed` for a bad frame).
pub fn request(action: &'static str, outcome: &'static str) {
    metrics::counter!(REQUESTS, "action" => action, "outcome" => outcome).increment(1);
}

/// A publish was answered (or queued).
pub fn publish(outcome: PublishOutcome) {
    publishes(outcome, 1);
}

/// `n` publishes were answered the same way (a sequencer batch).
pub fn publishes(outcome: PublishOutcome, n: usize) {
    if n > 0 {
        metrics::counter!(PUBLISHES, "outcome" => outcome.as_str()).increment(n as u64);
    }
}

/// A state update was answered (or refused at the fold).
pub fn state_update(outcome: UpdateOutcome) {
    metrics::counter!(STATE_UPDATES, "outcome" => outcome.as_str()).increment(1);
}

/// State patch frames posted.
pub fn state_patches(n: usize) {
    add(STATE_PATCHES, n);
}

/// Presence patch frames posted.
pub fn presence_patches(n: usize) {
    add(PRESENCE_PATCHES, n);
}

/// Deltas delivered, in `frames` frames.
pub fn deliveries(delivered: usize, frames: usize) {
    add(DELIVERIES, delivered);
    add(FRAMES, frames);
}

/// A Management API post is retried.
pub fn post_retried() {
    add(POSTS_RETRIED, 1);
}

/// A Management API post failed after its retries.
pub fn post_failed() {
    add(POSTS_FAILED, 1);
}

/// Connections removed after a 410 Gone.
pub fn connections_pruned(n: usize) {
    add(CONNECTIONS_PRUNED, n);
}

/// A stream batch of `records`, whose oldest record was created `lag_ms` ago (`None`:
/// no record said when).
pub fn stream_batch(records: usize, lag_ms: Option<u64>) {
    metrics::histogram!(BATCH_SIZE).record(records as f64);
    if let Some(lag) = lag_ms {
        metrics::histogram!(FANOUT_LAG).record(lag as f64);
    }
}

/// The HTTP API answered `route` (a path template, never a channel) with `status`.
pub fn http_request(route: &'static str, status: u16) {
    metrics::counter!(HTTP_REQUESTS, "route" => route, "status" => status.to_string()).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_labels_are_the_protocols_codes_and_few() {
        assert_eq!(PublishOutcome::Ok.as_str(), "ok");
        assert_eq!(
            PublishOutcome::Refused(ErrorCode::RateLimited).as_str(),
            "rate_limited"
        );
        assert_eq!(
            PublishOutcome::Refused(ErrorCode::Conflict).as_str(),
            "conflict"
        );
        assert_eq!(
            PublishOutcome::Refused(ErrorCode::Forbidden).as_str(),
            "refused"
        );
        assert_eq!(
            UpdateOutcome::Refused(ErrorCode::Internal).as_str(),
            "internal"
        );
        assert_eq!(outcome_of(Err(ErrorCode::TooLarge)), "too_large");
        assert_eq!(outcome_of(Ok(())), "ok");
    }
}
