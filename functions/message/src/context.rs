//! What every action is given: the [`App`] shared by all invocations (store, settings,
//! the door memory, and the retry policy for replies derived from them) and the
//! [`Sender`] of the frame being handled. It sits apart from the handler and the actions so both can use it
//! without importing each other.

use deltacast::auth::Identity;
use deltacast::config::Settings;
use deltacast::push::RetryPolicy;
use deltacast::store::{DoorMemory, Store};

/// What every invocation shares: the store and the settings.
pub struct App {
    /// The table.
    pub store: Store,
    /// Limits and lifetimes.
    pub settings: Settings,
    /// What this instance remembers of channels over their limit (`deltacast::store::Door`).
    pub doors: DoorMemory,
}

impl App {
    /// The retry policy for replies (`PUSH_RETRY_ATTEMPTS`, `PUSH_RETRY_BASE_MS`).
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy::from_settings(&self.settings)
    }
}

/// Who sent a frame, and when.
pub struct Sender<'a> {
    /// API Gateway's connection id.
    pub connection_id: &'a str,
    /// The identity the authorizer verified at `$connect`.
    pub identity: Identity,
    /// When the connection opened, Unix ms.
    pub connected_at: u64,
    /// When API Gateway received the frame (`requestTimeEpoch`), Unix ms.
    pub received_at: u64,
    /// How hard to try each reply.
    pub retry: RetryPolicy,
}
