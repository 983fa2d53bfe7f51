//! A simulated client's life: connect (with backoff), run one connection until churn,
//! close or stop, stay away, come back. The frames it sends live in `requests.rs`, what
//! it does with the frames it receives in `receive.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::retry::RATE_LIMIT_BACKOFF;
use super::state::{
    ChannelOutcome, ChannelState, ClientOutcome, Publisher, SessionEnd, Subscription,
};
use crate::config::LoadConfig;
use crate::state::{Phase, Shared, jitter};
use crate::stats::{ClientStats, Counter};

/// How long one WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// A connection to the endpoint.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One simulated client: its channels, its share of the publishes if it publishes, and
/// what it has seen.
pub(crate) struct Client {
    /// Its index in the run (publishers are the first ones).
    pub(crate) index: usize,
    /// What every client of the run shares.
    pub(crate) shared: Arc<Shared>,
    /// The endpoint with this client's token.
    pub(crate) url: String,
    /// The phase as this client last heard it.
    pub(crate) phase: Phase,
    /// Where phase changes come from.
    pub(crate) phase_rx: watch::Receiver<Phase>,
    /// Its channels.
    pub(crate) channels: Vec<ChannelState>,
    /// Its publishing, if it is a publisher.
    pub(crate) publisher: Option<Box<Publisher>>,
    /// Churn times, as offsets into the publish phase, soonest last.
    pub(crate) churn: Vec<Duration>,
    /// Its counters.
    pub(crate) stats: ClientStats,
    /// Latencies not yet recorded into its shard, µs.
    pub(crate) latencies: Vec<u64>,
    /// Frames to send on the next turn of the session loop.
    pub(crate) outbox: Vec<String>,
    /// Every channel subscribed (or refused) once.
    pub(crate) ready: bool,
    /// At the head of every channel during settling.
    pub(crate) settled: bool,
    /// Subscribed to at least one channel at some point.
    pub(crate) subscribed_once: bool,
}

