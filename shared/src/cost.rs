//! What a request costs in rate-limit tokens. Every request pays [`REQUEST`] up front,
//! before it reads or writes anything, so a flood of any action is limited. Reads
//! (`history`, and the catch-up of a `subscribe` with `since`) are what a small frame can
//! make expensive, so they pay by what they return: up front they take a deposit, the
//! most they can cost ([`history_deposit`], [`catch_up_deposit`]; never more than a
//! bucket's burst, so a small bucket still serves reads), and once served they are
//! charged the difference to their real price ([`read`]), a refund for a small page.
//! Taking the deposit first means that concurrent reads cannot each start on a bucket
//! that holds one token.
//!
//! With the defaults (20 tokens a second, bursts of 50, per connection) a connection can
//! publish 20 deltas a second, or read about 300 KiB of history a second, or catch up
//! about 200 small deltas a second (each pushed as its own frame).

use crate::protocol::MAX_READ_BYTES;

/// Tokens every request takes before it runs.
pub const REQUEST: f64 = 1.0;

/// Bytes of returned deltas that cost one token.
pub const BYTES_PER_TOKEN: usize = 16 * 1024;

/// Frames pushed (beyond the reply) that cost one token.
pub const FRAMES_PER_TOKEN: usize = 10;

/// Most bytes one delta takes as a frame: 30 KiB of `data` (the most `MAX_DATA_BYTES`
/// may allow) and its envelope.
const LARGEST_DELTA_BYTES: usize = 30 * 1024 + 256;

/// The deposit of a `history` read of at most `limit` deltas: the most it can cost, a
/// request and a page of bytes (8.5 tokens for a full page).
pub fn history_deposit(limit: usize) -> f64 {
    read(
        limit
            .saturating_mul(LARGEST_DELTA_BYTES)
            .min(MAX_READ_BYTES),
        0,
    )
}

/// The deposit of a catch-up of at most `missed` deltas (after `since`, within
/// `CATCHUP_LIMIT`): the most it can cost, so that concurrent catch-ups cannot each start
/// on a nearly empty bucket, while a client resubscribing to many channels it is up to
/// date on pays about a token each.
pub fn catch_up_deposit(missed: usize) -> f64 {
    read(
        missed
            .saturating_mul(LARGEST_DELTA_BYTES)
            .min(MAX_READ_BYTES),
        missed,
    )
}

/// What a read costs in all for returning `bytes` of deltas in `frames` frames of their
/// own (a catch-up pushes one frame per delta; `history` returns them in its reply, so 0).
pub fn read(bytes: usize, frames: usize) -> f64 {
    REQUEST + bytes as f64 / BYTES_PER_TOKEN as f64 + frames as f64 / FRAMES_PER_TOKEN as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_costs_by_bytes_and_by_frames_pushed() {
        assert_eq!(read(0, 0), 1.0);
        assert_eq!(read(16 * 1024, 0), 2.0);
        assert_eq!(read(0, 10), 2.0);
        assert_eq!(read(32 * 1024, 500), 53.0);
        assert_eq!(history_deposit(1000), 8.5);
        assert_eq!(history_deposit(0), 1.0);
        assert_eq!(catch_up_deposit(0), 1.0, "up to date: a request");
        assert!((catch_up_deposit(2) - (1.0 + 2.0 * 30.25 / 16.0 + 0.2)).abs() < 1e-9);
        assert_eq!(catch_up_deposit(500), 58.5, "a full page and 500 frames");
        assert_eq!(
            read(MAX_READ_BYTES, 0),
            history_deposit(1000),
            "a full page of history"
        );
    }
}
