//! Presence through the local stack: entering, updating and leaving, watchers' member
//! lists kept by `members` pages and `presence_patch` frames, members leaving with their
//! connection (closed, or vanished without `$disconnect`), limits and refusals.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use deltacast_local::runtime::FunctionFaults;
use deltacast_tests::all_items;
use deltacast_tests::stack::{Client, TestStack, start_stack, start_stack_with};
use serde_json::{Value, json};

/// A watcher's view of a channel's members, kept as a client keeps it: the pages of
/// `members` from the first page's version, then every `presence_patch` that leads on from
/// the version held (patches that arrive while paging are applied after it, in order).
#[derive(Debug, Default)]
struct Members {
    version: u64,
    members: BTreeMap<String, Value>,
    patches: usize,
}

impl Members {
    /// Reads every page of the member list.
    async fn load(client: &mut Client, channel: &str) -> Self {
        let mut view = Members::default();
        let mut after: Option<String> = None;
        loop {
            let mut frame = json!({"action": "members", "channel": channel, "limit": 2});
            if let Some(after) = &after {
                frame["after"] = json!(after);
            }
            let page = client.request(frame, "members").await;
            // The first page's version: the changes from it on are applied after paging
            // (each replaces its member, so one a later page shows already is harmless).
            if after.is_none() {
                view.version = page["version"].as_u64().expect("a version");
            }
            for member in page["members"].as_array().expect("members") {
                let mut member = member.clone();
                let id = member["member"].as_str().unwrap().to_owned();
                member.as_object_mut().unwrap().remove("member");
                view.members.insert(id, member);
            }
            match page["next"].as_str() {
                Some(next) if page["more"] == true => after = Some(next.to_owned()),
                _ => return view,
            }
        }
    }

    /// Applies a `presence_patch` newer than the version held.
    fn take(&mut self, frame: &Value) {
        if frame["type"] != "presence_patch" {
            return;
        }
        let version = frame["version"].as_u64().unwrap();
        if version <= self.version {
            return;
        }
        let from = frame["from"].as_u64().unwrap();
        assert!(from <= self.version, "no gap: {frame} at {}", self.version);
        assert!(
            frame.get("resync").is_none(),
            "small changes come as patches"
        );
        for (id, member) in frame["patch"].as_object().unwrap() {
            if member.is_null() {
                self.members.remove(id);
            } else {
                self.members.insert(id.clone(), member.clone());
            }
        }
        self.version = version;
        self.patches += 1;
    }

    /// Takes frames until the member ids are `want`.
    async fn until(&mut self, client: &mut Client, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        while self.members.keys().cloned().collect::<Vec<_>>() != want {
            let frame = client.next().await.expect("socket open");
            self.take(&frame);
        }
    }
}

/// A client allowed everything, presence included, on `*`.
async fn member(t: &TestStack, sub: &str) -> (Client, String) {
    let token = t.token(
        sub,
        json!({"*": ["subscribe", "publish", "history", "presence"]}),
    );
    let mut client = t.connect(&token).await.expect("handshake");
    let id = client.connection_id().await;
    (client, id)
}

/// Sends a presence op and returns the answer (`presence` or `error`).
async fn presence(client: &mut Client, channel: &str, op: &str, data: Option<Value>) -> Value {
    let mut frame = json!({"action": "presence", "channel": channel, "op": op, "id": op});
    if let Some(data) = data {
        frame["data"] = data;
    }
    client.send(frame).await;
    loop {
        let answer = client.next().await.expect("socket open");
        if answer["id"] == op && (answer["type"] == "presence" || answer["type"] == "error") {
            return answer;
        }
    }
}

async fn watch(client: &mut Client, channel: &str) -> Members {
    client
        .request(
            json!({"action": "subscribe", "channel": channel, "presence": true}),
            "subscribed",
        )
        .await;
    Members::load(client, channel).await
}

