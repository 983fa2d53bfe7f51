//! One open connection's task: it reads frames and routes them, writes the frames queued
//! for the client, enforces the idle and lifetime timeouts, finishes the closing handshake
//! and then runs `$disconnect` exactly once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deltacast::clock;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::{debug, info, warn};

use super::routing::route;
use super::state::{CloseRequest, Connection, Shared};
use crate::events;
use crate::invoke::Invoke;

/// How long a closing handshake may take before the socket is dropped anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// How a connection's loop ended.
enum Ending {
    /// The client sent a close frame (tungstenite has queued the reply).
    ByClient { status: u16, reason: String },
    /// The gateway closes: send this close frame, then wait for the client's.
    ByGateway {
        code: u16,
        reason: &'static str,
        /// The read side is unusable (the rest of an oversized frame is still unread).
        unreadable: bool,
    },
    /// The socket failed or the client went away without a close frame.
    Abnormal,
}

impl Ending {
    fn by_gateway(code: u16, reason: &'static str) -> Self {
        Self::ByGateway {
            code,
            reason,
            unreadable: false,
        }
    }

    /// The status and reason `$disconnect` reports.
    fn disconnect_status(&self) -> (u16, String) {
        match self {
            Self::ByClient { status, reason } => (*status, reason.clone()),
            Self::ByGateway { code, reason, .. } => (*code, (*reason).to_owned()),
            Self::Abnormal => (1006, "Connection closed abnormally".to_owned()),
        }
    }
}

/// How long a connection opened at `connected_at` may still live at `now` (Unix ms): the
/// maximum lifetime counts from the handshake, as in API Gateway, not from the upgrade.
fn lifetime_left(connected_at: u64, now: u64, max: Duration) -> Duration {
    max.saturating_sub(Duration::from_millis(now.saturating_sub(connected_at)))
}

pub(super) async fn run_connection<F: Invoke + Clone + 'static>(
    shared: Arc<Shared<F>>,
    connection: Arc<Connection>,
    mut socket: Socket,
    mut queue: mpsc::Receiver<Message>,
    mut close_requests: watch::Receiver<Option<CloseRequest>>,
) {
    let id = connection.info.connection_id.clone();
    let lifetime = tokio::time::sleep(lifetime_left(
        connection.info.connected_at,
        clock::now_ms(),
        shared.config.max_connection_duration,
    ));
    tokio::pin!(lifetime);
    let close_request = |requests: &mut watch::Receiver<Option<CloseRequest>>| {
        let (code, reason) = requests.borrow_and_update().unwrap_or((1001, "Going away"));
        Ending::by_gateway(code, reason)
    };
    let ending = loop {
        let idle_for = Duration::from_millis(
            clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed)),
        );
        let idle_left = shared.config.idle_timeout.saturating_sub(idle_for);
        tokio::select! {
            frame = socket.next() => match frame {
                None => break Ending::Abnormal,
                Some(Ok(Message::Text(text))) => route(&shared, &connection, text.as_bytes(), false),
                Some(Ok(Message::Binary(bytes))) => route(&shared, &connection, &bytes, true),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    connection.last_active.store(clock::now_ms(), Ordering::Relaxed);
                }
                Some(Ok(Message::Close(frame))) => {
                    break match frame {
                        Some(f) => Ending::ByClient { status: u16::from(f.code), reason: f.reason.to_string() },
                        None => Ending::ByClient { status: 1005, reason: "Client closed without a status".to_owned() },
                    };
                }
                Some(Err(tungstenite::Error::Capacity(err))) => {
                    debug!(connection_id = id, error = %err, "frame over the limit");
                    break Ending::ByGateway { code: 1009, reason: "Message too big", unreadable: true };
                }
                Some(Err(err)) => {
                    debug!(connection_id = id, error = %err, "socket read failed");
                    break Ending::Abnormal;
                }
            },
            message = queue.recv() => {
                // The sender lives in `connection`, so the queue never ends here.
                let Some(message) = message else { break Ending::by_gateway(1001, "Going away") };
                // A client that does not read must not hold a DELETE or shutdown back.
                tokio::select! {
                    sent = socket.send(message) => if sent.is_err() { break Ending::Abnormal },
                    _ = close_requests.changed() => break close_request(&mut close_requests),
                    _ = shared.stopping.cancelled() => break Ending::by_gateway(1001, "Going away"),
                }
            }
            _ = close_requests.changed() => break close_request(&mut close_requests),
            _ = shared.stopping.cancelled() => break Ending::by_gateway(1001, "Going away"),
            _ = tokio::time::sleep(idle_left) => {
                if clock::now_ms().saturating_sub(connection.last_active.load(Ordering::Relaxed))
                    >= shared.config.idle_timeout.as_millis() as u64
                {
                    break Ending::by_gateway(1001, "Going away");
                }
            }
            _ = &mut lifetime => break Ending::by_gateway(1001, "Going away"),
        }
    };
    // From here on the Management API answers 410: nothing it accepts could be sent.
    shared.detach(&id);
    queue.close();
    let _ = tokio::time::timeout(
        CLOSE_TIMEOUT,
        close_handshake(&mut socket, &mut queue, &ending),
    )
    .await;
    drop(socket);
    let (status, reason) = ending.disconnect_status();
    debug!(connection_id = id, status, "socket closed");
    finish(&shared, &connection, status, &reason).await;
}

