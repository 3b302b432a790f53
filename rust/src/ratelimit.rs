//! Keyed GCRA (generic cell rate algorithm) rate limiter.
//!
//! Each bucket is one `f64`: its TAT (theoretical arrival time), the instant at which the bucket
//! is full again. A limit is `(rate per second, burst)`; a call of `cost` cells is admitted when
//! `max(tat, now) + cost/rate - burst/rate <= now`, and then moves the TAT by `cost/rate`.
//! Requests per minute N is `(N / 60, N)` with cost 1; tokens per minute M is `(M / 60, M)` with
//! cost = the token count.
//!
//! One [`RateLimiter::acquire`] checks several buckets (key, user, team, model; requests and
//! tokens) under their shard locks and admits only if all admit; a denial charges nothing and
//! returns the earliest time all of them would admit. A cost larger than its burst can never be
//! admitted and is reported as [`Decision::Never`], not as a retry-after that would lie.
//!
//! Memory: a key absent from the map is a full bucket, so a bucket whose TAT has passed is idle
//! and is dropped (amortised sweeps on insert, or [`RateLimiter::evict_idle`]). A hard cap of
//! `max_keys` holds even under a flood of distinct keys: see [`RateLimiter::new`].

use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use hashbrown::HashTable;

/// Most buckets one `acquire` may check: a request touches ~4-8 (key, user, team, model ×
/// requests, tokens); a fixed bound keeps the per-call scratch on the stack.
pub const MAX_CHECKS: usize = 16;

/// Below this many keys per shard the limiter uses one shard: sharding only pays once the map
/// is big enough for lock contention or sweep pauses to matter.
const KEYS_PER_SHARD_MIN: usize = 4096;
const SHARDS_MAX: usize = 64;
/// An idle sweep runs when a shard doubles since its last sweep, but not below this size, so the
/// sweep cost (a scan of the shard) stays O(1) amortised per insert.
const SWEEP_FLOOR: usize = 256;

/// A limit: `rate_per_second` cells refill per second, at most `burst` cells banked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    rate_per_second: f64,
    burst: f64,
}

impl Limit {
    pub fn new(rate_per_second: f64, burst: f64) -> Result<Limit, RateLimitError> {
        if !(rate_per_second.is_finite() && rate_per_second > 0.0) {
            return Err(RateLimitError::InvalidRate(rate_per_second));
        }
        if !(burst.is_finite() && burst >= 0.0) {
            return Err(RateLimitError::InvalidBurst(burst));
        }
        Ok(Limit { rate_per_second, burst })
    }

    pub fn rate_per_second(&self) -> f64 {
        self.rate_per_second
    }

    pub fn burst(&self) -> f64 {
        self.burst
    }
}

/// One bucket to charge in an [`RateLimiter::acquire`] call.
#[derive(Clone, Copy, Debug)]
pub struct Check<'a> {
    /// Bucket identity; combine the limit's identity into it, e.g. `"tpm:team:infra"`.
    pub key: &'a str,
    pub limit: Limit,
    pub cost: f64,
}

/// The outcome of an [`RateLimiter::acquire`] call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    /// Every bucket was charged.
    Admitted,
    /// Nothing was charged; the same call is admitted once this many seconds have passed
    /// (if nothing else charges the buckets meanwhile). Always > 0.
    RetryAfter(f64),
    /// Nothing was charged; some cost exceeds its bucket's burst, so no wait would help.
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RateLimitError {
    InvalidRate(f64),
    InvalidBurst(f64),
    InvalidCost(f64),
    InvalidNow(f64),
    InvalidMaxKeys(usize),
    TooManyChecks(usize),
}

impl std::fmt::Display for RateLimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::InvalidRate(r) => write!(f, "rate_per_second must be finite and > 0, got {r}"),
            Self::InvalidBurst(b) => write!(f, "burst must be finite and >= 0, got {b}"),
            Self::InvalidCost(c) => write!(f, "cost must be finite and >= 0, got {c}"),
            Self::InvalidNow(n) => write!(f, "now must be a finite number of seconds, got {n}"),
            Self::InvalidMaxKeys(m) => {
                write!(f, "max_keys must be at least {MAX_CHECKS}, got {m}")
            }
            Self::TooManyChecks(n) => {
                write!(f, "at most {MAX_CHECKS} checks per acquire call, got {n}")
            }
        }
    }
}

impl std::error::Error for RateLimitError {}

struct Bucket {
    key: Box<str>,
    /// Theoretical arrival time, seconds on the limiter's clock.
    tat: f64,
}