impl Client {
    /// Client `index` of the run, with its churn times (offsets into the publish phase,
    /// soonest last).
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        phase_rx: watch::Receiver<Phase>,
        churn: Vec<Duration>,
    ) -> Self {
        let plan = &shared.plan;
        let config = &plan.config;
        let subscribes = config.subscribers.is_none_or(|n| index < n);
        let channels = (0..config.channels_per_connection)
            .filter(|_| subscribes)
            .map(|j| {
                ChannelState::new((index * config.channels_per_connection + j) % config.channels)
            })
            .collect();
        let publisher = (index < config.publishers).then(|| {
            Box::new(Publisher {
                ordinal: index,
                quota: plan.quota(index),
                next: 0,
                in_flight: Vec::new(),
                paused_until: None,
                backoff: RATE_LIMIT_BACKOFF,
                done: false,
            })
        });
        let url = plan.url_with_token(index);
        Self {
            index,
            url,
            shared,
            phase: Phase::Connecting,
            phase_rx,
            channels,
            publisher,
            churn,
            stats: ClientStats::default(),
            latencies: Vec::new(),
            outbox: Vec::new(),
            ready: false,
            settled: false,
            subscribed_once: false,
        }
    }

    pub(crate) fn config(&self) -> &LoadConfig {
        &self.shared.plan.config
    }

    pub(crate) async fn run(mut self) -> ClientOutcome {
        let connect_deadline = Instant::now() + self.config().connect_timeout;
        let mut connected_before = false;
        let mut churned = false;
        loop {
            if self.phase == Phase::Stopping {
                break;
            }
            // The first connection must succeed within the connect phase; later ones
            // keep trying until the run stops.
            let deadline = if connected_before {
                Instant::now() + self.shared.plan.max_run_time
            } else {
                connect_deadline
            };
            let Some(mut socket) = self.connect(deadline).await else {
                break;
            };
            self.stats.connections += 1;
            if churned {
                self.stats.reconnects += 1;
                churned = false;
            }
            connected_before = true;
            let end = self.session(&mut socket).await;
            if !matches!(end, SessionEnd::Stop) {
                // A push to a connection that closed may have been on its way: what this
                // one still awaited is neither late nor missed.
                self.forget_awaited_pushes();
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
            drop(socket);
            match end {
                SessionEnd::Stop => break,
                SessionEnd::Churn => {
                    churned = true;
                    let (min, max) = (self.config().away_min, self.config().away_max);
                    let away = if max > min {
                        min + (max - min).mul_f64(rand::random::<f64>())
                    } else {
                        min
                    };
                    if !self.pause(away).await {
                        break;
                    }
                }
                SessionEnd::Closed => {
                    self.stats.unexpected_disconnects += 1;
                    if !self.pause(jitter(Duration::from_millis(200))).await {
                        break;
                    }
                }
            }
        }
        if !self.subscribed_once {
            self.shared.gave_up.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(p) = self.publisher.as_deref_mut()
            && !p.done
        {
            p.done = true;
            self.shared.publishers_done.fetch_add(1, Ordering::Relaxed);
        }
        self.flush_latencies();
        // The connection stayed open to the end (and the run gave late pushes a grace
        // period): what is still awaited was never pushed.
        for c in &self.channels {
            self.stats.missed_pushes += c.awaiting_push.len() as u64;
        }
        ClientOutcome {
            index: self.index,
            channels: self
                .channels
                .iter()
                .map(|c| ChannelOutcome {
                    table: c.table,
                    start: c.start,
                    applied: c.applied,
                    applied_count: c.applied_count,
                    known_head: c.known_head,
                    buffered: c.buffer.len(),
                    subscription: match c.subscription {
                        Subscription::Idle => "idle",
                        Subscription::Pending { .. } => "pending",
                        Subscription::Live => "live",
                        Subscription::Refused => "refused",
                    },
                    history_pending: c.history.is_some(),
                })
                .collect(),
            subscribed: self.subscribed_once,
            stats: self.stats,
        }
    }

    /// Stops waiting for the pushes of seqs `history` brought first on this connection.
    fn forget_awaited_pushes(&mut self) {
        for c in &mut self.channels {
            let awaited = std::mem::take(&mut c.awaiting_push).len() as u64;
            self.shared
                .awaiting_pushes
                .fetch_sub(awaited, Ordering::Relaxed);
        }
    }

    /// Follows phase changes.
    pub(crate) fn on_phase(&mut self, phase: Phase) {
        self.phase = phase;
        if phase == Phase::Settling {
            let now = Instant::now();
            for c in &mut self.channels {
                let head = self.shared.channels[c.table].head.load(Ordering::Relaxed);
                c.known_head = c.known_head.max(head);
            }
            for i in 0..self.channels.len() {
                self.update_gap(i, now);
            }
            self.check_settled();
        }
    }

    /// Waits `duration` unless the run stops first; returns false if it did.
    pub(crate) async fn pause(&mut self, duration: Duration) -> bool {
        let sleep = tokio::time::sleep(duration);
        tokio::pin!(sleep);
        loop {
            if self.phase == Phase::Stopping {
                return false;
            }
            tokio::select! {
                _ = &mut sleep => return true,
                changed = self.phase_rx.changed() => {
                    let phase = if changed.is_ok() { *self.phase_rx.borrow_and_update() } else { Phase::Stopping };
                    self.on_phase(phase);
                }
            }
        }
    }

    /// Opens a connection, retrying with backoff until `deadline`.
    pub(crate) async fn connect(&mut self, deadline: Instant) -> Option<Socket> {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.phase == Phase::Stopping || Instant::now() >= deadline {
                return None;
            }
            let attempt = {
                let _permit = self.shared.handshakes.acquire().await.ok()?;
                let config = WebSocketConfig::default()
                    .read_buffer_size(8 * 1024)
                    .write_buffer_size(0)
                    .max_message_size(Some(1024 * 1024))
                    .max_frame_size(Some(1024 * 1024));
                tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio_tungstenite::connect_async_with_config(
                        self.url.as_str(),
                        Some(config),
                        true,
                    ),
                )
                .await
            };
            match attempt {
                Ok(Ok((socket, _))) => return Some(socket),
                Ok(Err(tungstenite::Error::Http(response))) => {
                    let status = response.status().as_u16();
                    match status {
                        401 | 403 => {
                            // A token problem does not go away by retrying.
                            self.stats.bump(Counter::HandshakeUnauthorized);
                            return None;
                        }
                        500..=599 => self.stats.bump(Counter::HandshakeServerError),
                        _ => self.stats.bump(Counter::HandshakeOtherStatus),
                    }
                }
                Ok(Err(_)) => self.stats.bump(Counter::HandshakeIo),
                Err(_) => self.stats.bump(Counter::HandshakeTimeout),
            }
            if !self.pause(jitter(backoff)).await {
                return None;
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Runs one connection until churn, close or stop.
    pub(crate) async fn session(&mut self, socket: &mut Socket) -> SessionEnd {
        let now = Instant::now();
        // A publish-only client (no channels) is ready once connected.
        self.check_ready();
        for i in 0..self.channels.len() {
            let c = &mut self.channels[i];
            c.history = None;
            c.gap_since = None;
            c.fallback = false;
            c.owed_after = None;
            if c.subscription != Subscription::Refused {
                c.subscription = Subscription::Idle;
                self.subscribe(i, now);
            }
        }
        if let Some(publisher) = &mut self.publisher {
            // Everything unacknowledged goes again on the new connection.
            for f in &mut publisher.in_flight {
                f.awaiting = false;
                f.resend_at = now;
            }
        }
        let sleep = tokio::time::sleep_until(now);
        tokio::pin!(sleep);
        loop {
            let now = Instant::now();
            let churn = self.timers(now);
            if !self.outbox.is_empty() {
                for frame in self.outbox.drain(..) {
                    if socket.feed(Message::text(frame)).await.is_err() {
                        return SessionEnd::Closed;
                    }
                }
                if socket.flush().await.is_err() {
                    return SessionEnd::Closed;
                }
            }
            if self.phase == Phase::Stopping {
                return SessionEnd::Stop;
            }
            if churn {
                return SessionEnd::Churn;
            }
            let wake = self
                .next_wake()
                .unwrap_or_else(|| now + Duration::from_secs(3600));
            sleep.as_mut().reset(wake);
            tokio::select! {
                changed = self.phase_rx.changed() => {
                    let phase = if changed.is_ok() { *self.phase_rx.borrow_and_update() } else { Phase::Stopping };
                    self.on_phase(phase);
                }
                frame = socket.next() => match frame {
                    Some(Ok(Message::Text(text))) => self.on_frame(text.as_str()),
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return SessionEnd::Closed,
                    Some(Ok(_)) => {}
                },
                _ = &mut sleep => {}
            }
        }
    }
}