/// Completes the closing handshake so that the client sees a clean close, then closes the
/// TCP connection from this side (as RFC 6455 asks of servers).
async fn close_handshake(
    socket: &mut Socket,
    queue: &mut mpsc::Receiver<Message>,
    ending: &Ending,
) {
    match ending {
        Ending::Abnormal => return,
        Ending::ByClient { .. } => {
            // tungstenite only queues its reply to the client's close frame; reading on
            // writes it, and then ends the stream.
            while let Some(Ok(_)) = socket.next().await {}
        }
        Ending::ByGateway {
            code,
            reason,
            unreadable,
        } => {
            // Frames the Management API accepted before the close go out ahead of it.
            while let Ok(message) = queue.try_recv() {
                if socket.feed(message).await.is_err() {
                    return;
                }
            }
            let frame = CloseFrame {
                code: (*code).into(),
                reason: (*reason).into(),
            };
            if socket.send(Message::Close(Some(frame))).await.is_err() {
                return;
            }
            if *unreadable {
                // The client's close reply sits behind bytes that cannot be parsed: end
                // the write side so that the client finishes the close, and read whatever
                // arrives until it hangs up (closing with unread data would reset the
                // connection before the client has read the close frame).
                let _ = socket.get_mut().shutdown().await;
                let mut scratch = vec![0u8; 16 * 1024];
                while socket
                    .get_mut()
                    .read(&mut scratch)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
                return;
            }
            // Until the client's close reply: then tungstenite ends the stream.
            while let Some(Ok(_)) = socket.next().await {}
        }
    }
    let _ = socket.get_mut().shutdown().await;
}

/// Runs `$disconnect` for a connection whose socket is closed; called once per connection.
pub(super) async fn finish<F: Invoke + Clone + 'static>(
    shared: &Shared<F>,
    connection: &Connection,
    status: u16,
    reason: &str,
) {
    shared.detach(&connection.info.connection_id);
    info!(
        connection_id = connection.info.connection_id,
        status, reason, "disconnected"
    );
    if let Some(function) = shared.routes.routes.get("$disconnect") {
        let event = events::disconnect(
            &connection.info,
            status,
            reason,
            connection.authorizer.as_ref(),
            clock::now_ms(),
        );
        if let Err(err) = function.invoke(event).await {
            warn!(connection_id = connection.info.connection_id, error = %err, "$disconnect failed");
        }
    }
    shared.stats.disconnected.fetch_add(1, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lifetime_counts_from_the_handshake() {
        let max = Duration::from_secs(10);
        assert_eq!(lifetime_left(1_000, 1_000, max), max);
        assert_eq!(lifetime_left(1_000, 4_000, max), Duration::from_secs(7));
        assert_eq!(
            lifetime_left(1_000, 20_000, max),
            Duration::ZERO,
            "already over"
        );
        assert_eq!(lifetime_left(5_000, 1_000, max), max, "clock went back");
    }
}
