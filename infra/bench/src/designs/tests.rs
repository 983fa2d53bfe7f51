//! Each candidate against DynamoDB Local, briefly: what makes the figures trustworthy is
//! that every run stores gap-free seqs 1..n once per message, exactly as acked.

use std::time::Duration;

use serde_json::json;

use super::*;

#[tokio::test]
async fn every_design_stores_gap_free_seqs_once_per_message() {
    let endpoint = std::env::var("DELTACAST_TEST_DYNAMODB")
        .expect("DELTACAST_TEST_DYNAMODB names DynamoDB Local's endpoint");
    let client = Client::new(&deltacast_local::stack::local_sdk_config(&endpoint).await);
    let table = format!("bench-designs-test-{:08x}", rand::random::<u32>());
    dynamo::create_table(&client, &table).await.unwrap();
    for design in [
        Design::Race,
        Design::Counter,
        Design::Sequencer,
        Design::SequencerTx,
    ] {
        for publishers in [1, 8] {
            let run = run(&client, &table, design, publishers, ms(300), ms(0))
                .await
                .unwrap();
            assert!(run.publishes > 0, "{design:?} with {publishers}: {run:?}");
            assert_eq!(
                run.problems,
                Some(vec![]),
                "{design:?} with {publishers} publishers"
            );
            assert!(run.wcu_per_publish >= 2.0, "{design:?}: {run:?}");
        }
    }
    let ceiling = run(&client, &table, Design::Ceiling, 4, ms(200), ms(0))
        .await
        .unwrap();
    assert!(ceiling.publishes > 0 && ceiling.problems.is_none());
    assert_eq!(ceiling.requests_per_publish, 1.0);
    // With added latency (each run also checks that every request paid it once).
    let far = run(&client, &table, Design::Counter, 1, ms(100), ms(20))
        .await
        .unwrap();
    assert!(far.p50_ms >= 60.0, "three round trips: {far:?}");
    assert_eq!(far.problems, Some(vec![]));
    dynamo::delete_table(&client, &table).await.unwrap();
}

#[test]
fn rows_put_each_design_beside_the_ceiling_at_its_concurrency() {
    let section = json!({"runs": [
        {"design": "ceiling", "publishers": 10, "per_s": 900.0},
        {"design": "ceiling", "publishers": 1, "per_s": 300.0},
        {"design": "race", "publishers": 10, "per_s": 120.0, "p50_ms": 50.0,
         "p99_ms": 200.0, "wcu_per_publish": 3.5},
    ]});
    let rows = rows(&section);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "publish_designs race P=10 per_s");
    assert_eq!(rows[0].1, "120");
    assert!(rows[0].2.starts_with("ceiling 900/s;"), "{}", rows[0].2);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