struct Shard {
    table: HashTable<Bucket>,
    /// Length at which the next idle sweep runs.
    sweep_at: usize,
}

/// A thread-safe map of GCRA buckets keyed by string, sharded by key hash.
pub struct RateLimiter {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    max_keys: usize,
    /// Keyed SipHash (random per limiter): request-controlled keys (user ids) cannot be chosen
    /// to collide, so no caller can overload one shard or degrade the table.
    hasher: RandomState,
    epoch: Instant,
}

/// Per-call scratch for one distinct key: what the bucket becomes if the call is admitted.
#[derive(Clone, Copy)]
struct Pending<'a> {
    key: &'a str,
    hash: u64,
    shard: usize,
    new_tat: f64,
}

impl RateLimiter {
    /// A limiter holding at most `max_keys` buckets (`max_keys >= MAX_CHECKS`).
    ///
    /// Cap policy: keys are split over up to 64 shards, each holding at most
    /// `max_keys / shards` buckets, so the total never exceeds `max_keys`. When a new key arrives
    /// at a full shard, idle buckets (full again) are dropped first — that loses nothing. If that
    /// is not enough, the busy buckets nearest to full (smallest TAT) are forgotten, down to
    /// 15/16 of the shard's cap so the scan is amortised: forgetting a bucket forgives at most
    /// the smallest outstanding debt. New keys are never refused and never admitted untracked.
    pub fn new(max_keys: usize) -> Result<RateLimiter, RateLimitError> {
        if max_keys < MAX_CHECKS {
            return Err(RateLimitError::InvalidMaxKeys(max_keys));
        }
        let shards = (max_keys / KEYS_PER_SHARD_MIN).clamp(1, SHARDS_MAX);
        // a power of two so the shard index is a mask of the hash
        let shards = if shards.is_power_of_two() { shards } else { shards.next_power_of_two() / 2 };
        let shard_cap = max_keys / shards;
        let shards = (0..shards)
            .map(|_| Mutex::new(Shard { table: HashTable::new(), sweep_at: SWEEP_FLOOR }))
            .collect();
        Ok(RateLimiter {
            shards,
            shard_cap,
            max_keys,
            hasher: RandomState::new(),
            epoch: Instant::now(),
        })
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Seconds on the default monotonic clock (0 when the limiter was created).
    pub fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// Number of buckets held (idle ones included until swept).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).table.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the bucket tables (allocations of the tables themselves, plus key bytes).
    pub fn memory_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let shard = lock(s);
                shard.table.allocation_size() + shard.table.iter().map(|b| b.key.len()).sum::<usize>()
            })
            .sum()
    }

    fn resolve_now(&self, now: Option<f64>) -> Result<f64, RateLimitError> {
        match now {
            None => Ok(self.now()),
            Some(n) if n.is_finite() => Ok(n),
            Some(n) => Err(RateLimitError::InvalidNow(n)),
        }
    }

    fn shard_of(&self, hash: u64) -> usize {
        // bits 32.. : hashbrown uses the low bits for the slot and the top 7 for its tag
        ((hash >> 32) as usize) & (self.shards.len() - 1)
    }

    /// Charge every check, or none. `now`: seconds on the limiter's clock (`None`: monotonic).
    pub fn acquire(&self, checks: &[Check<'_>], now: Option<f64>) -> Result<Decision, RateLimitError> {
        if checks.len() > MAX_CHECKS {
            return Err(RateLimitError::TooManyChecks(checks.len()));
        }
        let now = self.resolve_now(now)?;
        let mut never = false;
        for check in checks {
            if !(check.cost.is_finite() && check.cost >= 0.0) {
                return Err(RateLimitError::InvalidCost(check.cost));
            }
            never |= check.cost > check.limit.burst;
        }
        if never {
            return Ok(Decision::Never);
        }

        let empty = Pending { key: "", hash: 0, shard: 0, new_tat: 0.0 };
        let mut pending = [empty; MAX_CHECKS];
        let mut n_pending = 0;
        // cumulative cost per pending key: the same key twice is one bucket charged twice
        let mut pending_cost = [0.0f64; MAX_CHECKS];
        for check in checks {
            if check.cost == 0.0 {
                continue;
            }
            let hash = self.hasher.hash_one(check.key);
            let slot = match pending[..n_pending].iter().position(|p| p.hash == hash && p.key == check.key) {
                Some(i) => i,
                None => {
                    pending[n_pending] = Pending { key: check.key, hash, shard: self.shard_of(hash), new_tat: f64::NEG_INFINITY };
                    n_pending += 1;
                    n_pending - 1
                }
            };
            pending_cost[slot] += check.cost;
            if pending_cost[slot] > check.limit.burst {
                return Ok(Decision::Never);
            }
        }
        let pending = &mut pending[..n_pending];

        // Lock each shard once, in index order (a global order, so no deadlock).
        let mut shard_ids = [0usize; MAX_CHECKS];
        for (i, p) in pending.iter().enumerate() {
            shard_ids[i] = p.shard;
        }
        let shard_ids = &mut shard_ids[..n_pending];
        shard_ids.sort_unstable();
        let mut guards: [Option<MutexGuard<'_, Shard>>; MAX_CHECKS] = Default::default();
        let mut prev = usize::MAX;
        for (i, &id) in shard_ids.iter().enumerate() {
            if id != prev {
                guards[i] = Some(lock(&self.shards[id]));
                prev = id;
            }
        }
        let guard_index = |shard: usize| shard_ids.partition_point(|&id| id < shard);

        for p in pending.iter_mut() {
            let shard = guards[guard_index(p.shard)].as_ref().expect("shard locked");
            p.new_tat = shard
                .table
                .find(p.hash, |b| &*b.key == p.key)
                .map_or(f64::NEG_INFINITY, |b| b.tat);
        }
        let mut retry_at = f64::NEG_INFINITY;
        for check in checks {
            if check.cost == 0.0 {
                continue;
            }
            let p = pending.iter_mut().find(|p| p.key == check.key).expect("pending key");
            let (new_tat, allow_at) = gcra(p.new_tat, now, check.limit, check.cost);
            p.new_tat = new_tat;
            retry_at = retry_at.max(allow_at);
        }
        if retry_at > now {
            return Ok(Decision::RetryAfter(seconds_until(now, retry_at)));
        }

        // Admitted: make room (sweep idle, then cap) per shard before writing anything, so the
        // eviction cannot undo a charge of this same call.
        for (i, &id) in shard_ids.iter().enumerate() {
            let Some(shard) = guards[i].as_mut() else { continue };
            self.make_room(shard, now, pending.iter().filter(|p| p.shard == id));
        }
        for p in pending.iter() {
            let shard = guards[guard_index(p.shard)].as_mut().expect("shard locked");
            self.store(shard, p.key, p.hash, p.new_tat);
        }
        Ok(Decision::Admitted)
    }

    /// Ensure `incoming` keys fit in `shard` without exceeding the cap.
    fn make_room<'a>(&self, shard: &mut Shard, now: f64, incoming: impl Iterator<Item = &'a Pending<'a>> + Clone) {
        let absent = |shard: &Shard| {
            incoming.clone().filter(|p| shard.table.find(p.hash, |b| &*b.key == p.key).is_none()).count()
        };
        let mut new_keys = absent(shard);
        if new_keys == 0 {
            return;
        }
        let len = shard.table.len();
        if len + new_keys > shard.sweep_at || len + new_keys > self.shard_cap {
            sweep_idle(shard, now, &self.hasher);
            new_keys = absent(shard);
            shard.sweep_at = (shard.table.len() * 2).max(SWEEP_FLOOR);
        }
        if shard.table.len() + new_keys <= self.shard_cap {
            return;
        }
        // Forget the busy buckets nearest to full, keeping this call's own keys.
        let target = self.shard_cap.saturating_sub(new_keys + self.shard_cap / 16);
        let is_ours = |b: &Bucket| incoming.clone().any(|p| &*b.key == p.key);
        let mut tats: Vec<f64> = shard.table.iter().filter(|b| !is_ours(b)).map(|b| b.tat).collect();
        let ours = shard.table.len() - tats.len();
        let evict = (shard.table.len() - target.max(ours)).min(tats.len());
        if evict == 0 {
            return;
        }
        let (_, threshold, _) = tats.select_nth_unstable_by(evict - 1, f64::total_cmp);
        let threshold = *threshold;
        let mut left = evict;
        shard.table.retain(|b| {
            if left > 0 && b.tat <= threshold && !is_ours(b) {
                left -= 1;
                false
            } else {
                true
            }
        });
    }

    fn store(&self, shard: &mut Shard, key: &str, hash: u64, tat: f64) {
        match shard.table.find_mut(hash, |b| &*b.key == key) {
            Some(bucket) => bucket.tat = tat,
            None => {
                shard.table.insert_unique(hash, Bucket { key: key.into(), tat }, |b| self.hasher.hash_one(&*b.key));
            }
        }
    }

    /// Give back up to `amount` cells (an estimate that was too high), never past a full
    /// bucket. Returns the cells actually given back.
    pub fn refund(&self, key: &str, limit: Limit, amount: f64, now: Option<f64>) -> Result<f64, RateLimitError> {
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(RateLimitError::InvalidCost(amount));
        }
        let now = self.resolve_now(now)?;
        let hash = self.hasher.hash_one(key);
        let mut shard = lock(&self.shards[self.shard_of(hash)]);
        let Some(bucket) = shard.table.find_mut(hash, |b| &*b.key == key) else {
            return Ok(0.0);
        };
        if bucket.tat <= now {
            return Ok(0.0);
        }
        let new_tat = (bucket.tat - amount / limit.rate_per_second).max(now);
        let refunded = ((bucket.tat - new_tat) * limit.rate_per_second).min(amount);
        bucket.tat = new_tat;
        Ok(refunded)
    }

    /// Charge `amount` cells unconditionally (usage beyond an estimate already happened): the
    /// bucket may go into debt past its burst, which delays later calls until it is paid off.
    pub fn charge(&self, key: &str, limit: Limit, amount: f64, now: Option<f64>) -> Result<(), RateLimitError> {
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(RateLimitError::InvalidCost(amount));
        }
        let now = self.resolve_now(now)?;
        if amount == 0.0 {
            return Ok(());
        }
        let hash = self.hasher.hash_one(key);
        let shard_id = self.shard_of(hash);
        let mut shard = lock(&self.shards[shard_id]);
        let old = shard.table.find(hash, |b| &*b.key == key).map_or(f64::NEG_INFINITY, |b| b.tat);
        let new_tat = old.max(now) + amount / limit.rate_per_second;
        let me = Pending { key, hash, shard: shard_id, new_tat };
        self.make_room(&mut shard, now, std::iter::once(&me));
        self.store(&mut shard, key, hash, new_tat);
        Ok(())
    }

    /// Drop every idle bucket (full again at `now`); returns how many were dropped.
    pub fn evict_idle(&self, now: Option<f64>) -> Result<usize, RateLimitError> {
        let now = self.resolve_now(now)?;
        Ok(self
            .shards
            .iter()
            .map(|s| {
                let mut shard = lock(s);
                let before = shard.table.len();
                sweep_idle(&mut shard, now, &self.hasher);
                shard.sweep_at = (shard.table.len() * 2).max(SWEEP_FLOOR);
                before - shard.table.len()
            })
            .sum())
    }
}

