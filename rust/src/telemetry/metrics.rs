//! The metrics table: counters and histograms with the families, label sets and value types of
//! `MetricsStore` (python/llmgw/observability/metrics.py), counted as `Observability.count` does.

use std::hash::Hasher;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use super::json::IntBuf;
use super::{Attempt, Finish, TelemetryError};

/// Counter families, in `metrics.FAMILIES` order (snapshots list them in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    Requests,
    Tokens,
    CostUsd,
    Unpriced,
    CacheRequests,
    Fallbacks,
    Retries,
    UpstreamFailures,
    Errors,
    RateLimited,
    BudgetBlocked,
    KeyRequests,
    KeyTokens,
    KeyCostUsd,
}

/// (name, float): a float family sums floats (USD), the others ints, as Python's `0 + value` does.
pub const COUNTERS: [(&str, bool); 14] = [
    ("llmgw_requests_total", false),
    ("llmgw_tokens_total", false),
    ("llmgw_cost_usd_total", true),
    ("llmgw_unpriced_requests_total", false),
    ("llmgw_cache_requests_total", false),
    ("llmgw_fallbacks_total", false),
    ("llmgw_retries_total", false),
    ("llmgw_upstream_failures_total", false),
    ("llmgw_errors_total", false),
    ("llmgw_rate_limited_total", false),
    ("llmgw_budget_blocked_total", false),
    ("llmgw_key_requests_total", false),
    ("llmgw_key_tokens_total", false),
    ("llmgw_key_cost_usd_total", true),
];

/// Histogram families, in `metrics.FAMILIES` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Histogram {
    RequestDuration,
    TimeToFirstToken,
    UpstreamDuration,
    GatewayOverhead,
}

/// (name, uses the overhead bounds): `metrics._bounds` gives the overhead family its own buckets.
pub const HISTOGRAMS: [(&str, bool); 4] = [
    ("llmgw_request_duration_seconds", false),
    ("llmgw_time_to_first_token_seconds", false),
    ("llmgw_upstream_duration_seconds", false),
    ("llmgw_gateway_overhead_seconds", true),
];

/// A counter's value: `int` in int families, `float` in float families (the other stays 0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Count {
    pub int: i64,
    pub float: f64,
}

/// Non-cumulative bucket counts (the last one +Inf) and the sum, like `MetricsStore.observe`.
#[derive(Debug, Clone, PartialEq)]
pub struct Buckets {
    pub counts: Box<[u64]>,
    pub sum: f64,
}

#[derive(Debug, Clone)]
pub struct Series<V> {
    pub labels: Box<[Box<str>]>,
    pub value: V,
    hash: u64,
}

/// One family's series in the order they first appeared (Python dicts keep insertion order),
/// indexed by the hash of their labels.
#[derive(Debug, Clone)]
pub struct Family<V> {
    series: Vec<Series<V>>,
    index: HashTable<u32>,
}

impl<V> Default for Family<V> {
    fn default() -> Self {
        Family { series: Vec::new(), index: HashTable::new() }
    }
}

fn label_hash(labels: &[&str]) -> u64 {
    let mut h = FxHasher::default();
    for label in labels {
        h.write(label.as_bytes());
        h.write_u8(0xff); // not UTF-8: ("ab", "") and ("a", "b") differ
    }
    h.finish()
}

impl<V> Family<V> {
    pub fn series(&self) -> &[Series<V>] {
        &self.series
    }

    pub fn get(&self, labels: &[&str]) -> Option<&V> {
        let hash = label_hash(labels);
        let series = &self.series;
        self.index.find(hash, |&i| same(&series[i as usize].labels, labels)).map(|&i| &series[i as usize].value)
    }

    /// The series for `labels`, created with `new()` the first time.
    #[inline]
    fn slot(&mut self, labels: &[&str], new: impl FnOnce() -> V) -> &mut V {
        let hash = label_hash(labels);
        let series = &mut self.series;
        let found = self.index.find(hash, |&i| same(&series[i as usize].labels, labels)).copied();
        let i = match found {
            Some(i) => i as usize,
            None => self.insert(hash, labels, new()),
        };
        &mut self.series[i].value
    }

