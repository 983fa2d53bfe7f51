//! The functions' metrics, locally. In AWS the functions print CloudWatch Embedded Metric
//! Format (EMF) documents on stdout and CloudWatch Logs turns them into metrics; here the
//! runtime hands those lines to a [`Registry`] instead of the log, and the gateway serves
//! what they add up to at `GET /metrics` in Prometheus's text format, with the runtime's
//! own per-function figures beside them (as Lambda reports invocations and errors without
//! the function's help). `make dev` logs a one-line [`Traffic`] summary from the same
//! figures.
//!
//! Every line meant as EMF is validated as CloudWatch would: a line CloudWatch would drop
//! is refused here, logged with the rule it breaks, and counted
//! (`deltacast_local_emf_invalid_lines_total`), so a broken metric shows up before it is
//! deployed rather than as a gap in a dashboard.
//!
//! # Layout
//! - `emf`: reading and validating an EMF document ([`EmfDocument`], [`EmfError`]).
//! - `unit`: CloudWatch's units, their Prometheus suffixes and histogram buckets.
//! - `registry`: counters and histograms from the documents ([`Registry`],
//!   [`MetricsSnapshot`]).
//! - `figures`: the runtime's own counts per function ([`FunctionFigures`]).
//! - `exposition`: the page in Prometheus's text format 0.0.4.
//! - `page`: the registry and the figures as the stack serves them ([`MetricsPage`]).
//! - `traffic`: the summary line of a window ([`Traffic`]).

mod emf;
#[cfg(test)]
mod emf_tests;
mod exposition;
mod figures;
#[cfg(test)]
mod fixtures;
mod page;
mod registry;
mod traffic;
mod unit;

pub use emf::{
    EmfDocument, EmfError, MAX_DIMENSION_KEYS, MAX_METRICS, MAX_NAME_CHARS, MAX_NAMESPACE_CHARS,
    MAX_VALUES, Metric, MetricValue,
};
pub use exposition::{CONTENT_TYPE, render};
pub use figures::FunctionFigures;
pub use page::MetricsPage;
pub use registry::{Capture, Histogram, MetricsSnapshot, RECENT_VALUES, Registry, SeriesKey};
pub use traffic::{Traffic, TrafficSnapshot};
pub use unit::Unit;
