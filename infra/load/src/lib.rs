//! # deltacast-load: the load generator
//!
//! Opens N WebSocket connections to a deltacast endpoint (the local stack or a deployed
//! one), subscribes them across K channels, publishes at an aggregate rate from P of them,
//! disconnects and reconnects a fraction of them while publishes keep flowing, and at the
//! end checks, per client and channel, that every seq from the client's starting point to
//! the channel's final head was applied exactly once and in order. [`run`] returns a
//! [`LoadReport`]; the `deltacast-load` binary (`src/main.rs`) is a thin CLI over it.
//!
//! ## Phases
//! 1. **Connecting**: every client connects (at most `connect_concurrency` handshakes at
//!    once, retrying refused or failed handshakes with backoff) and subscribes to its
//!    channels. Publishing starts when all are subscribed, or at `connect_timeout`.
//! 2. **Publishing**: publisher `p` of `P` sends the publishes whose global index `g` is
//!    `p, p + P, p + 2P, ...`, to channel `g mod K`, the `g`-th one due `g / rate` seconds
//!    after the start. Churning clients close their socket at random points of this
//!    phase, stay away a random while and come back.
//! 3. **Draining**: no new publishes; publishers keep retrying until every publish is acked.
//! 4. **Settling**: the final head of each channel is the highest acked seq; every client
//!    must reach it (asking `history` for what is missing) within `settle_timeout`.
//! 5. **Stopping**: clients close and hand back what they saw; the report is computed.
//!
//! Every phase has a deadline and the whole run has one (`max_run_time`), so a run always
//! ends by itself; a deadline that passes makes the report not ok.
//!
//! ## The client algorithm
//! Each simulated client is one task owning one socket, and behaves as the README tells
//! an app to:
//! - It **subscribes** with no `since` the first time; the `seq` of that first
//!   `subscribed` is its starting point for the channel. Later (after a reconnect) it
//!   subscribes with `since` = the last applied seq and the channel's `epoch`.
//! - Deltas that arrive **before `subscribed`** (catch-up and live ones racing it) are held
//!   in the channel's buffer, not applied.
//! - With `coalesce`, it subscribes with `"coalesce": true` and takes each `deltas` frame
//!   as the `delta` frames of its elements, in order.
//! - Deltas are **applied strictly in seq order from the buffer**: a seq at or below the
//!   last applied one, or already buffered, is dropped and counted in
//!   `duplicates_received`.
//! - A **gap** (the client knows of a seq beyond `applied + 1`, from a buffered delta or a
//!   `subscribed`/`history` head, and `applied + 1` has not come for `gap_timeout`) is
//!   filled with `history` from the last applied seq, page after page.
//! - `recovered: false` is counted in `not_recovered` (a failure); the client then fills
//!   what it can through `history`, or starts over if the epoch changed.
//! - A subscribe with `since` that goes unanswered `catch_up_attempts` times in a row is
//!   replaced by one without `since`, and the gap is filled with `history`
//!   (`catch_up_fallbacks`, a warning).
//! - Requests whose reply does not come within `request_timeout` are sent again: replies
//!   travel through the Management API and can be lost, and a function may crash (the
//!   gateway then sends `{"message": "Internal server error", ...}` without a `type`, which
//!   cannot be tied to a request: it is counted, and the reply timeout does the rest).
//!   Reply timeouts double on each retry, so a slow server is not buried in retries.
//! - **Publishers** give every publish a unique id (`<run>.<publisher>.<n>`) and put their
//!   send time and that id in `data`. A publish is retried with the same id on `internal`,
//!   on `in_flight` (after its `retryAfterMs`), on a missing ack, and after a reconnect,
//!   which idempotency makes safe; `rate_limited` pauses the publisher for its
//!   `retryAfterMs` or its own backoff, whichever is longer (the backoff doubles with
//!   each `rate_limited` and an ack resets it). Acks are asynchronous and may come
//!   twice for one publish: the first counts. At most `publish_window` publishes are
//!   unacknowledged at once. (Publishes to one channel race for its next seq, so more
//!   than a couple in flight per channel add retries and latency, not throughput.)
//!
//! ## What is checked
//! - Per client and channel: the applied seqs are exactly `start + 1 ..= head`, each once,
//!   in order (`lost`, `duplicates_after_dedupe`, `out_of_order_applied`).
//! - Across everybody: each `(channel, seq)` carries one message id, whoever saw it (every
//!   delta, history entry and ack is compared against the first sighting), and no message
//!   id was stored under two seqs (`content_mismatches`, `duplicates_stored`); each channel's
//!   head equals the number of distinct publishes acked on it (`unexplained_seqs`).
//! - How each applied seq first arrived: pushed by the fan-out, in the catch-up of a
//!   resubscribe, or from `history` ([`DeliveryPaths`]). A seq the server owed a live
//!   connection (above its `subscribed` head, or above `since` after `recovered: true`)
//!   that only `history` delivered is a `missed_pushes` failure: `history` hides a lost
//!   push from `lost`, not from this check.
//! - Latency is measured from the first send of a publish to the first receipt of its
//!   delta by each subscriber that was live at the time (catch-up and history deltas are
//!   not counted). Both ends run in this process, so the clocks agree.
//!
//! ## Costs
//! One task and one socket per client, with small WebSocket buffers (8 KiB reads instead of
//! tungstenite's 128 KiB), no per-delta allocation beyond the parse, a bounded window of
//! unacknowledged publishes, and latencies batched into a few sharded histograms: 10,000
//! connections fit in one process (about 25 KiB each in a debug build; see the ignored
//! test `ten_thousand_connections_in_one_process` in `tests/load_test.rs`).
//!
//! ## Layout
//! - `config.rs`: [`LoadConfig`], [`TokenSource`], the bounds and [`LoadError`].
//! - `plan.rs`: the validated configuration: run id, channel names, quotas, deadlines, URLs.
//! - `state.rs`: what the clients share: phase, channel heads and id sightings.
//! - `client/`: one simulated client: `session.rs` (connect, reconnect, one connection),
//!   `requests.rs` (what it sends), `receive.rs` (what it does with each frame),
//!   `retry.rs` (what it does with a refused publish), `state.rs`.
//! - `frame.rs`: the server frames it parses; `stats.rs`: per-client counters.
//! - `run.rs`: the phases; `verify.rs`: the end-of-run checks; `latency.rs`: histograms.
//! - `report.rs`: [`LoadReport`], its verdict and its text form.

mod client;
mod config;
mod frame;
mod latency;
mod plan;
mod report;
mod run;
mod state;
mod stats;
mod verify;

pub use config::{
    LoadConfig, LoadError, MAX_CHANNELS, MAX_CHANNELS_PER_CONNECTION, MAX_CONNECTIONS,
    MAX_PAYLOAD_BYTES, MAX_PUBLISHES, MAX_RATE, MAX_RUN_TIME, TokenSource,
};
pub use report::{
    BehindClient, DeliveryPaths, LatencyMs, LoadReport, MAX_BEHIND_LISTED, PhaseSeconds, Throughput,
};
pub use run::run;