    #[cold]
    fn insert(&mut self, hash: u64, labels: &[&str], value: V) -> usize {
        let i = self.series.len();
        let labels = labels.iter().map(|&l| Box::from(l)).collect();
        self.series.push(Series { labels, value, hash });
        let series = &self.series;
        self.index.insert_unique(hash, i as u32, |&j| series[j as usize].hash);
        i
    }
}

fn same(have: &[Box<str>], want: &[&str]) -> bool {
    have.len() == want.len() && have.iter().zip(want).all(|(a, b)| **a == **b)
}

/// A worker's counts of the families `Observability.count` updates.
#[derive(Debug, Clone)]
pub struct Metrics {
    counters: [Family<Count>; COUNTERS.len()],
    histograms: [Family<Buckets>; HISTOGRAMS.len()],
    latency_bounds: Box<[f64]>,
    overhead_bounds: Box<[f64]>,
    /// `observability.metrics.per_key_labels`: count the llmgw_key_* families.
    pub per_key: bool,
}

fn check_bounds(bounds: &[f64], which: &'static str) -> Result<Box<[f64]>, TelemetryError> {
    let sorted = bounds.windows(2).all(|w| w[0] < w[1]);
    if bounds.is_empty() || !sorted || !bounds.iter().all(|b| b.is_finite()) {
        return Err(TelemetryError::Bounds(which));
    }
    Ok(bounds.into())
}

impl Metrics {
    pub fn new(latency_bounds: &[f64], overhead_bounds: &[f64], per_key: bool) -> Result<Self, TelemetryError> {
        Ok(Metrics {
            counters: Default::default(),
            histograms: Default::default(),
            latency_bounds: check_bounds(latency_bounds, "latency_bounds")?,
            overhead_bounds: check_bounds(overhead_bounds, "overhead_bounds")?,
            per_key,
        })
    }

    pub fn bounds(&self, family: Histogram) -> &[f64] {
        if HISTOGRAMS[family as usize].1 {
            &self.overhead_bounds
        } else {
            &self.latency_bounds
        }
    }

    pub fn counter(&self, family: Counter) -> &Family<Count> {
        &self.counters[family as usize]
    }

    pub fn histogram(&self, family: Histogram) -> &Family<Buckets> {
        &self.histograms[family as usize]
    }

    /// Add to an int family (`MetricsStore.inc` with an int value).
    #[inline]
    pub fn inc(&mut self, family: Counter, labels: &[&str], value: i64) {
        debug_assert!(!COUNTERS[family as usize].1);
        let c = self.counters[family as usize].slot(labels, Count::default);
        c.int = c.int.wrapping_add(value);
    }

    /// Add to a float family (`MetricsStore.inc` with a float value).
    #[inline]
    pub fn add(&mut self, family: Counter, labels: &[&str], value: f64) {
        debug_assert!(COUNTERS[family as usize].1);
        self.counters[family as usize].slot(labels, Count::default).float += value;
    }

    /// `MetricsStore.observe`: bucket i counts value <= bounds[i] (Python's bisect_left; NaN goes
    /// to bucket 0 there too), the last bucket +Inf; the sum adds every value.
    #[inline]
    pub fn observe(&mut self, family: Histogram, labels: &[&str], value: f64) {
        let bounds: &[f64] =
            if HISTOGRAMS[family as usize].1 { &self.overhead_bounds } else { &self.latency_bounds };
        let bucket = bounds.partition_point(|&b| b < value);
        let n = bounds.len() + 1;
        let h = self.histograms[family as usize].slot(labels, || Buckets { counts: vec![0; n].into(), sum: 0.0 });
        h.counts[bucket] += 1;
        h.sum += value;
    }

