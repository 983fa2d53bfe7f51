//! The door of a channel over its limit: what a publish meets once its publisher's
//! buckets are read, before it takes their tokens. While the sequencer finds the channel over its limit, the door
//! refuses publishes at random, letting through the share its batches record
//! (`admission`), so that an overloaded channel's excess costs two reads and no write.
//!
//! ## Why before the tokens
//! Taking a publisher's tokens writes the connection's and the user's buckets. Refused
//! after that, every publish of an overloaded channel's excess still cost two writes, on
//! top of its reads: at twice a channel's limit, measured on the local stack, the door's
//! own writes left the sequencer too little of DynamoDB Local to reach the limit at all
//! (see `docs/hot-channels.md`). Refused before, the excess costs the two reads of the
//! channel's head, which a publish makes anyway and passes on to [`Store::enqueue_read`].
//!
//! ## Remembering a hot channel for a moment
//! At twice a channel's limit, half of its publishes are refused here, each after two
//! strongly consistent reads of the channel's partition: on AWS, reads that one
//! partition's 3,000 read units per second bound; on the local stack, reads that load
//! the one DynamoDB Local process every publish waits on (measured, the door's reads
//! alone pushed it past what it serves; `docs/hot-channels.md`). So a function instance
//! remembers, for [`MEMORY_MS`], the share of each channel it found busy and limited
//! ([`DoorMemory`]), and draws on that without reading; a publish the draw lets through
//! then reads the channel as usual (it needs the head, fresh), and is not drawn again.
//! The share changes a few times a second at most (once per sequencer batch), so a
//! moment's memory loses nothing; a channel found quiet or unlimited is not remembered.
//!
//! ## A publish that waited for the function
//! A publish that reaches the message function more than `admission::MAX_FRAME_WAIT_MS` after API
//! Gateway received it waited for an instance: the function, or what it waits on, is
//! saturated, and the sequencer cannot see it (nothing is claimed yet). On a busy channel
//! the door refuses such a publish too, so that a backlog of frames drains at the cost of
//! an answer each instead of growing until clients time out and send everything again.
//! Only on a busy channel: a quiet channel's publish is stored at once, and refusing it
//! would only make its publisher wait.
//!
//! ## Why a refusal without tokens is safe
//! The door comes after the publisher's buckets are read (a sender without tokens is
//! refused by them, and never reads the channel), but before the tokens are taken: their
//! writes are what a refusal here saves. A client cannot choose to be refused: the draw
//! is the server's, on a channel whose own publishes exceed its limit, and lateness is
//! API Gateway's `requestTimeEpoch`. What a refusal costs is bounded (the buckets' and the
//! channel's reads, or only the buckets' when the instance remembers the channel), and
//! nothing else is done for it: not the search for an id stored already, which a refusal
//! by the channel's bucket makes after the tokens (an id resent here hears
//! `rate_limited`, and its original ack when it gets through). A publish the door lets
//! through takes its tokens, so what one sender makes the channel's partition read is
//! bounded by its tokens over the share.

use std::collections::HashMap;
use std::sync::Mutex;

use super::admission::{ALL, DOOR_RETRY_MS, admits};
use super::history::ChannelState;
use super::{Store, StoreError};
use crate::clock;

/// How long an instance draws on a channel's remembered share without reading it (ms):
/// about a stream poll, the most often a sequencer batch can change it.
pub const MEMORY_MS: u64 = 250;
/// Channels an instance remembers at most; beyond, the forgotten are read again.
const MEMORY_CHANNELS: usize = 1024;

/// What a function instance remembers of the channels it found over their limit: per
/// channel, when it read it (Unix ms), until when it is busy, and its share.
#[derive(Debug, Default)]
pub struct DoorMemory(Mutex<HashMap<String, Remembered>>);

#[derive(Clone, Copy, Debug)]
struct Remembered {
    read_at: u64,
    busy_until: u64,
    share: u16,
}

impl DoorMemory {
    /// The share to draw on for `channel` at `now_ms` without reading it, if the channel
    /// was read busy and limited less than [`MEMORY_MS`] ago and is busy still.
    fn share(&self, channel: &str, now_ms: u64) -> Option<u16> {
        let memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let remembered = memory.get(channel)?;
        (now_ms < remembered.read_at + MEMORY_MS && now_ms < remembered.busy_until)
            .then_some(remembered.share)
    }

    /// Remembers what a read of `channel` at `now_ms` found (or forgets the channel if
    /// the door has nothing to refuse on it).
    fn remember(&self, channel: &str, state: &ChannelState, now_ms: u64) {
        let mut memory = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match (state.busy_until, state.admit) {
            (Some(busy_until), Some(share)) if busy_until > now_ms => {
                if memory.len() >= MEMORY_CHANNELS && !memory.contains_key(channel) {
                    memory.retain(|_, r| now_ms < r.read_at + MEMORY_MS);
                    if memory.len() >= MEMORY_CHANNELS {
                        memory.clear();
                    }
                }
                let remembered = Remembered {
                    read_at: now_ms,
                    busy_until,
                    share,
                };
                memory.insert(channel.to_owned(), remembered);
            }
            _ => {
                memory.remove(channel);
            }
        }
    }
}

