//! The settings of a trigger beyond the template's: how often to poll, where discarded
//! batches go, fault injection and the region the function sees. They are the stack's
//! choices, not Lambda's, so they live apart from the template's `StreamTrigger`.

use std::path::PathBuf;
use std::time::Duration;

/// How the local stack polls and delivers, beyond what the template says.
#[derive(Clone, Debug, PartialEq)]
pub struct PollOptions {
    /// Pause between GetRecords calls on a shard that returned nothing (default 100 ms);
    /// also the first retry's backoff.
    pub poll_interval: Duration,
    /// JSON-lines file where batches that were given up on are recorded.
    pub on_failure_path: PathBuf,
    /// Fault injection: probability that a batch is invoked twice (models at-least-once
    /// delivery); default 0.
    pub duplicate_batch_rate: f64,
    /// The region the function sees in `awsRegion` (default `us-east-1`).
    pub region: String,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            on_failure_path: std::env::temp_dir().join("deltacast-stream-failures.jsonl"),
            duplicate_batch_rate: 0.0,
            region: "us-east-1".to_owned(),
        }
    }
}
