//! What a client does with each frame: deltas are deduplicated by seq, buffered and
//! applied strictly in order; `subscribed` sets the starting point or resumes; `history`
//! fills gaps page by page; acks and errors settle or retry publishes (an ack may come
//! twice for one publish: it counts once). A coalesced `deltas` frame goes through the
//! same path as its deltas' `delta` frames would, in order. Every sighting of a seq is
//! checked against the run's shared table.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::retry::{RATE_LIMIT_BACKOFF, RATE_LIMIT_BACKOFF_MAX, Retry, after_refusal};
use super::session::Client;
use super::state::{Subscription, Via};
use crate::frame::Frame;
use crate::state::{Phase, SHARDS, Sighting, id_hash, jitter, unix_micros};
use crate::stats::Counter;

/// Latencies a client collects before recording them into its shard.
const LATENCY_BATCH: usize = 64;

impl Client {
    pub(crate) fn find_channel(&self, name: &str) -> Option<usize> {
        self.channels
            .iter()
            .position(|c| self.shared.channels[c.table].name == name)
    }

    pub(crate) fn on_frame(&mut self, text: &str) {
        let frame: Frame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                self.stats.bump(Counter::UnparseableFrame);
                return;
            }
        };
        let now = Instant::now();
        match frame.kind.as_deref() {
            Some(kind @ ("delta" | "deltas")) => {
                match frame
                    .channel
                    .as_deref()
                    .and_then(|name| self.find_channel(name))
                {
                    Some(i) if kind == "delta" => {
                        self.count_pushed(i, 1);
                        self.on_delta(i, &frame, Via::Push, now);
                    }
                    Some(i) => {
                        let deltas = frame.deltas.as_deref().unwrap_or_default();
                        self.count_pushed(i, deltas.len() as u64);
                        for delta in deltas {
                            self.on_delta(i, delta, Via::Push, now);
                        }
                    }
                    None => self.stats.bump(Counter::StrayReply),
                }
            }
            Some("subscribed") => self.on_subscribed(&frame, now),
            Some("history") => self.on_history(&frame, now),
            Some("ack") => self.on_ack(&frame),
            Some("error") => self.on_error(&frame, now),
            Some("pong" | "unsubscribed") => {}
            Some(_) => self.stats.bump(Counter::UnknownFrame),
            None if frame.message.as_deref() == Some("Internal server error") => {
                // A route invocation crashed or timed out: some request of ours will get
                // no reply, and there is no telling which. Its reply timeout sends it
                // again; bringing every retry forward instead only adds load when the
                // server is slow (the usual reason for this frame), and a retry that
                // races its original spins on the publish claim.
                self.stats.bump(Counter::GatewayInternalError);
            }
            None => self.stats.bump(Counter::UnknownFrame),
        }
    }

    /// Counts a pushed frame carrying `deltas` deltas, when its subscription is live (the
    /// frames-per-delta figure is about live delivery, not catch-up).
    fn count_pushed(&mut self, i: usize, deltas: u64) {
        if deltas > 0 && self.channels[i].subscription == Subscription::Live {
            self.stats.frames_received += 1;
            self.stats.deltas_pushed += deltas;
        }
    }

    pub(crate) fn on_delta(&mut self, i: usize, d: &Frame<'_>, via: Via, now: Instant) {
        let Some(seq) = d.seq else {
            self.stats.bump(Counter::UnknownFrame);
            return;
        };
        let id = d.id.as_deref().unwrap_or("");
        let table = &self.shared.channels[self.channels[i].table];
        match table.sight(seq, id_hash(id)) {
            Sighting::Consistent => {}
            Sighting::Mismatch | Sighting::OutOfRange => self.stats.content_mismatches += 1,
        }
        let payload = d.data.as_ref();
        if payload.and_then(|p| p.tag.as_deref()) != Some(id) {
            self.stats.content_mismatches += 1;
        }
        match via {
            Via::Push | Via::CatchUp => {
                self.stats.deliveries += 1;
                if matches!(self.phase, Phase::Publishing { .. }) {
                    self.stats.deliveries_publishing += 1;
                }
            }
            Via::History => self.stats.history_deltas += 1,
        }
        let c = &mut self.channels[i];
        // A frame before the `subscribed` of a resubscribe with `since` may be catch-up;
        // `on_subscribed` gives the ones above its head back to the fan-out.
        let via = match via {
            Via::Push
                if c.start.is_some()
                    && !c.fallback
                    && matches!(c.subscription, Subscription::Pending { .. }) =>
            {
                Via::CatchUp
            }
            via => via,
        };
        match (&c.epoch, d.epoch.as_deref()) {
            (Some(ours), Some(theirs)) if ours != theirs => {
                // Not this epoch's seq: it cannot be ordered with ours.
                self.stats.bump(Counter::EpochChanged);
                return;
            }
            (None, Some(theirs)) => c.epoch = Some(theirs.to_owned()),
            _ => {}
        }
        let fresh = !(c.start.is_some() && seq <= c.applied || c.buffer.contains_key(&seq));
        if !fresh {
            self.stats.duplicates_received += 1;
            if via != Via::History && c.awaiting_push.remove(&seq) {
                // The push came after all, later than the gap timeout.
                self.stats.late_pushes += 1;
                self.shared.awaiting_pushes.fetch_sub(1, Ordering::Relaxed);
            } else if via == Via::Push {
                self.stats.duplicate_pushes += 1;
            }
            return;
        }
        c.buffer.insert(seq, via);
        if via == Via::History && c.owed_after.is_some_and(|owed| seq > owed) {
            c.awaiting_push.insert(seq);
            self.shared.awaiting_pushes.fetch_add(1, Ordering::Relaxed);
        }
        c.known_head = c.known_head.max(seq);
        if via == Via::Push
            && c.subscription == Subscription::Live
            && let Some(sent) = payload.and_then(|p| p.t)
        {
            self.latencies
                .push(unix_micros().saturating_sub(sent).max(1));
            if self.latencies.len() >= LATENCY_BATCH {
                self.flush_latencies();
            }
        }
        if self.channels[i].subscription == Subscription::Live {
            self.apply_ready(i, now);
        }
    }

    /// Applies buffered deltas in seq order, as far as they go without a gap.
    pub(crate) fn apply_ready(&mut self, i: usize, now: Instant) {
        let c = &mut self.channels[i];
        while let Some((&first, &via)) = c.buffer.first_key_value() {
            if first > c.applied + 1 {
                break;
            }
            c.buffer.pop_first();
            // The checks of what "applying" did; the loop above should make them hold.
            if first <= c.applied {
                self.stats.duplicates_after_dedupe += 1;
                continue;
            }
            if first != c.applied + 1 {
                self.stats.out_of_order_applied += 1;
            }
            c.applied = first;
            c.applied_count += 1;
            match via {
                Via::Push => self.stats.applied_pushed += 1,
                Via::CatchUp => self.stats.applied_catch_up += 1,
                Via::History => self.stats.applied_history += 1,
            }
        }
        self.update_gap(i, now);
        if self.phase == Phase::Settling {
            self.check_settled();
        }
    }

    pub(crate) fn update_gap(&mut self, i: usize, now: Instant) {
        let c = &mut self.channels[i];
        if c.subscription == Subscription::Live && c.applied < c.known_head {
            c.gap_since.get_or_insert(now);
        } else {
            c.gap_since = None;
        }
    }

    /// Every channel subscribed at least once (or refused for good): the client is ready.
    pub(crate) fn check_ready(&mut self) {
        if self.ready {
            return;
        }
        let subscribed = self.channels.iter().filter(|c| c.start.is_some()).count();
        let refused = self
            .channels
            .iter()
            .filter(|c| c.subscription == Subscription::Refused)
            .count();
        if subscribed + refused == self.channels.len() {
            self.ready = true;
            self.subscribed_once = subscribed > 0 || self.channels.is_empty();
            self.shared.ready.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn check_settled(&mut self) {
        if self.settled || self.phase != Phase::Settling {
            return;
        }
        let at_head = self.channels.iter().all(|c| {
            c.subscription == Subscription::Refused
                || (c.start.is_some()
                    && c.applied >= self.shared.channels[c.table].head.load(Ordering::Relaxed))
        });
        if at_head {
            self.settled = true;
            self.shared.settled.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn on_subscribed(&mut self, f: &Frame<'_>, now: Instant) {
        let (Some(i), Some(seq)) = (
            f.channel.as_deref().and_then(|n| self.find_channel(n)),
            f.seq,
        ) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let c = &mut self.channels[i];
        if !matches!(c.subscription, Subscription::Pending { .. }) {
            // The reply to a subscribe that was sent again; the first one counted.
            self.stats.bump(Counter::StrayReply);
            return;
        }
        c.subscription = Subscription::Live;
        let epoch = f.epoch.as_deref();
        match c.start {
            None => {
                // The starting point: what came before it is not this client's to apply.
                c.start = Some(seq);
                c.applied = seq;
                c.epoch = epoch.map(str::to_owned);
                while c.buffer.first_key_value().is_some_and(|(s, _)| *s <= seq) {
                    c.buffer.pop_first();
                }
                c.owed_after = Some(seq);
            }
            Some(_) => {
                if f.recovered == Some(false) {
                    self.stats.not_recovered += 1;
                }
                // Nothing is applied while the subscribe is pending, so `applied` is the
                // `since` it sent.
                self.stats.missed_while_away += seq.saturating_sub(c.applied);
                for (_, via) in c.buffer.range_mut(seq + 1..) {
                    if *via == Via::CatchUp {
                        *via = Via::Push;
                    }
                }
                // A `recovered: true` catch-up owes everything after `since`; without
                // `since` (or not recovered), only what comes after the head.
                c.owed_after = Some(if f.recovered == Some(true) && !c.fallback {
                    c.applied
                } else {
                    seq
                });
                if let (Some(ours), Some(theirs)) = (&c.epoch, epoch)
                    && ours != theirs
                {
                    // History started over: nothing of ours can be caught up; start again
                    // from the new head (the report already fails on `not_recovered`).
                    self.stats.bump(Counter::EpochChanged);
                    c.epoch = Some(theirs.to_owned());
                    c.start = Some(seq);
                    c.applied = seq;
                    c.applied_count = 0;
                    c.known_head = seq;
                    c.buffer.clear();
                } else if c.epoch.is_none() {
                    c.epoch = epoch.map(str::to_owned);
                }
            }
        }
        c.known_head = c.known_head.max(seq);
        self.check_ready();
        self.apply_ready(i, now);
    }

    pub(crate) fn on_history(&mut self, f: &Frame<'_>, now: Instant) {
        let Some(i) = f.channel.as_deref().and_then(|n| self.find_channel(n)) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        if self.channels[i].history.take().is_none() {
            self.stats.bump(Counter::StrayReply);
        }
        if let Some(head) = f.seq {
            let c = &mut self.channels[i];
            if f.epoch
                .as_deref()
                .is_none_or(|e| c.epoch.as_deref() == Some(e))
            {
                c.known_head = c.known_head.max(head);
            }
        }
        let before = self.channels[i].applied;
        for delta in f.deltas.iter().flatten() {
            self.on_delta(i, delta, Via::History, now);
        }
        self.apply_ready(i, now);
        let c = &mut self.channels[i];
        if c.applied > before {
            c.gap_misses = 0;
        } else {
            c.gap_misses = c.gap_misses.saturating_add(1);
        }
        if c.subscription == Subscription::Live && c.applied < c.known_head {
            if f.more == Some(true) {
                self.ask_history(i, now, false);
            } else {
                // Still behind: what is missing is on its way; ask again after a while.
                c.gap_since = Some(now);
            }
        }
    }

    pub(crate) fn on_ack(&mut self, f: &Frame<'_>) {
        let (Some(id), Some(seq)) = (f.id.as_deref(), f.seq) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let Some(number) = self.publish_number(id) else {
            self.stats.bump(Counter::StrayReply);
            return;
        };
        let Some(p) = self.publisher.as_deref_mut() else {
            return;
        };
        let hash = id_hash(id);
        match p.in_flight.iter().position(|f| f.number == number) {
            Some(index) => {
                let f = p.in_flight.swap_remove(index);
                p.backoff = RATE_LIMIT_BACKOFF;
                let table = &self.shared.channels[f.table];
                if !matches!(table.sight(seq, hash), Sighting::Consistent) {
                    self.stats.content_mismatches += 1;
                }
                table.head.fetch_max(seq, Ordering::Relaxed);
                table.acked.fetch_add(1, Ordering::Relaxed);
                self.stats.publishes_acked += 1;
                self.shared.acked.fetch_add(1, Ordering::Relaxed);
                self.shared
                    .last_ack_micros
                    .fetch_max(unix_micros(), Ordering::Relaxed);
            }
            None => {
                // A second ack for a publish sent twice (acks are asynchronous and a
                // resent publish may be acked again): it counts once, and must name the
                // same seq.
                self.stats.duplicate_acks += 1;
                if let Some(table) = f
                    .channel
                    .as_deref()
                    .and_then(|n| self.shared.channels.iter().find(|t| t.name == n))
                    && !matches!(table.sight(seq, hash), Sighting::Consistent)
                {
                    self.stats.content_mismatches += 1;
                }
            }
        }
    }

    /// `<run>.<publisher>.<n>` → n, for this client's own publishes.
    pub(crate) fn publish_number(&self, id: &str) -> Option<u64> {
        let p = self.publisher.as_deref()?;
        let mut parts = id.split('.');
        let (run, ordinal, number) = (parts.next()?, parts.next()?, parts.next()?);
        (run == self.shared.plan.run_id && ordinal.parse::<usize>().ok()? == p.ordinal)
            .then(|| number.parse().ok())
            .flatten()
    }

    pub(crate) fn on_error(&mut self, f: &Frame<'_>, now: Instant) {
        let code = f.code.as_deref().unwrap_or("other");
        let id = f.id.as_deref().unwrap_or("");
        if let Some(number) = self.publish_number(id) {
            self.stats.publish_error(code);
            let Some(p) = self.publisher.as_deref_mut() else {
                return;
            };
            let Some(index) = p.in_flight.iter().position(|f| f.number == number) else {
                return;
            };
            let attempts = p.in_flight[index].attempts;
            match after_refusal(code, f.retry_after_ms, p.backoff, attempts) {
                Retry::PausePublisher(pause) => {
                    p.backoff = (p.backoff * 2).min(RATE_LIMIT_BACKOFF_MAX);
                    let until = now + pause;
                    p.paused_until = Some(p.paused_until.map_or(until, |u| u.max(until)));
                    let f = &mut p.in_flight[index];
                    f.awaiting = false;
                    f.resend_at = until;
                }
                Retry::Resend(wait) => {
                    let f = &mut p.in_flight[index];
                    f.awaiting = false;
                    f.resend_at = now + wait;
                }
                Retry::Never => {
                    // Refused for good: it stays unacknowledged, and the report says so.
                    p.in_flight.swap_remove(index);
                    self.stats.bump(Counter::PublishRefused);
                    self.shared.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let channel = f.channel.as_deref().and_then(|n| self.find_channel(n));
        match (id, channel) {
            ("s", Some(i)) => {
                if code == "internal" {
                    self.stats.bump(Counter::SubscribeError);
                    if let Subscription::Pending { deadline, .. } =
                        &mut self.channels[i].subscription
                    {
                        *deadline = now + jitter(Duration::from_millis(200));
                    }
                } else {
                    self.stats.bump(Counter::SubscribeRefused);
                    self.channels[i].subscription = Subscription::Refused;
                    self.check_ready();
                }
            }
            ("h", Some(i)) => {
                self.stats.bump(Counter::HistoryError);
                // `internal` or not, try again a little later (a refusal keeps counting).
                self.channels[i].history = Some(now + jitter(Duration::from_millis(500)));
            }
            _ => self.stats.bump(Counter::OtherError),
        }
    }

    pub(crate) fn flush_latencies(&mut self) {
        if self.latencies.is_empty() {
            return;
        }
        let shard = &self.shared.latency[self.index % SHARDS];
        let mut histogram = shard.lock().unwrap_or_else(|e| e.into_inner());
        for value in self.latencies.drain(..) {
            histogram.saturating_record(value);
        }
    }
}
