//! What every client of a run shares: the phase, each channel's head and the message id
//! first seen at each of its seqs (so two ids at one seq are caught whoever saw them), the
//! counts the phases wait on, and the sharded latency histograms.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::plan::Plan;

/// Histogram shards (clients record into shard `index % SHARDS`).
pub(crate) const SHARDS: usize = 16;

/// Where the run is. Clients keep a copy and hear changes through a `watch` channel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Phase {
    Connecting,
    Publishing { start: Instant, end: Instant },
    Draining,
    Settling,
    Stopping,
}

/// What everybody knows about one channel.
pub(crate) struct ChannelTable {
    pub(crate) name: String,
    /// Highest acked seq.
    pub(crate) head: AtomicU64,
    /// Distinct publishes sent to this channel.
    pub(crate) sent: AtomicU64,
    /// Distinct publishes acked on this channel.
    pub(crate) acked: AtomicU64,
    /// Seq → hash of the message id first seen at that seq (0: not seen yet).
    pub(crate) ids: Box<[AtomicU64]>,
}

pub(crate) enum Sighting {
    Consistent,
    Mismatch,
    OutOfRange,
}

impl ChannelTable {
    pub(crate) fn new(name: String, capacity: u64) -> Self {
        Self {
            name,
            head: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            ids: (0..=capacity).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that `seq` carries message `hash`; says whether that agrees with what
    /// was seen before.
    pub(crate) fn sight(&self, seq: u64, hash: u64) -> Sighting {
        let Some(slot) = self.ids.get(seq as usize) else {
            return Sighting::OutOfRange;
        };
        match slot.compare_exchange(0, hash, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Sighting::Consistent,
            Err(seen) if seen == hash => Sighting::Consistent,
            Err(_) => Sighting::Mismatch,
        }
    }
}

/// FNV-1a of a message id; never 0 (0 marks an empty slot).
pub(crate) fn id_hash(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash | 1
}

/// Everything the clients of one run share.
pub(crate) struct Shared {
    /// The validated configuration.
    pub(crate) plan: Plan,
    /// One table per channel, by index.
    pub(crate) channels: Vec<ChannelTable>,
    /// Handshakes in progress at once.
    pub(crate) handshakes: Semaphore,
    /// Latency histograms, [`SHARDS`] of them.
    pub(crate) latency: Vec<Mutex<Histogram<u64>>>,
    /// Clients with every channel subscribed at least once.
    pub(crate) ready: AtomicUsize,
    /// Clients that gave up (never connected) and exited.
    pub(crate) gave_up: AtomicUsize,
    /// Publishers that have sent their share.
    pub(crate) publishers_done: AtomicUsize,
    /// Distinct publishes sent.
    pub(crate) sent: AtomicU64,
    /// Distinct publishes acked.
    pub(crate) acked: AtomicU64,
    /// When the latest first ack of a publish came, µs since the Unix epoch (0: none yet).
    pub(crate) last_ack_micros: AtomicU64,
    /// Publishes refused for good (never to be acked).
    pub(crate) refused: AtomicU64,
    /// Clients at the head of every channel during settling.
    pub(crate) settled: AtomicUsize,
    /// Owed seqs that came first from `history` and whose push is still awaited, over all
    /// clients (the run gives them a grace period before it stops).
    pub(crate) awaiting_pushes: AtomicU64,
}

/// Microseconds since the Unix epoch (publish send times travel in `data`).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// `base` times a random factor from 0.5 to 1.5.
pub(crate) fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sightings_catch_two_ids_at_one_seq() {
        let table = ChannelTable::new("c".into(), 4);
        assert!(matches!(table.sight(1, id_hash("a")), Sighting::Consistent));
        assert!(matches!(table.sight(1, id_hash("a")), Sighting::Consistent));
        assert!(matches!(table.sight(1, id_hash("b")), Sighting::Mismatch));
        assert!(matches!(table.sight(9, id_hash("a")), Sighting::OutOfRange));
    }
}
