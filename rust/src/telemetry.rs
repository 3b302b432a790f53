//! Per-request telemetry in one call: the Prometheus counts of `Observability.count` and the JSON
//! access-log line of `accesslog.json_fields` (python/llmgw/observability/), from one [`Finish`].
//!
//! Why in Rust: measured per request on one core (benches/load/observability.py), counting the
//! metrics in Python dicts cost 22 µs of CPU (-29% throughput) and formatting the JSON line another
//! 21 µs, against a whole gateway request of ~60-75 µs; the target for all of it is ≤ 10%. Here
//! both are one call that borrows the request's strings (see benches/bench_telemetry.py).
//!
//! - [`Metrics`]: counters and histograms with the families, label sets and value types of
//!   `MetricsStore` (metrics.py); a series is found by a hash of its label strings, so counting
//!   an existing series allocates nothing.
//! - [`write_json_line`]: the object `json_fields(record)` gives, byte for byte what orjson writes
//!   for it (same keys, order, rounding, float spelling and string escapes).
//! - [`LineBuffer`]: lines waiting to be written, bounded; what does not fit is dropped and counted.
//! - [`request`]: what `finish_request` derives from the request's objects as the Python did
//!   (the answer's price from a [`Catalog`], the timings, the wall-clock start).

use std::fmt;

pub mod json;
pub mod metrics;
pub mod request;

pub use json::{civil_from_days, ms, round3, round3_exact, write_f64, write_int, write_json_line, write_ms, write_str,
    write_ts, IntBuf, LineBuffer};
pub use metrics::{Buckets, Count, Counter, Family, Histogram, Metrics, Series, COUNTERS, HISTOGRAMS};
pub use request::{Catalog, Price};

// --- the record -------------------------------------------------------------------------------------

/// One upstream attempt (`record.AttemptRecord`, reduced to what metrics and the log read).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Attempt<'a> {
    pub deployment: &'a str,
    /// The upstream's HTTP status; None when no response head came.
    pub status: Option<i64>,
    pub error_code: Option<&'a str>,
    /// `(end_ns - start_ns) / 1e9`.
    pub seconds: f64,
    /// "primary" | "fallback" (written to the log as given; "fallback" counts a fallback).
    pub via: &'a str,
    pub retry: bool,
    pub hedge: bool,
    pub cancelled: bool,
}

/// A trace id as the log writes it: lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TraceId<'a> {
    /// Already hex (written as given).
    Hex(&'a str),
    /// Raw bytes (16 for W3C), written as lowercase hex.
    Raw(&'a [u8]),
}

/// One request's finish record (`record.FinishRecord`, the fields metrics and the log read).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Finish<'a> {
    pub request_id: &'a str,
    /// Unix epoch nanoseconds.
    pub start_ns: i64,
    pub duration_s: f64,
    pub ttfb_s: Option<f64>,
    pub upstream_s: f64,
    pub overhead_s: f64,
    pub kind: &'a str,
    pub method: &'a str,
    /// The route (the `route` label).
    pub path: &'a str,
    pub status: i64,
    pub result: &'a str,
    pub model: Option<&'a str>,
    pub group: Option<&'a str>,
    pub deployment: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub usage_estimated: bool,
    pub cost_usd: Option<f64>,
    pub cache: Option<&'a str>,
    pub stream: bool,
    /// None (or empty): no trace.
    pub trace_id: Option<TraceId<'a>>,
    pub attempts: &'a [Attempt<'a>],
    /// One complete JSON value, embedded as "input" unchanged.
    pub input_json: Option<&'a [u8]>,
    pub output: Option<&'a str>,
}

// --- errors -----------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum TelemetryError {
    /// Histogram bounds must be finite and strictly increasing (bisect needs them sorted).
    Bounds(&'static str),
}

impl fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TelemetryError::Bounds(which) => {
                write!(f, "{which} must be finite and strictly increasing (at least one bound)")
            }
        }
    }
}

impl std::error::Error for TelemetryError {}

// --- both --------------------------------------------------------------------------------------------

/// Metrics and (when `json_log`) the access-log line, per request.
#[derive(Debug, Clone)]
pub struct Telemetry {
    pub metrics: Metrics,
    pub log: LineBuffer,
    pub json_log: bool,
}

impl Telemetry {
    pub fn new(
        json_log: bool,
        latency_bounds: &[f64],
        overhead_bounds: &[f64],
        per_key: bool,
        max_log_bytes: usize,
    ) -> Result<Self, TelemetryError> {
        Ok(Telemetry {
            metrics: Metrics::new(latency_bounds, overhead_bounds, per_key)?,
            log: LineBuffer::new(max_log_bytes),
            json_log,
        })
    }

    pub fn finish(&mut self, r: &Finish<'_>) {
        self.metrics.count(r);
        if self.json_log {
            self.log.push(r);
        }
    }
}

#[cfg(test)]
#[path = "telemetry_tests.rs"]
mod tests;
