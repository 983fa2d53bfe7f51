//! Admission at the door of a channel over its limit: which share of its publishes the
//! message function lets through to the inbox, so that an overloaded channel's excess is
//! refused before it costs a write.
//!
//! ## Why the door needs a share
//! The sequencer is the channel limit's exact judge: it charges the channel's bucket
//! message by message as it gives out seqs, and keeps the bucket (`tat`) on the newest
//! delta. The message function can read that bucket but not charge it (only the writer of
//! the next delta does), and on a busy channel it moves once per sequencer batch: between
//! two batches the bucket the door reads refills with time and stops refusing, so the door
//! let nearly every publish of an overloaded channel through. Each then cost an inbox
//! write, a stream record and the sequencer's time before being refused; measured at twice
//! the limit on the local stack, the refusals crowded out the admitted publishes until
//! acks timed out (see `docs/hot-channels.md`).
//!
//! ## The share
//! Each sequencer batch that writes records, beside the bucket on its deltas, the share of
//! publishes the door should admit (`adm`, per mille; absent: all). It follows from the
//! batch: of the `k` messages the bucket judged, it admitted `a`, so the door, which let
//! through the share `p` of what was offered, should have let through `p · a / k`. The
//! recorded share is that with [`HEADROOM`], so that some excess still reaches the
//! sequencer, which keeps judging exactly (and keeps measuring); a batch the bucket refused
//! nothing of raises the share by [`RECOVERY`] until it is back at all. One batch lowers it
//! at most [`MOST_CUT`]-fold (a batch sees a few hundred ms), and never below
//! [`LEAST_SHARE`], so a publish always has a chance and the share keeps being measured.
//! The door honours the share only while the channel is busy (the sequencer's mark): a
//! channel the sequencer has left alone admits everything again.
//!
//! ## When the channel cannot take its limit
//! The limit is a setting; what a channel takes depends on the deployment (and, locally,
//! on one DynamoDB Local process that the door's own requests load too). A channel whose
//! sequencer falls behind below its limit would never see the limit refuse anything, and
//! its queue would grow until publishers time out. So the sequencer also watches how long
//! its batch's messages waited since they were claimed: a batch whose *youngest* message
//! waited over [`BEHIND_MS`] finds a standing queue (a burst makes old messages, not a
//! queue that every message waits in) and halves the share, whatever the limit said.
//! Messages already queued are still stored: refusing them would cost a delete now and a
//! new claim when they are sent again, more work for a channel that is behind.
//!
//! A share is applied only while it is fresh ([`SHARE_LIFETIME_MS`] after its delta was
//! written): a channel whose overload ended long ago starts from all again, and the
//! sequencer, for which the share is what the door applied, starts from all too.

/// The whole, in the per-mille unit of a share.
pub const ALL: u16 = 1000;
/// How much more than the measured share the door admits, so that the sequencer still
/// sees (and refuses) some excess.
pub const HEADROOM: f64 = 1.2;
/// How much a batch without refusals raises the share.
pub const RECOVERY: f64 = 1.25;
/// The most one batch divides the share by.
pub const MOST_CUT: f64 = 4.0;
/// The least share the door admits, per mille.
pub const LEAST_SHARE: u16 = 10;
/// A batch whose youngest message waited longer than this since its claim (ms) finds the
/// channel behind: it halves the door's share.
pub const BEHIND_MS: u64 = 2000;
/// A publish to a busy channel that reaches the message function more than this many ms
/// after API Gateway received it is refused at the door (see `door`).
pub const MAX_FRAME_WAIT_MS: u64 = 2000;
/// How long after its delta was written a share still applies (ms): a few sequencer
/// batches; an overloaded channel records a new one with each batch that writes.
pub const SHARE_LIFETIME_MS: u64 = 1000;
/// How long a publish the door refused is asked to wait, in milliseconds: about a
/// sequencer batch and a stream poll, when the door's share is measured again.
pub const DOOR_RETRY_MS: u64 = 1000;

/// What a batch says about its channel's load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Messages stored.
    pub admitted: usize,
    /// Messages refused by the channel's bucket.
    pub refused: usize,
    /// Whether its youngest message waited longer than [`BEHIND_MS`].
    pub behind: bool,
}

