//! Presence under a crowd: members enter one channel's presence within a few seconds
//! while watchers hold its member list (the pages of `members`, then each
//! `presence_patch`; a `resync` reads the list again); then all leave, half with `leave`
//! and half by closing their connection. Figures: frames per watcher, the time until
//! every watcher's list is complete, and the list once all have left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use crate::socket::{Socket, connect_all};

/// The channel.
const CHANNEL: &str = "room:crowd";
/// How long watchers may take to see the crowd complete, or gone.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// What the run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PresenceFigures {
    pub members: usize,
    pub watchers: usize,
    pub enter_seconds: f64,
    pub entered: usize,
    pub watchers_complete: usize,
    pub complete_after_ms: f64,
    pub frames_per_watcher_mean: f64,
    pub frames_per_watcher_max: u64,
    pub frames_until_complete_max: u64,
    pub resyncs: u64,
    pub watchers_empty: usize,
    pub empty_after_ms: f64,
    pub members_after_leave: usize,
}

/// One watcher's view and what it saw.
#[derive(Default)]
struct Watcher {
    version: u64,
    members: BTreeMap<String, Value>,
    frames: u64,
    frames_until_complete: u64,
    resyncs: u64,
    complete_at: Option<Instant>,
    empty_at: Option<Instant>,
}

/// Runs it on the stack at `url`.
pub async fn run(
    url: &str,
    secret: &str,
    members: usize,
    watchers: usize,
    enter_seconds: f64,
) -> Result<PresenceFigures, String> {
    eprintln!("  live_state: connecting {watchers} watchers and {members} members...");
    let mut watching = connect_all(url, secret, "watcher", watchers).await?;
    let mut views = Vec::new();
    for socket in &mut watching {
        socket
            .send(&json!({"action": "subscribe", "channel": CHANNEL, "presence": true}))
            .await?;
        socket
            .next_of("subscribed", Duration::from_secs(30))
            .await
            .ok_or("a watcher was not subscribed")?;
        let mut view = Watcher::default();
        load(socket, &mut view).await?;
        views.push(view);
    }
    let crowd = connect_all(url, secret, "member", members).await?;
    // 0: entering; 1: leaving.
    let phase = Arc::new(AtomicUsize::new(0));
    // Watchers whose list is complete.
    let complete = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = watching
        .into_iter()
        .zip(views)
        .map(|(socket, view)| {
            let shared = (phase.clone(), complete.clone());
            tokio::spawn(watch(socket, view, members, shared))
        })
        .collect();

    eprintln!("  live_state: {members} members entering within {enter_seconds} s...");
    let started = Instant::now();
    let gap = Duration::from_secs_f64(enter_seconds / members.max(1) as f64);
    let mut entering = Vec::new();
    for (i, mut socket) in crowd.into_iter().enumerate() {
        let at = started + gap * i as u32;
        entering.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let entered = socket
                .send(&json!({"action": "presence", "channel": CHANNEL, "op": "enter", "data": {"n": i}}))
                .await
                .is_ok()
                && socket.next_of("presence", Duration::from_secs(30)).await.is_some();
            (socket, entered)
        }));
    }
    let mut crowd = Vec::new();
    let mut figures = PresenceFigures {
        members,
        watchers,
        ..PresenceFigures::default()
    };
    for task in entering {
        let (socket, entered) = task.await.map_err(|e| e.to_string())?;
        figures.entered += usize::from(entered);
        crowd.push(socket);
    }
    figures.enter_seconds = started.elapsed().as_secs_f64();
    // Wait until every watcher is complete (or out of time), then everyone leaves.
    let deadline = Instant::now() + SETTLE_LIMIT;
    while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        if complete.load(Ordering::SeqCst) >= watchers {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("  live_state: everyone leaves...");
    phase.store(1, Ordering::SeqCst);
    let leaving = Instant::now();
    for (i, mut socket) in crowd.into_iter().enumerate() {
        if i.is_multiple_of(2) {
            let _ = socket
                .send(&json!({"action": "presence", "channel": CHANNEL, "op": "leave"}))
                .await;
            let _ = socket.next_of("presence", Duration::from_secs(30)).await;
        }
        socket.close().await;
    }
    let mut frames = Vec::new();
    let mut last = None;
    for task in tasks {
        let (view, socket) = task.await.map_err(|e| e.to_string())?;
        frames.push(view.frames);
        figures.frames_until_complete_max = figures
            .frames_until_complete_max
            .max(view.frames_until_complete);
        figures.resyncs += view.resyncs;
        if let Some(at) = view.complete_at {
            figures.watchers_complete += 1;
            let ms = at.saturating_duration_since(started).as_secs_f64() * 1000.0;
            figures.complete_after_ms = figures.complete_after_ms.max(ms);
        }
        if let Some(at) = view.empty_at {
            figures.watchers_empty += 1;
            let ms = at.saturating_duration_since(leaving).as_secs_f64() * 1000.0;
            figures.empty_after_ms = figures.empty_after_ms.max(ms);
        }
        last = Some(socket);
    }
    figures.frames_per_watcher_mean =
        frames.iter().sum::<u64>() as f64 / frames.len().max(1) as f64;
    figures.frames_per_watcher_max = frames.iter().copied().max().unwrap_or(0);
    if let Some(mut socket) = last {
        let mut view = Watcher::default();
        load(&mut socket, &mut view).await?;
        figures.members_after_leave = view.members.len();
        socket.close().await;
    }
    Ok(figures)
}

