//! The `live_state` section as rows of the printed table (figure, value, baseline or goal).

use serde_json::Value;

/// The section's rows; `f` formats a number as the rest of the table does.
pub fn rows(summary: &Value, f: &dyn Fn(&Value) -> String) -> Vec<(String, String, String)> {
    let Some(live) = summary.get("live_state") else {
        return Vec::new();
    };
    let poll = &live["poll"];
    let presence = &live["presence"];
    let cost = &live["cost"];
    let rate = f(&live["patch_rate"]);
    let rows = [
        (
            "poll_votes_acked_per_s",
            f(&poll["votes_acked_per_second"]),
            format!(
                "DynamoDB Local writes/s {}",
                f(&live["dynamodb_local_write_ceiling"]["items_per_second"])
            ),
        ),
        (
            "poll_votes_acked",
            f(&poll["votes_acked"]),
            format!("voters {}", f(&poll["voters"])),
        ),
        (
            "poll_final_tally",
            f(&poll["final_tally"]),
            format!("votes acked {} (must equal)", f(&poll["votes_acked"])),
        ),
        (
            "poll_duplicates_rejected",
            f(&poll["duplicates_rejected"]),
            format!("duplicate attempts {}", f(&poll["duplicate_attempts"])),
        ),
        (
            "poll_frames_per_viewer_per_s_max",
            f(&poll["frames_per_viewer_per_second_max"]),
            format!("patch rate {rate}"),
        ),
        (
            "poll_ack_to_view_p50_ms",
            f(&poll["ack_to_view_p50_ms"]),
            String::new(),
        ),
        (
            "poll_ack_to_view_p99_ms",
            f(&poll["ack_to_view_p99_ms"]),
            String::new(),
        ),
        (
            "poll_wcu_per_vote",
            f(&cost["wcu_per_vote"]),
            format!("log channel {}", f(&cost["log"]["wcu_per_vote"])),
        ),
        (
            "poll_wcu_per_vote_tally_only",
            f(&cost["wcu_per_vote_tally_only"]),
            format!("log channel {}", f(&cost["log"]["wcu_per_vote"])),
        ),
        (
            "poll_usd_on_aws",
            f(&cost["state"]["usd"]),
            format!("log channel {}", f(&cost["log"]["usd"])),
        ),
        (
            "presence_frames_until_complete_max",
            f(&presence["frames_until_complete_max"]),
            format!("members {}", f(&presence["members"])),
        ),
        (
            "presence_frames_per_watcher_max",
            f(&presence["frames_per_watcher_max"]),
            "entering and leaving".into(),
        ),
        (
            "presence_complete_after_ms",
            f(&presence["complete_after_ms"]),
            format!("entering over {} s", f(&presence["enter_seconds"])),
        ),
        (
            "presence_members_after_leave",
            f(&presence["members_after_leave"]),
            "must be 0".into(),
        ),
    ];
    rows.into_iter()
        .map(|(name, value, baseline)| (format!("live_{name}"), value, baseline))
        .collect()
}