/// The share the next batch's deltas record, per mille (`None`: all), from the share the
/// batch found (`previous`) and the batch's `load`.
pub fn next_share(previous: Option<u16>, load: Load) -> Option<u16> {
    let Load {
        admitted,
        refused,
        behind,
    } = load;
    let previous = f64::from(previous.unwrap_or(ALL).clamp(LEAST_SHARE, ALL));
    let next = if refused > 0 {
        let measured = previous * admitted as f64 / (admitted + refused) as f64 * HEADROOM;
        measured.max(previous / MOST_CUT)
    } else if admitted > 0 && !behind {
        previous * RECOVERY
    } else {
        previous
    };
    let next = if behind {
        next.min(previous / 2.0)
    } else {
        next
    };
    let next = next.round().clamp(f64::from(LEAST_SHARE), f64::from(ALL)) as u16;
    (next < ALL).then_some(next)
}

/// Whether the door admits a publish to a channel whose recorded share is `share`, given
/// `draw`, a uniformly random number in `0..ALL`.
pub fn admits(share: Option<u16>, draw: u16) -> bool {
    share.is_none_or(|share| draw < share.max(LEAST_SHARE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(admitted: usize, refused: usize) -> Load {
        Load {
            admitted,
            refused,
            behind: false,
        }
    }

    #[test]
    fn a_channel_within_its_limit_admits_everything() {
        assert_eq!(next_share(None, load(40, 0)), None);
        assert_eq!(next_share(None, load(0, 0)), None);
        assert!((0..ALL).all(|draw| admits(None, draw)));
    }

    #[test]
    fn a_batch_with_refusals_sets_the_share_it_measured_with_headroom() {
        // Twice the limit offered, all of it let through: half admitted.
        assert_eq!(next_share(None, load(50, 50)), Some(600));
        // The door let through 600 ‰ and the bucket still took only 5 of 6: the offered
        // load is 2.4 times the limit, and the door should let through 417 ‰ of it.
        assert_eq!(next_share(Some(600), load(50, 10)), Some(600));
        assert_eq!(next_share(Some(600), load(40, 20)), Some(480));
    }

    #[test]
    fn the_share_converges_on_the_limit_over_the_offered_rate() {
        // 1,000 offered per unit of time, the bucket admits 250 of whatever reaches it.
        let (offered, limit) = (1000.0, 250.0);
        let mut share = None;
        for _ in 0..12 {
            let reaching = offered * f64::from(share.unwrap_or(ALL)) / f64::from(ALL);
            let admitted = reaching.min(limit) as usize;
            share = next_share(share, load(admitted, reaching as usize - admitted));
        }
        let share = f64::from(share.expect("still over the limit"));
        let reaching = offered * share / f64::from(ALL);
        assert!(
            (limit..=limit * HEADROOM * RECOVERY).contains(&reaching),
            "{reaching} reach the sequencer for a limit of {limit}"
        );
    }

    #[test]
    fn one_batch_cuts_the_share_at_most_fourfold_and_never_below_the_least() {
        assert_eq!(next_share(None, load(1, 99)), Some(250));
        assert_eq!(next_share(Some(20), load(0, 100)), Some(LEAST_SHARE));
        assert_eq!(
            next_share(Some(LEAST_SHARE), load(0, 100)),
            Some(LEAST_SHARE)
        );
    }

    #[test]
    fn batches_without_refusals_raise_the_share_back_to_all() {
        assert_eq!(next_share(Some(400), load(30, 0)), Some(500));
        assert_eq!(next_share(Some(800), load(30, 0)), None);
        // A batch of only duplicates or conflicts says nothing: the share stays.
        assert_eq!(next_share(Some(400), load(0, 0)), Some(400));
    }

    #[test]
    fn a_batch_that_finds_the_channel_behind_halves_the_share_whatever_the_limit_said() {
        let behind = |admitted, refused| Load {
            behind: true,
            ..load(admitted, refused)
        };
        // Below its limit (nothing refused), yet behind: the sequencer cannot keep up.
        assert_eq!(next_share(None, behind(40, 0)), Some(500));
        assert_eq!(next_share(Some(500), behind(40, 0)), Some(250));
        // Behind and over the limit: whichever cut is deeper.
        assert_eq!(next_share(Some(800), behind(50, 10)), Some(400));
        assert_eq!(next_share(Some(800), behind(10, 90)), Some(200));
    }

    #[test]
    fn the_door_admits_the_share_of_draws() {
        let admitted = (0..ALL).filter(|draw| admits(Some(250), *draw)).count();
        assert_eq!(admitted, 250);
        let least = (0..ALL).filter(|draw| admits(Some(0), *draw)).count();
        assert_eq!(least, usize::from(LEAST_SHARE));
    }
}