/// Reads every page of the member list into `view`.
async fn load(socket: &mut Socket, view: &mut Watcher) -> Result<(), String> {
    view.members.clear();
    let mut after: Option<String> = None;
    loop {
        let mut frame = json!({"action": "members", "channel": CHANNEL, "limit": 1000});
        if let Some(after) = &after {
            frame["after"] = json!(after);
        }
        socket.send(&frame).await?;
        let page = socket
            .next_of("members", Duration::from_secs(30))
            .await
            .ok_or("no members page")?;
        // The first page's version: later changes are applied after paging.
        if after.is_none() {
            view.version = page["version"].as_u64().unwrap_or(0);
        }
        for member in page["members"].as_array().into_iter().flatten() {
            let id = member["member"].as_str().unwrap_or_default().to_owned();
            view.members.insert(id, member.clone());
        }
        match page["next"].as_str() {
            Some(next) if page["more"] == true => after = Some(next.to_owned()),
            _ => return Ok(()),
        }
    }
}

/// Keeps a watcher's list until the crowd is complete, then until it is gone.
async fn watch(
    mut socket: Socket,
    mut view: Watcher,
    members: usize,
    (phase, complete): (Arc<AtomicUsize>, Arc<AtomicUsize>),
) -> (Watcher, Socket) {
    let deadline = Instant::now() + SETTLE_LIMIT * 2;
    while Instant::now() < deadline {
        if view.complete_at.is_some()
            && phase.load(Ordering::SeqCst) >= 1
            && view.members.is_empty()
        {
            break;
        }
        let Some((at, frame)) = socket.next(Duration::from_millis(200)).await else {
            continue;
        };
        if frame["type"] != "presence_patch" {
            continue;
        }
        let version = frame["version"].as_u64().unwrap_or(0);
        if version <= view.version {
            continue;
        }
        view.frames += 1;
        let from = frame["from"].as_u64().unwrap_or(u64::MAX);
        if frame["resync"] == true || from > view.version {
            view.resyncs += 1;
            if load(&mut socket, &mut view).await.is_err() {
                break;
            }
        } else {
            for (id, member) in frame["patch"].as_object().into_iter().flatten() {
                if member.is_null() {
                    view.members.remove(id);
                } else {
                    view.members.insert(id.clone(), member.clone());
                }
            }
            view.version = version;
        }
        if view.complete_at.is_none() && view.members.len() >= members {
            view.complete_at = Some(at);
            view.frames_until_complete = view.frames;
            complete.fetch_add(1, Ordering::SeqCst);
        }
        if view.complete_at.is_some()
            && phase.load(Ordering::SeqCst) >= 1
            && view.members.is_empty()
        {
            view.empty_at = Some(at);
        }
    }
    (view, socket)
}
