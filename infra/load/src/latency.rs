//! Latency bookkeeping: the histogram every shard records into (1 µs to 1 h, three
//! significant digits) and the summary the report carries. Clients record live deliveries
//! in batches into one of a few shards, so no lock is taken per delta.

use std::sync::Mutex;

use hdrhistogram::Histogram;

use crate::report::LatencyMs;

/// An empty histogram: 1 µs to 1 h, 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Merges the shards and summarises them in milliseconds.
pub(crate) fn summarise(shards: &[Mutex<Histogram<u64>>]) -> LatencyMs {
    let mut histogram = new_histogram();
    for shard in shards {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        let _ = histogram.add(&*shard);
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    LatencyMs {
        p50: ms(histogram.value_at_quantile(0.50)),
        p95: ms(histogram.value_at_quantile(0.95)),
        p99: ms(histogram.value_at_quantile(0.99)),
        max: ms(histogram.max()),
        mean: histogram.mean() / 1000.0,
        count: histogram.len(),
        percentiles: if histogram.is_empty() {
            Vec::new()
        } else {
            (1..=100)
                .map(|p| ms(histogram.value_at_quantile(f64::from(p) / 100.0)))
                .collect()
        },
    }
}