    /// Exactly what `Observability.count(record)` adds (plugin.py; keep the two in step).
    pub fn count(&mut self, r: &Finish<'_>) {
        fn truthy(s: Option<&str>) -> Option<&str> {
            s.filter(|s| !s.is_empty())
        }
        use Counter::*;
        // `r.group or ""`: None and "" are the same label
        let group = r.group.unwrap_or("");
        let deployment = r.deployment.unwrap_or("");
        let mut status_buf = IntBuf::new();
        let status = status_buf.format(r.status);
        self.inc(Requests, &[r.path, group, deployment, status], 1);
        self.observe(Histogram::RequestDuration, &[r.path, group], r.duration_s);
        self.observe(Histogram::GatewayOverhead, &[r.path], r.overhead_s);
        if r.stream {
            if let Some(ttfb) = r.ttfb_s {
                self.observe(Histogram::TimeToFirstToken, &[group], ttfb);
            }
        }
        if r.prompt_tokens != 0 || r.completion_tokens != 0 {
            self.inc(Tokens, &[group, deployment, "input"], r.prompt_tokens);
            self.inc(Tokens, &[group, deployment, "output"], r.completion_tokens);
            if r.cached_tokens != 0 {
                self.inc(Tokens, &[group, deployment, "cached"], r.cached_tokens);
            }
            match r.cost_usd {
                Some(cost) => self.add(CostUsd, &[group, deployment], cost),
                None => self.inc(Unpriced, &[group, deployment], 1),
            }
        }
        if let Some(cache) = r.cache {
            self.inc(CacheRequests, &[group, cache], 1);
        }
        let mut previous: Option<&Attempt<'_>> = None;
        for a in r.attempts {
            self.observe(Histogram::UpstreamDuration, &[group, a.deployment], a.seconds);
            if let (Some(code), false) = (a.error_code, a.cancelled) {
                self.inc(UpstreamFailures, &[group, a.deployment, code], 1);
            }
            // a retry or a fallback is counted by the error of the attempt just before it
            if let Some(trigger) = previous.and_then(|p| p.error_code) {
                if a.retry {
                    self.inc(Retries, &[group, a.deployment, trigger], 1);
                } else if a.via == "fallback" {
                    self.inc(Fallbacks, &[group, trigger], 1);
                }
            }
            previous = Some(a);
        }
        if let Some(code) = r.error_code {
            self.inc(Errors, &[r.path, code], 1);
            if code == "rate_limit_exceeded" {
                self.inc(RateLimited, &[group], 1);
            } else if code == "budget_exceeded" {
                self.inc(BudgetBlocked, &[group], 1);
            }
        }
        // `r.key_id or r.key_name` / `r.key_name or r.key_id or ""`: empty strings are falsy
        if self.per_key {
            if let Some(key) = truthy(r.key_name).or(truthy(r.key_id)) {
                let team = r.team.unwrap_or("");
                self.inc(KeyRequests, &[key, team, status], 1);
                if r.prompt_tokens != 0 || r.completion_tokens != 0 {
                    self.inc(KeyTokens, &[key, team, "input"], r.prompt_tokens);
                    self.inc(KeyTokens, &[key, team, "output"], r.completion_tokens);
                }
                // `if r.cost_usd:` skips 0.0 (and NaN is truthy in Python)
                if let Some(cost) = r.cost_usd.filter(|&c| c != 0.0) {
                    self.add(KeyCostUsd, &[key, team], cost);
                }
            }
        }
    }

    /// Every counter family with at least one series, in `metrics.FAMILIES` order:
    /// (name, is a float family, series).
    pub fn counter_families(&self) -> impl Iterator<Item = (&'static str, bool, &[Series<Count>])> {
        COUNTERS
            .iter()
            .zip(&self.counters)
            .filter(|(_, f)| !f.series.is_empty())
            .map(|(&(name, float), f)| (name, float, f.series()))
    }

    /// Every histogram family with at least one series, in `metrics.FAMILIES` order.
    pub fn histogram_families(&self) -> impl Iterator<Item = (&'static str, &[Series<Buckets>])> {
        HISTOGRAMS
            .iter()
            .zip(&self.histograms)
            .filter(|(_, f)| !f.series.is_empty())
            .map(|(&(name, _), f)| (name, f.series()))
    }

    /// How many series exist (all families).
    pub fn series_count(&self) -> usize {
        self.counters.iter().map(|f| f.series.len()).sum::<usize>()
            + self.histograms.iter().map(|f| f.series.len()).sum::<usize>()
    }
}
