//! The benchmark's plots, as SVG: the end-to-end latency distribution, and fan-out time
//! against channel size.

use std::path::Path;

use plotters::prelude::*;

use crate::fanout::SizePoint;

type Result<T> = std::result::Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The cumulative distribution of end-to-end latencies: `percentiles[i]` is the latency
/// (ms) at or below which `i + 1` percent of deliveries arrived.
pub fn latency_cdf(path: &Path, percentiles: &[f64], poll_interval_ms: u64) -> Result<()> {
    if percentiles.is_empty() {
        return Err("no latencies to plot".into());
    }
    let max = percentiles.iter().copied().fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Publish → delivery latency, local stack (stream poll {poll_interval_ms} ms)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..max, 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms)")
        .y_desc("deliveries at or below (%)")
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            std::iter::once((0.0, 0.0)).chain(
                percentiles
                    .iter()
                    .enumerate()
                    .map(|(i, ms)| (*ms, (i + 1) as f64)),
            ),
            BLUE.stroke_width(2),
        ))
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Fan-out time (p50 and p99 delivery after the invocation started) against subscribers.
pub fn fanout_by_size(path: &Path, points: &[SizePoint], latency_ms: u64) -> Result<()> {
    let points: Vec<&SizePoint> = points
        .iter()
        .filter(|p| p.latency_ms == latency_ms)
        .collect();
    let max_x = points.iter().map(|p| p.subscribers).max().unwrap_or(1) as f64 * 1.05;
    let max_y = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Fan-out time against channel size ({latency_ms} ms Management API latency)"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x, 0f64..max_y)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("subscribers")
        .y_desc("ms after the fan-out started")
        .draw()
        .map_err(err)?;
    for (label, color, pick) in [
        (
            "p50",
            BLUE,
            (|p: &SizePoint| p.p50_ms) as fn(&SizePoint) -> f64,
        ),
        ("p99", RED, |p: &SizePoint| p.p99_ms),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.subscribers as f64, pick(p))),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(
                points
                    .iter()
                    .map(|p| Circle::new((p.subscribers as f64, pick(p)), 4, color.filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