/// What the door says to a publish.
#[derive(Debug)]
pub enum Door {
    /// Come in: the channel as read, for [`Store::enqueue_read`].
    Open(ChannelRead),
    /// Refused: the channel is over its limit; retry after this many milliseconds.
    Refused {
        /// Milliseconds.
        retry_after_ms: u64,
    },
}

/// A channel's head and buckets as the door read them.
#[derive(Debug)]
pub struct ChannelRead(pub(super) ChannelState);

impl Store {
    /// Refuses a publish by the channel's admission share while the sequencer finds it
    /// over its limit, drawing on what `memory` holds of the channel or else on a read
    /// of it, and any publish to a busy channel that is `late` (it waited longer than
    /// `admission::MAX_FRAME_WAIT_MS` for the function); reads the channel for a publish it lets
    /// through (see the module docs).
    pub async fn door(
        &self,
        channel: &str,
        memory: &DoorMemory,
        late: bool,
    ) -> Result<Door, StoreError> {
        let refused = Ok(Door::Refused {
            retry_after_ms: DOOR_RETRY_MS,
        });
        let draw = rand::random_range(0..ALL);
        let remembered = memory.share(channel, clock::now_ms());
        if remembered.is_some_and(|share| late || !admits(Some(share), draw)) {
            return refused;
        }
        let state = self.channel_state(channel).await?;
        let now = clock::now_ms();
        memory.remember(channel, &state, now);
        // A publish the remembered share let through has had its draw.
        let draw = remembered.is_none().then_some(draw);
        if refuses(&state, now, draw, late) {
            return refused;
        }
        Ok(Door::Open(ChannelRead(state)))
    }
}

/// Whether the door refuses a publish to the channel `state` describes at `now_ms`: only
/// while it is busy (the sequencer's mark), when the publish is `late`, or by the share
/// its newest delta records, given `draw`, uniform in `0..ALL` (`None`: drawn already).
fn refuses(state: &ChannelState, now_ms: u64, draw: Option<u16>, late: bool) -> bool {
    state.busy(now_ms) && (late || draw.is_some_and(|draw| !admits(state.admit, draw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(busy_until: Option<u64>, admit: Option<u16>) -> ChannelState {
        ChannelState {
            recorded: Some("e".into()),
            live: Some(("e".into(), 7)),
            tat: None,
            admit,
            busy_until,
        }
    }

    #[test]
    fn an_instance_remembers_a_busy_limited_channel_for_a_moment_only() {
        let now = 1_000_000;
        let memory = DoorMemory::default();
        memory.remember("hot", &state(Some(now + 800), Some(300)), now);
        assert_eq!(memory.share("hot", now + MEMORY_MS - 1), Some(300));
        assert_eq!(memory.share("hot", now + MEMORY_MS), None, "read again");
        assert_eq!(memory.share("other", now), None);
        // Busy no longer, though read a moment ago: nothing to draw on.
        memory.remember("ending", &state(Some(now + 10), Some(300)), now);
        assert_eq!(memory.share("ending", now + 10), None);
        // Found quiet, or without a share: forgotten.
        memory.remember("hot", &state(None, Some(300)), now + 1);
        assert_eq!(memory.share("hot", now + 2), None);
        memory.remember("hot", &state(Some(now + 800), None), now + 1);
        assert_eq!(memory.share("hot", now + 2), None);
    }

    #[test]
    fn the_memory_stays_bounded() {
        let now = 1_000_000;
        let memory = DoorMemory::default();
        for n in 0..3 * MEMORY_CHANNELS {
            memory.remember(&format!("c{n}"), &state(Some(now + 800), Some(300)), now);
        }
        let held = memory.0.lock().unwrap().len();
        assert!(held <= MEMORY_CHANNELS, "{held}");
    }

    #[test]
    fn the_door_refuses_by_the_share_only_while_the_channel_is_busy() {
        let now = 1_000_000;
        let refused = |s: &ChannelState| {
            (0..ALL)
                .filter(|d| refuses(s, now, Some(*d), false))
                .count()
        };
        assert_eq!(refused(&state(Some(now + 500), Some(300))), 700);
        assert_eq!(refused(&state(Some(now + 500), None)), 0);
        // The sequencer has left it alone: everything comes in again.
        assert_eq!(refused(&state(Some(now - 1), Some(300))), 0);
        assert_eq!(refused(&state(None, Some(300))), 0);
        // Drawn already (on the remembered share): not drawn again.
        assert!(!refuses(
            &state(Some(now + 500), Some(10)),
            now,
            None,
            false
        ));
    }

    #[test]
    fn a_late_publish_is_refused_on_a_busy_channel_only() {
        let now = 1_000_000;
        assert!(refuses(&state(Some(now + 500), None), now, None, true));
        assert!(!refuses(&state(Some(now - 1), None), now, Some(0), true));
        assert!(!refuses(&state(None, Some(10)), now, Some(999), true));
    }
}
