//! A [`Push`] that records frames instead of sending them, and can play a gone, throttled
//! or failing connection. Handler tests use it to see exactly what each connection would
//! receive; the end-to-end tests use the real Management API of the local gateway.

use std::collections::HashMap;
use std::sync::Mutex;

use deltacast::push::{Push, PushError};
use serde_json::Value;

/// Records every frame per connection.
#[derive(Default)]
pub struct RecordingPush {
    frames: Mutex<Vec<(String, String)>>,
    scripted: Mutex<HashMap<String, Vec<PushError>>>,
    gone: Mutex<Vec<String>>,
    attempts: Mutex<HashMap<String, usize>>,
}

impl RecordingPush {
    /// A recorder where every connection accepts every frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `connection_id` answer 410 from now on.
    pub fn set_gone(&self, connection_id: &str) {
        self.gone.lock().unwrap().push(connection_id.to_owned());
    }

    /// Makes the next posts to `connection_id` fail with `errors`, in order.
    pub fn fail_next(&self, connection_id: &str, errors: Vec<PushError>) {
        self.scripted
            .lock()
            .unwrap()
            .insert(connection_id.to_owned(), errors);
    }

    /// The frames delivered to `connection_id`, parsed, in order.
    pub fn frames(&self, connection_id: &str) -> Vec<Value> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == connection_id)
            .map(|(_, f)| serde_json::from_str(f).expect("frames are JSON"))
            .collect()
    }

    /// The frames delivered to `connection_id`, as sent, in order.
    pub fn texts(&self, connection_id: &str) -> Vec<String> {
        self.frames
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == connection_id)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// How many posts were attempted to `connection_id`, delivered or not.
    pub fn attempts(&self, connection_id: &str) -> usize {
        self.attempts
            .lock()
            .unwrap()
            .get(connection_id)
            .copied()
            .unwrap_or(0)
    }

    /// Forgets the frames recorded so far.
    pub fn clear(&self) {
        self.frames.lock().unwrap().clear();
    }
}

impl Push for RecordingPush {
    async fn post(&self, connection_id: &str, frame: &str) -> Result<(), PushError> {
        *self
            .attempts
            .lock()
            .unwrap()
            .entry(connection_id.to_owned())
            .or_default() += 1;
        if self.gone.lock().unwrap().iter().any(|c| c == connection_id) {
            return Err(PushError::Gone);
        }
        if let Some(errors) = self.scripted.lock().unwrap().get_mut(connection_id)
            && !errors.is_empty()
        {
            return Err(errors.remove(0));
        }
        self.frames
            .lock()
            .unwrap()
            .push((connection_id.to_owned(), frame.to_owned()));
        Ok(())
    }
}
