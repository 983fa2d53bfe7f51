//! Log tails against real processes: the `probe_function` example printing a line to
//! stdout and one to stderr just before it answers (`{"log": "text"}`).

use std::time::Duration;

use serde_json::json;

use super::Function;
use super::tests::{bounded, config};
use crate::invoke::{Invoke, InvokeError, InvokeOptions};

fn tailed(request_id: &str) -> InvokeOptions {
    InvokeOptions {
        request_id: Some(request_id.to_owned()),
        tail: true,
    }
}

// Several threads, as in the gateway: the pipes' readers then run beside the Runtime API,
// and without the tail rule some tails miss the lines written just before the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tail_has_the_lines_written_just_before_the_response_and_no_others() {
    bounded(async {
        // GIVEN a warm instance
        let function = Function::new(config("RepeatedTailFunction"));
        function.invoke(json!({})).await.expect("a response");

        // WHEN it is invoked again and again with a tail, each time printing its own lines
        for n in 0..50 {
            let event = json!({ "log": format!("line {n}") });
            let invocation = function.invoke_with(event, tailed(&format!("r-{n}"))).await;
            invocation.result.expect("a response");

            // THEN each tail holds both of its lines, however late they were read, and
            // none of the invocation before
            let tail = invocation.log_tail.expect("a tail");
            assert!(
                tail.starts_with(&format!("START RequestId: r-{n} ")),
                "{tail}"
            );
            assert!(tail.contains(&format!("\nline {n}\n")), "{tail}");
            assert!(tail.contains(&format!("\nline {n} (stderr)\n")), "{tail}");
            if n > 0 {
                assert!(!tail.contains(&format!("line {}", n - 1)), "{tail}");
            }
        }
        assert_eq!(function.stats().instances_started, 1);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn an_invocation_that_asks_for_no_tail_gets_none_and_keeps_its_request_id() {
    bounded(async {
        let function = Function::new(config("UntailedFunction"));
        let options = InvokeOptions {
            request_id: Some("chosen-id".to_owned()),
            tail: false,
        };
        let invocation = function
            .invoke_with(json!({ "log": "quiet", "context": true }), options)
            .await;
        assert!(invocation.log_tail.is_none());
        let response = invocation.result.expect("a response");
        assert_eq!(response["context"]["request_id"], "chosen-id");
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_timed_out_invocation_says_so_in_its_tail_and_a_throttled_one_has_none() {
    bounded(async {
        // GIVEN a function of one instance with a 2 s timeout
        let mut config = config("SlowTailFunction");
        config.max_instances = 1;
        let function = Function::with_queue_limit(config, Duration::from_millis(200));

        // WHEN one invocation runs past its timeout while another waits for the instance
        let slow = function.invoke_with(
            json!({ "log": "sleeping", "sleep_ms": 5_000 }),
            tailed("slow"),
        );
        let waiting = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            function.invoke_with(json!({}), tailed("waiting")).await
        };
        let (slow, waiting) = tokio::join!(slow, waiting);

        // THEN the first tail ends as Lambda's does, and the throttled one has no log
        assert!(matches!(slow.result, Err(InvokeError::Timeout(_))));
        let tail = slow.log_tail.expect("a tail");
        assert!(tail.contains("\nsleeping\n"), "{tail}");
        assert!(
            tail.contains(" slow Task timed out after 2.00 seconds\nEND RequestId: slow\n"),
            "{tail}"
        );
        assert!(matches!(waiting.result, Err(InvokeError::Unavailable(_))));
        assert!(waiting.log_tail.is_none());
        function.shutdown().await;
    })
    .await;
}
