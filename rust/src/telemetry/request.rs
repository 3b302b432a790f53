//! What `Telemetry.finish_request` derives from a finished request, the way the Python it
//! replaces does (`Observability.on_finish`, `Outcome.facts`, `PriceBook.request_cost`), float
//! step for float step: the price of an answer, the derived timings and the wall-clock start.
//! The PyO3 shell (rust/src/python/telemetry.rs) reads the request's objects and calls these.

use rustc_hash::FxHashMap;

/// A deployment's price in micro-USD per token (USD per 1M tokens, `config.Price`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// None: cached prompt tokens cost the input price.
    pub cached_input: Option<f64>,
}

impl Price {
    /// `PriceBook.cost(price, usage)` before its `math.ceil`: fresh prompt tokens at the input
    /// price, cached ones at the cached-input price, completion at the output price, added left
    /// to right in f64 (Python turns each int into the nearest float, as `as f64` does).
    pub fn cost(&self, prompt: i64, completion: i64, cached: i64) -> f64 {
        let fresh = (i128::from(prompt) - i128::from(cached)).max(0);
        let cached_price = self.cached_input.unwrap_or(self.input);
        fresh as f64 * self.input + cached as f64 * cached_price + completion as f64 * self.output
    }
}

/// Deployment -> price (None: known to have no price), and upstream name -> provider name: what
/// `PriceBook` and `Observability.upstreams` give the Python path. Replaced whole on a reload.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    prices: FxHashMap<Box<str>, Option<Price>>,
    providers: FxHashMap<Box<str>, Box<str>>,
}

impl Catalog {
    pub fn set_prices<'a>(&mut self, prices: impl IntoIterator<Item = (&'a str, Option<Price>)>) {
        self.prices = prices.into_iter().map(|(d, p)| (Box::from(d), p)).collect();
    }

    pub fn set_providers<'a>(&mut self, providers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.providers = providers.into_iter().map(|(u, p)| (Box::from(u), Box::from(p))).collect();
    }

    pub fn price(&self, deployment: &str) -> Option<Price> {
        self.prices.get(deployment).copied().flatten()
    }

    /// `upstreams.get(target, ("", ""))[0]`: "" for an upstream it does not know.
    pub fn provider(&self, upstream: &str) -> &str {
        self.providers.get(upstream).map_or("", |p| p)
    }

    pub fn prices_len(&self) -> usize {
        self.prices.len()
    }

    pub fn providers_len(&self) -> usize {
        self.providers.len()
    }

    /// `PriceBook.request_cost`'s cost once it knows the billed deployment: `None` when unpriced,
    /// else whole micro-dollars (`math.ceil`), kept as an f64: the ceiling of a finite f64 is an
    /// integer that f64 holds exactly, and Python's `micro / 1_000_000` then rounds the same
    /// quotient the same way, for every size of cost.
    pub fn micro(&self, deployment: &str, prompt: i64, completion: i64, cached: i64) -> Option<f64> {
        self.price(deployment).map(|p| p.cost(prompt, completion, cached).ceil())
    }
}

/// `max(x, 0.0)` as Python evaluates it: `x` unless `0.0 > x` (so -0.0 and NaN stay).
#[inline]
pub fn py_max0(x: f64) -> f64 {
    if 0.0 > x {
        0.0
    } else {
        x
    }
}

/// `Outcome.overhead_s`: `max(ended - started - upstream_s - client_s, 0.0)`, subtracted left to right.
#[inline]
pub fn overhead(ended: f64, started: f64, upstream_s: f64, client_s: f64) -> f64 {
    py_max0(ended - started - upstream_s - client_s)
}

/// `now_ns - int((now - started) * 1e9)`: the request's start on the wall clock, from one reading
/// of both clocks (`int()` truncates toward zero, as `as i64` does in range).
#[inline]
pub fn wall_start_ns(now_ns: i64, now: f64, started: f64) -> i64 {
    now_ns.wrapping_sub(((now - started) * 1e9) as i64)
}

/// (`time.time_ns()`, `time.perf_counter()`) now. On Linux CPython reads perf_counter from
/// CLOCK_MONOTONIC (`time.get_clock_info("perf_counter")`) as integer nanoseconds and converts
/// them as `_PyTime_AsSecondsDouble` does (whole seconds exactly, else ns as f64 / 1e9), so the
/// value equals what Python would have read at the same instant.
pub fn now() -> (i64, f64) {
    (clock_ns(libc::CLOCK_REALTIME), seconds_of_ns(clock_ns(libc::CLOCK_MONOTONIC)))
}

#[allow(clippy::useless_conversion)] // identity on 64-bit targets only
fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    // from(): time_t and c_long are i32 on 32-bit targets
    i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
}

/// `_PyTime_AsSecondsDouble`.
pub fn seconds_of_ns(ns: i64) -> f64 {
    if ns % 1_000_000_000 == 0 {
        (ns / 1_000_000_000) as f64
    } else {
        ns as f64 / 1e9
    }
}
