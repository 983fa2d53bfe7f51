//! The live poll: voters vote once each on one state channel (`inc` of their option's
//! tally and of their own marker, id `vote`), some send their vote again (a duplicate
//! attempt, which must be answered `duplicate`), and any vote not answered in time is
//! sent again with the same id (a retry). Viewers hold the document as a client does (the
//! snapshot, then each patch or newer snapshot; a version gap asks for `state`), and
//! note when each voter's
//! marker first reaches them: the time from a vote's ack to a viewer's state including
//! it. At the end the tally must equal the number of votes acked, exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

use crate::percentile::nearest_rank;
use crate::socket::{Socket, connect_all};

/// The poll's channel.
pub const CHANNEL: &str = "state:poll";
/// Options voters choose among.
const OPTIONS: usize = 4;
/// How long a voter waits for an answer before sending its vote again, and how many
/// times it sends it at most.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
const MAX_SENDS: u32 = 5;
/// Every how many voters one sends its vote again once answered (a duplicate attempt),
/// and one sends it twice at once (a retry before the first answer).
const DUPLICATE_EVERY: usize = 5;
const RETRY_EVERY: usize = 10;
/// Votes in flight at once: a crowd voting together, without queueing so many frames at
/// the gateway that they wait out the answer time and all come again.
const IN_FLIGHT: usize = 64;
/// How long viewers may take to see every acked vote once voting is over.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// What the poll measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PollFigures {
    pub voters: usize,
    pub viewers: usize,
    pub votes_acked: u64,
    pub votes_unanswered: u64,
    pub retries: u64,
    pub duplicate_attempts: u64,
    pub duplicates_rejected: u64,
    pub errors: u64,
    pub vote_seconds: f64,
    pub votes_acked_per_second: f64,
    pub final_tally: u64,
    pub final_markers: u64,
    pub tally_exact: bool,
    pub viewers_complete: usize,
    pub patches_per_viewer_mean: f64,
    pub frames_per_viewer_per_second_mean: f64,
    pub frames_per_viewer_per_second_max: f64,
    pub version_gaps: u64,
    pub ack_to_view_p50_ms: f64,
    pub ack_to_view_p99_ms: f64,
    pub ack_to_view_samples: usize,
}

/// What one viewer saw.
#[derive(Default)]
struct Viewer {
    patches: u64,
    gaps: u64,
    first_patch: Option<Instant>,
    last_patch: Option<Instant>,
    /// Voter index → when its marker arrived.
    seen: HashMap<usize, Instant>,
    complete: bool,
}

