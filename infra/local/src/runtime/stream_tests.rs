//! Streamed responses against real processes: the `probe_function` example answering in
//! streaming mode (`{"stream": {"chunks": n, "every_ms": m}}`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::Function;
use super::tests::{bounded, config, pid};
use crate::invoke::{Invoke, InvokeError, Invoked, StreamHead};

/// The stream an invocation answered with.
async fn stream(function: &Function, chunks: u64, every_ms: u64) -> StreamHead {
    let event = json!({"stream": {"chunks": chunks, "every_ms": every_ms}});
    match function.invoke_streaming(event).await {
        Ok(Invoked::Stream(head)) => head,
        Ok(Invoked::Response(value)) => panic!("a whole response: {value}"),
        Err(error) => panic!("the invocation failed: {error}"),
    }
}

/// The body's chunks as text, each with when it came.
async fn read(mut head: StreamHead) -> Vec<(String, Instant)> {
    let mut chunks = Vec::new();
    while let Some(chunk) = head.body.recv().await {
        chunks.push((String::from_utf8_lossy(&chunk).into_owned(), Instant::now()));
    }
    chunks
}

#[tokio::test]
async fn a_streamed_response_arrives_chunk_by_chunk_and_holds_its_instance_until_it_ends() {
    bounded(async {
        let function = Function::new(config("streamer"));
        let warm = function.invoke(json!({})).await;
        let started = Instant::now();
        // WHEN the function streams five chunks, 200 ms apart
        let head = stream(&function, 5, 200).await;
        assert_eq!(head.prelude["statusCode"], 201);
        assert_eq!(head.prelude["headers"]["x-probe"], "stream");
        let reading = tokio::spawn(read(head));
        // THEN meanwhile another invocation gets another instance
        let meanwhile = function.invoke(json!({})).await;
        assert_ne!(
            pid(&meanwhile),
            pid(&warm),
            "the streaming instance is busy"
        );
        let chunks = reading.await.unwrap();
        let body: String = chunks.iter().map(|(text, _)| text.as_str()).collect();
        assert_eq!(body, "chunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n");
        // AND the first chunk came long before the last: passed on as written
        let first = chunks.first().unwrap().1.duration_since(started);
        let last = chunks.last().unwrap().1.duration_since(started);
        assert!(
            first < Duration::from_millis(700),
            "first chunk after {first:?}"
        );
        assert!(
            last - first >= Duration::from_millis(600),
            "{first:?} .. {last:?}"
        );
        // AND the instance is free again once the stream ended
        let stats = function.stats();
        assert_eq!(stats.timeouts, 0);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_longer_than_the_timeout_is_cut_off_and_its_instance_discarded() {
    bounded(async {
        let function = Function::new(config("endless"));
        let started = Instant::now();
        // 100 chunks 100 ms apart would take 10 s; the timeout is 2 s.
        let chunks = read(stream(&function, 100, 100).await).await;
        let took = started.elapsed();
        assert!(chunks.len() < 40, "{} chunks came", chunks.len());
        assert!(took < Duration::from_secs(5), "cut after {took:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while function.stats().timeouts == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(function.stats().timeouts, 1);
        function.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_stream_to_a_caller_of_whole_responses_fails_the_invocation_at_once() {
    bounded(async {
        let function = Function::new(config("mismatch"));
        let started = Instant::now();
        let result = function
            .invoke(json!({"stream": {"chunks": 3, "every_ms": 10}}))
            .await;
        match result {
            Err(InvokeError::Function { error_type, .. }) => {
                assert_eq!(error_type, "Runtime.StreamingNotSupported");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "failed at once, not at the timeout"
        );
        // A function that answers whole is read whole by a streaming caller too.
        match function.invoke_streaming(json!({"echo": 1})).await {
            Ok(Invoked::Response(value)) => assert_eq!(value["echo"], Value::from(1)),
            other => panic!("{other:?}"),
        }
        function.shutdown().await;
    })
    .await;
}