/// One GCRA step from bucket state `tat`: the TAT after charging `cost`, and the earliest
/// instant at which that charge conforms. `allow_at <= base` by construction (subtracting a
/// non-negative slack), so a full bucket always admits a cost <= burst despite rounding.
fn gcra(tat: f64, now: f64, limit: Limit, cost: f64) -> (f64, f64) {
    let base = tat.max(now);
    let new_tat = base + cost / limit.rate_per_second;
    let allow_at = new_tat - limit.burst / limit.rate_per_second;
    // Clamp to base: burst/rate and cost/rate round independently; when cost == burst the
    // difference must not leave allow_at an ulp above base (which would never become <= now).
    (new_tat, allow_at.min(base))
}

/// `retry_at - now`, rounded up if needed so that `now + result >= retry_at` holds in f64
/// arithmetic: a caller who waits exactly the returned time is admitted, not refused by one
/// ulp. A guard: 2M random pairs over 17 orders of magnitude never needed a step, but the
/// promise to the caller should not rest on that sample.
fn seconds_until(now: f64, retry_at: f64) -> f64 {
    let mut wait = retry_at - now;
    while now + wait < retry_at {
        wait = f64::from_bits(wait.to_bits() + 1);
    }
    wait
}

fn sweep_idle(shard: &mut Shard, now: f64, hasher: &RandomState) {
    shard.table.retain(|b| b.tat > now);
    if shard.table.capacity() > 4 * shard.table.len().max(SWEEP_FLOOR) {
        // give memory back after a burst of keys has gone idle
        shard.table.shrink_to(shard.table.len(), |b| hasher.hash_one(&*b.key));
    }
}

/// Bucket state is plain floats, consistent after any panic: a poisoned lock is still usable.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[path = "ratelimit_tests.rs"]
mod tests;