fn sorted<'a>(ids: &[&'a str]) -> Vec<&'a str> {
    let mut ids = ids.to_vec();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_enter_update_and_leave_and_watchers_follow() {
    let t = start_stack().await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:1").await;
    assert!(view.members.is_empty());
    let (mut ann, ann_id) = member(&t, "ann").await;
    let (mut bo_phone, phone_id) = member(&t, "bo").await;
    let (mut bo_laptop, laptop_id) = member(&t, "bo").await;
    let answer = presence(&mut ann, "room:1", "enter", Some(json!({"status": "here"}))).await;
    assert_eq!(
        answer,
        json!({"type": "presence", "channel": "room:1", "op": "enter", "id": "enter"})
    );
    presence(&mut bo_phone, "room:1", "enter", None).await;
    presence(&mut bo_laptop, "room:1", "enter", Some(json!("laptop"))).await;
    // One user on two devices is two members with the same sub.
    view.until(&mut watcher, &sorted(&[&ann_id, &phone_id, &laptop_id]))
        .await;
    assert_eq!(view.members[&ann_id]["data"], json!({"status": "here"}));
    assert_eq!(view.members[&phone_id]["sub"], "bo");
    assert_eq!(view.members[&laptop_id]["sub"], "bo");
    assert!(view.members[&phone_id].get("data").is_none());

    presence(
        &mut ann,
        "room:1",
        "update",
        Some(json!({"status": "typing"})),
    )
    .await;
    while view.members[&ann_id]["data"] != json!({"status": "typing"}) {
        let frame = watcher.next().await.unwrap();
        view.take(&frame);
    }
    presence(&mut bo_phone, "room:1", "leave", None).await;
    view.until(&mut watcher, &sorted(&[&ann_id, &laptop_id]))
        .await;
    // A late watcher reads the same list, a page at a time.
    let (mut late, _) = member(&t, "late").await;
    let late_view = watch(&mut late, "room:1").await;
    assert_eq!(late_view.members, view.members);
    // Leaving twice is not an error.
    assert_eq!(
        presence(&mut bo_phone, "room:1", "leave", None).await["type"],
        "presence"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_leaves() {
    let t = start_stack().await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:2").await;
    let (mut ann, ann_id) = member(&t, "ann").await;
    presence(&mut ann, "room:2", "enter", None).await;
    presence(&mut ann, "room:3", "enter", None).await;
    view.until(&mut watcher, &[&ann_id]).await;
    ann.close().await;
    view.until(&mut watcher, &[]).await;
    // Every membership went with it.
    let members: Vec<_> = all_items(&t.store)
        .await
        .into_iter()
        .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with("p#")))
        .collect();
    assert!(members.is_empty(), "{members:?}");
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_connection_leaves_at_the_first_post_that_finds_it_gone() {
    // `$disconnect` crashes every time: connections vanish without it.
    let t = start_stack_with(|o| {
        o.function_faults = FunctionFaults {
            crash_rate: 1.0,
            only: vec!["DisconnectFunction".into()],
        };
    })
    .await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:4").await;
    let (mut ghost, ghost_id) = member(&t, "ghost").await;
    watch(&mut ghost, "room:4").await;
    presence(&mut ghost, "room:4", "enter", None).await;
    view.until(&mut watcher, &[&ghost_id]).await;
    // Its own copy of that change has reached it too: nothing is on its way to it.
    ghost.next_of("presence_patch").await;
    ghost.close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still listed: nothing told the table it is gone.
    assert!(
        Members::load(&mut watcher, "room:4")
            .await
            .members
            .contains_key(&ghost_id)
    );
    // The next change is posted to every presence watcher, the ghost too: gone (410), so
    // it is pruned with its membership, and watchers see it leave.
    let (mut ann, ann_id) = member(&t, "ann").await;
    presence(&mut ann, "room:4", "enter", None).await;
    view.until(&mut watcher, &[&ann_id]).await;
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_reason_and_write_nothing() {
    let t = start_stack_with(|o| {
        o.env.insert("PRESENCE_MAX_MEMBERS".into(), "2".into());
    })
    .await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:5").await;
    let no_presence = t.token("nobody", json!({"*": ["subscribe", "publish"]}));
    let mut nobody = t.connect(&no_presence).await.expect("handshake");
    let (mut ann, ann_id) = member(&t, "ann").await;
    let before = all_items(&t.store).await.len();
    let refused = presence(&mut nobody, "room:5", "enter", None).await;
    assert_eq!(refused["code"], "forbidden");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("presence on room:5"),
        "{refused}"
    );
    let refused = presence(&mut ann, "room:5", "update", Some(json!(1))).await;
    assert_eq!(refused["code"], "bad_request");
    assert!(
        refused["message"].as_str().unwrap().contains("enter first"),
        "{refused}"
    );
    let refused = presence(&mut ann, "room:5", "enter", Some(json!("x".repeat(1100)))).await;
    assert_eq!(refused["code"], "too_large");
    assert!(
        refused["message"].as_str().unwrap().contains("1024 bytes"),
        "{refused}"
    );
    assert_eq!(all_items(&t.store).await.len(), before, "nothing written");

    // The limit: two members, then a third is refused; a member may still update.
    let (mut bo, bo_id) = member(&t, "bo").await;
    presence(&mut ann, "room:5", "enter", None).await;
    presence(&mut bo, "room:5", "enter", None).await;
    view.until(&mut watcher, &sorted(&[&ann_id, &bo_id])).await;
    let (mut cy, _) = member(&t, "cy").await;
    let refused = presence(&mut cy, "room:5", "enter", None).await;
    assert_eq!(refused["code"], "presence_full", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("PRESENCE_MAX_MEMBERS"),
        "{refused}"
    );
    assert_eq!(
        presence(&mut bo, "room:5", "enter", Some(json!(2))).await["type"],
        "presence"
    );
    assert_eq!(
        presence(&mut ann, "room:5", "update", Some(json!(3))).await["type"],
        "presence"
    );
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_joining_at_once_cost_a_watcher_a_few_frames() {
    let t = start_stack().await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:6").await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for m in 0..30 {
        let (client, id) = member(&t, &format!("m{m}")).await;
        ids.push(id);
        clients.push(client);
    }
    let started = Instant::now();
    for client in &mut clients {
        client
            .send(json!({"action": "presence", "channel": "room:6", "op": "enter"}))
            .await;
    }
    let want: Vec<&str> = sorted(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    view.until(&mut watcher, &want).await;
    let elapsed = started.elapsed();
    let most = 1 + (elapsed.as_millis() / 250) as usize;
    assert!(
        view.patches <= most,
        "{} patches in {elapsed:?}",
        view.patches
    );
    assert!(view.patches < 30, "{} patches for 30 members", view.patches);
    t.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_past_its_connections_expiry_leaves_when_the_list_is_read() {
    let t = start_stack().await;
    let (mut watcher, _) = member(&t, "watcher").await;
    let mut view = watch(&mut watcher, "room:7").await;
    // A member whose connection vanished without `$disconnect` hours ago: its item is
    // still there (DynamoDB's TTL deletion lags), past its connection's expiry.
    let past = deltacast::clock::now_secs() - 60;
    t.store
        .client()
        .put_item()
        .table_name(t.store.table())
        .item("pk", AttributeValue::S("p#room:7".into()))
        .item("sk", AttributeValue::S("vanished".into()))
        .item("sub", AttributeValue::S("ghost".into()))
        .item("at", AttributeValue::N("1".into()))
        .item("exp", AttributeValue::N(past.to_string()))
        .item("ttl", AttributeValue::N(past.to_string()))
        .send()
        .await
        .unwrap();
    view.until(&mut watcher, &["vanished"]).await;
    // Reading the list leaves it out, and removes it: watchers see it leave.
    let (mut reader, _) = member(&t, "reader").await;
    let read = Members::load(&mut reader, "room:7").await;
    assert!(read.members.is_empty(), "{:?}", read.members);
    view.until(&mut watcher, &[]).await;
    t.shutdown().await;
}
