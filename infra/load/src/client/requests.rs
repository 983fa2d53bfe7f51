//! What a client sends, and when: subscribes (with `since` after a reconnect, without it
//! after too many unanswered catch-ups), `history` to fill gaps, publishes at the planned
//! rate within the window, and the retries of each when its reply is late.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::session::Client;
use super::state::{InFlight, Subscription};
use crate::state::{Phase, unix_micros};
use crate::stats::{Counter, TIMEOUT};

/// Largest `limit` a `history` request asks for (the server allows up to 1000).
const HISTORY_PAGE: u64 = 500;
/// Longest wait for a reply, however often a request was sent.
const REPLY_TIMEOUT_MAX: Duration = Duration::from_secs(30);

/// How long the `attempt`-th sending of a request waits for its reply: the request
/// timeout, doubled on each retry (a slow server is not helped by more of the same).
fn reply_timeout(base: Duration, attempt: u32) -> Duration {
    (base * (1 << attempt.saturating_sub(1).min(5))).min(REPLY_TIMEOUT_MAX.max(base))
}

impl Client {
    pub(crate) fn channel_name(&self, i: usize) -> &str {
        &self.shared.channels[self.channels[i].table].name
    }

    pub(crate) fn subscribe(&mut self, i: usize, now: Instant) {
        let c = &self.channels[i];
        let attempt = match c.subscription {
            Subscription::Refused => return,
            Subscription::Pending { attempt, .. } => attempt + 1,
            _ => 1,
        };
        let deadline = now + reply_timeout(self.config().request_timeout, attempt);
        let fall_back = c.start.is_some()
            && !c.fallback
            && self
                .config()
                .catch_up_attempts
                .is_some_and(|most| attempt > most);
        if fall_back {
            self.stats.catch_up_fallbacks += 1;
            self.channels[i].fallback = true;
        }
        let c = &self.channels[i];
        let name = self.channel_name(i);
        let coalesce = if self.config().coalesce {
            r#","coalesce":true"#
        } else {
            ""
        };
        let frame = match (c.start, &c.epoch) {
            (None, _) => {
                format!(r#"{{"action":"subscribe","channel":"{name}"{coalesce},"id":"s"}}"#)
            }
            (Some(_), _) if c.fallback => {
                format!(r#"{{"action":"subscribe","channel":"{name}"{coalesce},"id":"s"}}"#)
            }
            (Some(_), Some(epoch)) => format!(
                r#"{{"action":"subscribe","channel":"{name}","since":{},"epoch":{}{coalesce},"id":"s"}}"#,
                c.applied,
                serde_json::Value::from(epoch.as_str())
            ),
            (Some(_), None) => format!(
                r#"{{"action":"subscribe","channel":"{name}","since":{}{coalesce},"id":"s"}}"#,
                c.applied
            ),
        };
        self.outbox.push(frame);
        self.channels[i].subscription = Subscription::Pending { deadline, attempt };
    }

    /// Asks `history` from the last applied seq; `retry` when the previous ask got no
    /// reply.
    pub(crate) fn ask_history(&mut self, i: usize, now: Instant, retry: bool) {
        let c = &self.channels[i];
        let attempt = if retry { c.history_attempt + 1 } else { 1 };
        let limit = c
            .known_head
            .saturating_sub(c.applied)
            .clamp(1, HISTORY_PAGE);
        let frame = format!(
            r#"{{"action":"history","channel":"{}","since":{},"limit":{limit},"id":"h"}}"#,
            self.channel_name(i),
            c.applied
        );
        self.outbox.push(frame);
        self.stats.history_requests += 1;
        let timeout = reply_timeout(self.config().request_timeout, attempt);
        let c = &mut self.channels[i];
        c.history = Some(now + timeout);
        c.history_attempt = attempt;
    }

    /// Does what is due; returns true when it is time to churn.
    pub(crate) fn timers(&mut self, now: Instant) -> bool {
        self.publish_timers(now);
        for i in 0..self.channels.len() {
            let c = &self.channels[i];
            match c.subscription {
                Subscription::Pending { deadline, .. } if deadline <= now => {
                    self.stats.bump(Counter::SubscribeTimeout);
                    self.subscribe(i, now);
                }
                Subscription::Live => {
                    if c.history.is_some_and(|d| d <= now) {
                        self.stats.bump(Counter::HistoryTimeout);
                        self.ask_history(i, now, true);
                    } else if c.history.is_none()
                        && c.gap_since
                            .is_some_and(|since| since + self.gap_wait(i) <= now)
                    {
                        self.ask_history(i, now, false);
                    }
                }
                _ => {}
            }
        }
        if let Phase::Publishing { start, end } = self.phase {
            while let Some(offset) = self.churn.last() {
                let at = start + *offset;
                if at > end {
                    self.churn.clear();
                } else if at <= now {
                    self.churn.pop();
                    return true;
                } else {
                    break;
                }
            }
        }
        false
    }

    pub(crate) fn publish_timers(&mut self, now: Instant) {
        let Some(publisher) = self.publisher.as_deref_mut() else {
            return;
        };
        if matches!(self.phase, Phase::Connecting | Phase::Stopping) {
            return;
        }
        if !matches!(self.phase, Phase::Publishing { .. }) && !publisher.done {
            // Publishing is over: nothing new from here on, only retries.
            publisher.done = true;
            self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        if publisher.paused_until.is_some_and(|until| until > now) {
            return;
        }
        publisher.paused_until = None;
        let request_timeout = self.shared.plan.config.request_timeout;
        for f in &mut publisher.in_flight {
            if f.resend_at <= now {
                if f.awaiting {
                    self.stats.publish_error(TIMEOUT);
                }
                f.awaiting = true;
                f.attempts += 1;
                f.resend_at = now + reply_timeout(request_timeout, f.attempts);
                self.stats.publish_attempts += 1;
                self.outbox.push(f.frame.clone());
            }
        }
        let Phase::Publishing { start, end } = self.phase else {
            return;
        };
        let plan = &self.shared.plan;
        let publishers = plan.config.publishers as u64;
        while !publisher.done {
            if publisher.next >= publisher.quota || now >= end {
                publisher.done = true;
                self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if publisher.in_flight.len() >= plan.config.publish_window {
                break;
            }
            let global = publisher.ordinal as u64 + publisher.next * publishers;
            let due = start + Duration::from_secs_f64(global as f64 / plan.config.rate_per_second);
            if due > now {
                break;
            }
            let table = (global % plan.config.channels as u64) as usize;
            let id = format!("{}.{}.{}", plan.run_id, publisher.ordinal, publisher.next);
            // `data` is padded to about payload_bytes once serialised.
            let mut data = format!(r#"{{"tag":"{id}","t":{},"pad":""#, unix_micros());
            let pad = plan.config.payload_bytes.saturating_sub(data.len() + 2);
            data.extend(std::iter::repeat_n('x', pad));
            data.push_str("\"}");
            let frame = format!(
                r#"{{"action":"publish","channel":"{}","id":"{id}","data":{data}}}"#,
                self.shared.channels[table].name,
            );
            self.outbox.push(frame.clone());
            publisher.in_flight.push(InFlight {
                number: publisher.next,
                table,
                frame,
                resend_at: now + request_timeout,
                awaiting: true,
                attempts: 1,
            });
            publisher.next += 1;
            self.stats.publishes_sent += 1;
            self.stats.publish_attempts += 1;
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
            self.shared.channels[table]
                .sent
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next moment something is due.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some(p) = self.publisher.as_deref()
            && !matches!(self.phase, Phase::Connecting | Phase::Stopping)
        {
            let floor = p.paused_until;
            let after_pause = |t: Instant| floor.map_or(t, |f| f.max(t));
            for f in &p.in_flight {
                at(after_pause(f.resend_at));
            }
            if let Phase::Publishing { start, end } = self.phase
                && !p.done
                && p.in_flight.len() < self.config().publish_window
            {
                let global = p.ordinal as u64 + p.next * self.config().publishers as u64;
                let due =
                    start + Duration::from_secs_f64(global as f64 / self.config().rate_per_second);
                at(after_pause(due.min(end)));
            }
        }
        for (i, c) in self.channels.iter().enumerate() {
            match c.subscription {
                Subscription::Pending { deadline, .. } => at(deadline),
                Subscription::Live => match c.history {
                    Some(deadline) => at(deadline),
                    None => {
                        if let Some(since) = c.gap_since {
                            at(since + self.gap_wait(i));
                        }
                    }
                },
                _ => {}
            }
        }
        if let (Phase::Publishing { start, .. }, Some(offset)) = (self.phase, self.churn.last()) {
            at(start + *offset);
        }
        wake
    }

    /// How long a gap may stay open before `history` is asked: `gap_timeout`, doubled for
    /// each `history` reply in a row that did not fill it (at most 32 times, 10 s).
    pub(crate) fn gap_wait(&self, i: usize) -> Duration {
        let base = self.config().gap_timeout;
        (base * (1 << self.channels[i].gap_misses.min(5))).min(Duration::from_secs(10).max(base))
    }
}