/// Runs the poll on the stack at `url`.
pub async fn run(
    url: &str,
    secret: &str,
    voters: usize,
    viewers: usize,
) -> Result<PollFigures, String> {
    eprintln!("  live_state: connecting {viewers} viewers and {voters} voters...");
    let mut watching = connect_all(url, secret, "viewer", viewers).await?;
    let mut views = Vec::new();
    for socket in &mut watching {
        socket
            .send(&json!({"action": "subscribe", "channel": CHANNEL}))
            .await?;
        let state = socket
            .next_of("state", Duration::from_secs(30))
            .await
            .ok_or("a viewer got no snapshot")?;
        views.push(state);
    }
    let voting = connect_all(url, secret, "voter", voters).await?;
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let viewer_tasks: Vec<_> = watching
        .into_iter()
        .zip(views)
        .map(|(socket, snapshot)| tokio::spawn(view(socket, snapshot, target.clone())))
        .collect();

    eprintln!("  live_state: voting...");
    let started = Instant::now();
    let outcomes: Vec<(Vote, Socket)> = futures::stream::iter(voting.into_iter().enumerate())
        .map(|(i, socket)| vote(socket, i))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    // Closed once every vote is in, so that their `$disconnect`s do not load the vote.
    let (outcomes, voting): (Vec<Vote>, Vec<Socket>) = outcomes.into_iter().unzip();
    for socket in voting {
        socket.close().await;
    }
    let mut figures = PollFigures {
        voters,
        viewers,
        ..PollFigures::default()
    };
    let mut acks: HashMap<usize, Instant> = HashMap::new();
    let mut last_ack = started;
    for outcome in &outcomes {
        figures.retries += u64::from(outcome.sends.saturating_sub(1));
        figures.errors += outcome.errors;
        figures.duplicate_attempts += u64::from(outcome.duplicate_attempt);
        figures.duplicates_rejected += u64::from(outcome.duplicate_rejected);
        match outcome.acked {
            Some(at) => {
                acks.insert(outcome.voter, at);
                last_ack = last_ack.max(at);
            }
            None => figures.votes_unanswered += 1,
        }
    }
    figures.votes_acked = acks.len() as u64;
    figures.vote_seconds = last_ack.duration_since(started).as_secs_f64();
    figures.votes_acked_per_second = figures.votes_acked as f64 / figures.vote_seconds.max(1e-3);
    target.store(figures.votes_acked, Ordering::SeqCst);

    eprintln!(
        "  live_state: waiting for viewers to see all {} votes...",
        figures.votes_acked
    );
    let mut seen_viewers = Vec::new();
    for task in viewer_tasks {
        seen_viewers.push(task.await.map_err(|e| e.to_string())?);
    }
    let mut latencies = Vec::new();
    let mut rates = Vec::new();
    for (viewer, _) in &seen_viewers {
        figures.version_gaps += viewer.gaps;
        figures.viewers_complete += usize::from(viewer.complete);
        figures.patches_per_viewer_mean += viewer.patches as f64 / viewers as f64;
        if let (Some(first), Some(last)) = (viewer.first_patch, viewer.last_patch) {
            // The rate between the first patch and the last: intervals over their time.
            let window = last.duration_since(first).as_secs_f64();
            if viewer.patches >= 2 && window > 0.0 {
                rates.push((viewer.patches - 1) as f64 / window);
            }
        }
        for (voter, seen) in &viewer.seen {
            if let Some(acked) = acks.get(voter) {
                let ms = seen.saturating_duration_since(*acked).as_secs_f64() * 1000.0;
                latencies.push(ms);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    figures.ack_to_view_samples = latencies.len();
    figures.ack_to_view_p50_ms = nearest_rank(&latencies, 0.50).unwrap_or(f64::NAN);
    figures.ack_to_view_p99_ms = nearest_rank(&latencies, 0.99).unwrap_or(f64::NAN);
    figures.frames_per_viewer_per_second_mean =
        rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    figures.frames_per_viewer_per_second_max = rates.iter().copied().fold(0.0, f64::max);

    // The tally, read once more from the server.
    let (_, mut socket) = seen_viewers.pop().ok_or("no viewer")?;
    socket
        .send(&json!({"action": "state", "channel": CHANNEL}))
        .await?;
    let state = socket
        .next_of("state", Duration::from_secs(30))
        .await
        .ok_or("no final state")?;
    let sum = |v: &Value| -> u64 {
        v.as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0)
    };
    figures.final_tally = sum(&state["value"]["tally"]);
    figures.final_markers = sum(&state["value"]["voters"]);
    let markers = state["value"]["voters"]
        .as_object()
        .map_or(0, |m| m.len() as u64);
    figures.tally_exact = figures.final_tally == figures.votes_acked
        && figures.final_markers == figures.votes_acked
        && markers == figures.votes_acked;
    socket.close().await;
    for (_, socket) in seen_viewers {
        socket.close().await;
    }
    Ok(figures)
}

/// What one voter did.
struct Vote {
    voter: usize,
    sends: u32,
    acked: Option<Instant>,
    errors: u64,
    duplicate_attempt: bool,
    duplicate_rejected: bool,
}

/// Votes once (sending again until answered), then maybe once more as a duplicate.
async fn vote(mut socket: Socket, voter: usize) -> (Vote, Socket) {
    let frame = json!({"action": "update", "channel": CHANNEL, "id": "vote", "ops": [
        {"op": "inc", "path": format!("/tally/o{}", voter % OPTIONS), "by": 1},
        {"op": "inc", "path": format!("/voters/v{voter}"), "by": 1},
    ]});
    let mut outcome = Vote {
        voter,
        sends: 0,
        acked: None,
        errors: 0,
        duplicate_attempt: false,
        duplicate_rejected: false,
    };
    // Every tenth voter (offset from the duplicate attempts) sends its vote twice at once,
    // as a client does that retries before the first answer came: counted once.
    if voter % RETRY_EVERY == 1 {
        outcome.sends += 1;
        let _ = socket.send(&frame).await;
    }
    while outcome.acked.is_none() && outcome.sends < MAX_SENDS {
        outcome.sends += 1;
        if socket.send(&frame).await.is_err() {
            break;
        }
        let deadline = Instant::now() + ANSWER_WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Some((at, answer)) = socket.next(left).await else {
                break;
            };
            match answer["type"].as_str() {
                Some("updated") => {
                    outcome.acked = Some(at);
                    break;
                }
                // `internal` (or a rate limit): the same id again is safe.
                Some("error") => {
                    outcome.errors += 1;
                    break;
                }
                _ => {}
            }
        }
    }
    if outcome.acked.is_some() && voter.is_multiple_of(DUPLICATE_EVERY) {
        outcome.duplicate_attempt = true;
        if socket.send(&frame).await.is_ok()
            && let Some(answer) = socket.next_of("updated", ANSWER_WAIT).await
        {
            outcome.duplicate_rejected = answer["duplicate"] == true;
        }
    }
    (outcome, socket)
}

/// Holds the document as a client does until it has `target` votes (or time runs out).
async fn view(mut socket: Socket, snapshot: Value, target: Arc<AtomicU64>) -> (Viewer, Socket) {
    let mut seen = Viewer::default();
    let mut version = snapshot["version"].as_u64().unwrap_or(0);
    let mut value = snapshot["value"].clone();
    let mut settle_deadline: Option<Instant> = None;
    loop {
        let goal = target.load(Ordering::SeqCst);
        if goal != u64::MAX {
            let total: u64 = value["tally"]
                .as_object()
                .map(|m| m.values().filter_map(Value::as_u64).sum())
                .unwrap_or(0);
            if total >= goal {
                seen.complete = total == goal;
                break;
            }
            let deadline = *settle_deadline.get_or_insert_with(|| Instant::now() + SETTLE_LIMIT);
            if Instant::now() > deadline {
                break;
            }
        }
        let Some((at, frame)) = socket.next(Duration::from_millis(200)).await else {
            continue;
        };
        match frame["type"].as_str() {
            Some("patch") => {
                let v = frame["version"].as_u64().unwrap_or(0);
                if v <= version {
                    continue;
                }
                seen.patches += 1;
                seen.first_patch.get_or_insert(at);
                seen.last_patch = Some(at);
                if v != version + 1 {
                    seen.gaps += 1;
                    let _ = socket
                        .send(&json!({"action": "state", "channel": CHANNEL}))
                        .await;
                    continue;
                }
                json_patch::merge(&mut value, &frame["patch"]);
                version = v;
                note(&mut seen, &frame["patch"]["voters"], at);
            }
            // A snapshot: asked for after a gap, or sent by a fan-out that fell behind
            // instead of several patches. A frame either way.
            Some("state") => {
                let v = frame["version"].as_u64().unwrap_or(0);
                if v > version {
                    seen.patches += 1;
                    seen.first_patch.get_or_insert(at);
                    seen.last_patch = Some(at);
                    note(&mut seen, &frame["value"]["voters"], at);
                    value = frame["value"].clone();
                    version = v;
                }
            }
            _ => {}
        }
    }
    (seen, socket)
}

/// Notes the voters whose markers `voters` holds, the first time each is seen.
fn note(viewer: &mut Viewer, voters: &Value, at: Instant) {
    if let Some(voters) = voters.as_object() {
        for key in voters.keys() {
            if let Some(i) = key.strip_prefix('v').and_then(|i| i.parse().ok()) {
                viewer.seen.entry(i).or_insert(at);
            }
        }
    }
}
