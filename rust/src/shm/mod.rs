//! Rate limits, budgets and counters shared by every worker process on one machine.
//!
//! `llmgw serve --workers N` runs N processes; a limit of 600 requests per minute must be 600
//! for the whole gateway, not 600 per worker. [`SharedCounters`] keeps GCRA buckets, budget
//! counters and plain counters in one file that every process maps (`MAP_SHARED`), and updates
//! them with atomic compare-and-swap on the mapped memory: no locks (a worker that dies
//! mid-update cannot wedge the others) and no syscalls on the hot path except reading
//! `CLOCK_MONOTONIC` (vDSO) when the caller passes no `now`. Layout and the slot-claim protocol
//! are in [`table`]; key hashing in [`hash`].
//!
//! Put the file on tmpfs (`/dev/shm`). On a disk filesystem the first write to each 4 KiB page
//! of the preallocated file costs ~1-2 ms (extent conversion; measured: the first 4-key acquire
//! on a new table took 0.9-1.8 ms on the root fs vs ~17 µs on tmpfs), and the kernel keeps
//! writing dirty pages back to disk. The default 2^18 slots are a 16 MiB file, allocated up
//! front.
//!
//! # Differences from the in-process [`RateLimiter`](crate::ratelimit::RateLimiter)
//! Same argument checks and the same GCRA (a key repeated in one call is one bucket charged
//! with the sum; a cost above its burst is [`Decision::Never`]; refund never past a full
//! bucket; charge may go into debt), with these differences:
//! - **Time is whole nanoseconds** (i64, CLOCK_MONOTONIC). A charge of `cost` cells moves the
//!   TAT by `floor(cost / rate * 1e9)` ns and the burst allows `ceil(burst / rate * 1e9)` ns,
//!   so `n` equal charges that sum to at most the burst always fit a full bucket despite
//!   rounding; the price is at most 1 ns of refill (`rate * 1e-9` cells) forgiven per charge.
//!   `now` must lie within ±4e9 s, and a TAT saturates ~290 years out (i64 ns), which only a
//!   limit with burst / rate of centuries could reach.
//! - **All-or-nothing up to a refund race.** A multi-bucket acquire first reads every bucket
//!   and returns the wait without writing anything if one denies (the usual denial path). If
//!   all admit, it charges them one by one, each by a CAS that re-checks its bucket; should a
//!   bucket deny by then (another process charged it in between), the buckets already charged
//!   are refunded and the call starts over (up to 4 times, then it reports the wait). Admission
//!   is never over the limit; but between such a charge and its refund, another process may be
//!   refused by a bucket that was only briefly charged.
//! - **Slots are never freed**: no idle eviction and no `max_keys`; a full table is
//!   [`ShmError::Full`], never a silently untracked key.

pub mod hash;
pub mod table;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::ratelimit::{Check, Decision, Limit, RateLimitError, MAX_CHECKS};
use hash::Kind;
use table::{Slot, Table};

pub use table::{FORMAT_VERSION, MAX_SLOTS, PROBE_LIMIT};

/// Default table size: keys are per API key, user, team, model and budget period, so 2^18 slots
/// (16 MiB) leaves a wide margin below the ~92% load where new keys start to find no slot.
pub const DEFAULT_SLOTS: usize = 1 << 18;

/// Attempts of a multi-bucket acquire whose charge pass lost a race (see the module docs).
const ACQUIRE_ATTEMPTS: usize = 4;

/// Largest |now| in seconds: 4e9 s is 4e18 ns, leaving i64 headroom for TATs ahead of `now`.
const MAX_NOW_SECONDS: f64 = 4e9;

#[derive(Debug)]
pub enum ShmError {
    /// Opening, creating or mapping the file failed (`NotFound` for an absent table).
    Io { path: PathBuf, source: io::Error },
    /// The file exists but is not a table this build can read.
    NotATable { path: PathBuf, reason: String },
    /// `slots` for a new table must be in `1..=MAX_SLOTS` (it is rounded up to a power of two).
    InvalidSlots(usize),
    /// No free slot for a new key within the probe limit.
    Full { path: PathBuf, capacity: usize, used: usize, probes: usize },
    /// An argument check shared with the in-process limiter.
    RateLimit(RateLimitError),
    /// `now` is finite but outside ±4e9 s.
    NowOutOfRange(f64),
    /// A budget amount that must be >= 0 is negative.
    NegativeAmount { name: &'static str, value: i64 },
}

impl fmt::Display for ShmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::NotATable { path, reason } => {
                write!(f, "{} is not a shared counters table of format version {FORMAT_VERSION}: {reason}", path.display())
            }
            Self::InvalidSlots(n) => write!(f, "slots must be between 1 and {MAX_SLOTS}, got {n}"),
            Self::Full { path, capacity, used, probes } => write!(
                f,
                "shared counters table {} is full: no free slot for a new key within {probes} probes \
                 ({used} of {capacity} slots in use); recreate it with more slots",
                path.display()
            ),
            Self::RateLimit(e) => write!(f, "{e}"),
            Self::NowOutOfRange(n) => write!(f, "now must be within ±{MAX_NOW_SECONDS:e} seconds, got {n}"),
            Self::NegativeAmount { name, value } => write!(f, "{name} must be >= 0, got {value}"),
        }
    }
}

impl std::error::Error for ShmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<RateLimitError> for ShmError {
    fn from(e: RateLimitError) -> Self {
        ShmError::RateLimit(e)
    }
}

/// Nanoseconds on CLOCK_MONOTONIC: the clock of `time.monotonic()` in every process.
#[allow(clippy::useless_conversion)] // identity on 64-bit targets only
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes one timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    // from(): time_t and c_long are i32 on 32-bit targets
    i64::from(ts.tv_sec) * 1_000_000_000 + i64::from(ts.tv_nsec)
}

/// The instant of one call: nanoseconds, and the caller's seconds if it passed them (a retry-after
/// is then computed so that `now + wait` in f64 lands on or after the instant it names).
#[derive(Clone, Copy)]
struct Now {
    ns: i64,
    seconds: Option<f64>,
}

fn resolve_now(now: Option<f64>) -> Result<Now, ShmError> {
    match now {
        None => Ok(Now { ns: monotonic_ns(), seconds: None }),
        Some(s) if !s.is_finite() => Err(RateLimitError::InvalidNow(s).into()),
        Some(s) if s.abs() > MAX_NOW_SECONDS => Err(ShmError::NowOutOfRange(s)),
        Some(s) => Ok(Now { ns: seconds_to_ns(s), seconds: Some(s) }),
    }
}

/// Monotonic in `s`, which the retry-after guarantee relies on.
fn seconds_to_ns(s: f64) -> i64 {
    (s * 1e9).round() as i64
}

/// Seconds from `now` until `at_ns` (> now.ns), rounded up so that a caller passing
/// `now + wait` back is at or after `at_ns`.
fn wait_seconds(now: Now, at_ns: i64) -> f64 {
    let Some(now_s) = now.seconds else {
        return (at_ns - now.ns) as f64 / 1e9;
    };
    // the first f64 instant that converts to at_ns or later: a step or two at most, as each
    // step moves by one ulp of the instant, at least ~1 ns at the magnitudes that lose ns
    let mut at = at_ns as f64 / 1e9;
    while seconds_to_ns(at) < at_ns {
        at = at.next_up();
    }
    // as in ratelimit::seconds_until: `now + (at - now)` may round below `at`
    let mut wait = at - now_s;
    while now_s + wait < at {
        wait = wait.next_up();
    }
    wait
}

/// A TAT no charge has set: full since forever. Stored XOR i64::MIN so that a zeroed slot (a
/// fresh claim) reads as NEVER rather than as "full at t = 0", which would be wrong for a
/// negative fake clock.
const NEVER: i64 = i64::MIN;

fn load_tat(slot: &Slot) -> i64 {
    slot.a.load(Ordering::Relaxed) ^ i64::MIN
}

/// CAS the TAT word from `current` to `new` (both decoded).
fn cas_tat(slot: &Slot, current: i64, new: i64) -> Result<(), i64> {
    slot.a
        .compare_exchange_weak(current ^ i64::MIN, new ^ i64::MIN, Ordering::Relaxed, Ordering::Relaxed)
        .map(drop)
        .map_err(|seen| seen ^ i64::MIN)
}

/// Nanoseconds that `cells` move a TAT, rounded down (see the module docs); saturates.
fn cells_ns(cells: f64, limit: Limit) -> i64 {
    (cells / limit.rate_per_second() * 1e9).floor() as i64
}

/// Nanoseconds of slack the burst allows, rounded up.
fn burst_ns(limit: Limit) -> i64 {
    (limit.burst() / limit.rate_per_second() * 1e9).ceil() as i64
}

/// One GCRA step, as `ratelimit::gcra` in nanoseconds: the TAT after charging `cost` and the
/// earliest instant that charge conforms, clamped to `base` so a full bucket admits its burst.
fn gcra(tat: i64, now: i64, limit: Limit, cost: f64) -> (i64, i64) {
    let base = tat.max(now);
    let new_tat = base.saturating_add(cells_ns(cost, limit));
    let allow_at = new_tat.saturating_sub(burst_ns(limit)).min(base);
    (new_tat, allow_at)
}

/// Every check of `key` in `checks`, in order, from bucket state `tat`: the resulting TAT and
/// the latest instant any of them conforms.
fn gcra_for_key(checks: &[Check<'_>], key: &str, tat: i64, now: i64) -> (i64, i64) {
    let mut allow_at = i64::MIN;
    let mut tat = tat;
    for check in checks.iter().filter(|c| c.cost > 0.0 && c.key == key) {
        let (t, a) = gcra(tat, now, check.limit, check.cost);
        tat = t;
        allow_at = allow_at.max(a);
    }
    (tat, allow_at)
}

/// Give back `added` ns that this call charged, never past a full bucket at `now`.
fn give_back(slot: &Slot, added: i64, now: i64) {
    let mut current = load_tat(slot);
    loop {
        let new = current.saturating_sub(added).max(now).min(current);
        if new == current {
            return;
        }
        match cas_tat(slot, current, new) {
            Ok(()) => return,
            Err(seen) => current = seen,
        }
    }
}

fn non_negative(name: &'static str, value: i64) -> Result<(), ShmError> {
    if value < 0 {
        return Err(ShmError::NegativeAmount { name, value });
    }
    Ok(())
}

/// GCRA buckets, budgets and counters in a table file shared by processes (see module docs).
pub struct SharedCounters {
    table: Table,
}

impl fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedCounters")
            .field("path", &self.path())
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl SharedCounters {
    /// Create an empty table of `slots` (rounded up to a power of two) at `path`, replacing any
    /// file there. The replacement is a rename: processes that still map the old file keep
    /// using it, so create the table once (in the supervisor) before workers open it.
    pub fn create(path: impl AsRef<Path>, slots: usize) -> Result<SharedCounters, ShmError> {
        Ok(SharedCounters { table: Table::create(path.as_ref(), slots, None)? })
    }

    /// `create` with given hash seeds, for tests that want a reproducible layout.
    #[cfg(test)]
    pub(crate) fn create_with_seeds(path: impl AsRef<Path>, slots: usize, seeds: [u64; 4]) -> Result<SharedCounters, ShmError> {
        Ok(SharedCounters { table: Table::create(path.as_ref(), slots, Some(seeds))? })
    }

    /// Map the existing table at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SharedCounters, ShmError> {
        Ok(SharedCounters { table: Table::open(path.as_ref())? })
    }

    pub fn path(&self) -> &Path {
        self.table.path()
    }

    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Slots in use (claimed by any process).
    pub fn len(&self) -> usize {
        self.table.used()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    // --- rate limits ---------------------------------------------------------------------------

    /// Charge every check, or none (up to the refund race in the module docs). `now`: seconds
    /// on CLOCK_MONOTONIC (`None`: read it).
    pub fn acquire(&self, checks: &[Check<'_>], now: Option<f64>) -> Result<Decision, ShmError> {
        if checks.len() > MAX_CHECKS {
            return Err(RateLimitError::TooManyChecks(checks.len()).into());
        }
        let now = resolve_now(now)?;
        let mut never = false;
        for check in checks {
            if !(check.cost.is_finite() && check.cost >= 0.0) {
                return Err(RateLimitError::InvalidCost(check.cost).into());
            }
            never |= check.cost > check.limit.burst();
        }
        if never {
            return Ok(Decision::Never);
        }

        // distinct keys in first-seen order; a repeated key's costs add up against its burst
        let mut keys = [""; MAX_CHECKS];
        let mut key_cost = [0.0f64; MAX_CHECKS];
        let mut n = 0;
        for check in checks.iter().filter(|c| c.cost > 0.0) {
            let i = match keys[..n].iter().position(|k| *k == check.key) {
                Some(i) => i,
                None => {
                    keys[n] = check.key;
                    n += 1;
                    n - 1
                }
            };
            key_cost[i] += check.cost;
            if key_cost[i] > check.limit.burst() {
                return Ok(Decision::Never);
            }
        }
        let keys = &keys[..n];

        let mut slots: [Option<&Slot>; MAX_CHECKS] = [None; MAX_CHECKS];
        let mut added = [0i64; MAX_CHECKS];
        let mut denied_at = i64::MIN;
        for _ in 0..ACQUIRE_ATTEMPTS {
            // 1. read every bucket; a denial here writes nothing
            let mut allow_at = i64::MIN;
            for (i, key) in keys.iter().enumerate() {
                if slots[i].is_none() {
                    slots[i] = self.table.find(Kind::Rate, key);
                }
                let tat = slots[i].map_or(NEVER, load_tat);
                allow_at = allow_at.max(gcra_for_key(checks, key, tat, now.ns).1);
            }
            if allow_at > now.ns {
                return Ok(Decision::RetryAfter(wait_seconds(now, allow_at)));
            }
            // 2. charge bucket by bucket, each CAS re-checking its bucket
            denied_at = i64::MIN;
            let mut charged = 0;
            for (i, key) in keys.iter().enumerate() {
                let slot = match slots[i] {
                    Some(slot) => slot,
                    None => match self.table.find_or_claim(Kind::Rate, key) {
                        Ok(claimed) => *slots[i].insert(claimed.slot),
                        Err(e) => {
                            self.roll_back(&slots[..charged], &added[..charged], now.ns);
                            return Err(e);
                        }
                    },
                };
                let mut tat = load_tat(slot);
                loop {
                    let (new_tat, allow_at) = gcra_for_key(checks, key, tat, now.ns);
                    if allow_at > now.ns {
                        denied_at = allow_at;
                        break;
                    }
                    match cas_tat(slot, tat, new_tat) {
                        Ok(()) => {
                            added[i] = new_tat - tat.max(now.ns);
                            break;
                        }
                        Err(seen) => tat = seen,
                    }
                }
                if denied_at > now.ns {
                    break;
                }
                charged += 1;
            }
            if charged == n {
                return Ok(Decision::Admitted);
            }
            self.roll_back(&slots[..charged], &added[..charged], now.ns);
        }
        Ok(Decision::RetryAfter(wait_seconds(now, denied_at)))
    }

    fn roll_back(&self, slots: &[Option<&Slot>], added: &[i64], now: i64) {
        for (slot, &added) in slots.iter().zip(added) {
            give_back(slot.expect("charged buckets have slots"), added, now);
        }
    }

    /// Give back up to `amount` cells, never past a full bucket; returns the cells given back
    /// (0.0 for an absent or full bucket).
    pub fn refund(&self, key: &str, limit: Limit, amount: f64, now: Option<f64>) -> Result<f64, ShmError> {
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(RateLimitError::InvalidCost(amount).into());
        }
        let now = resolve_now(now)?;
        let Some(slot) = self.table.find(Kind::Rate, key) else {
            return Ok(0.0);
        };
        let mut tat = load_tat(slot);
        loop {
            if tat <= now.ns {
                return Ok(0.0);
            }
            let new_tat = tat.saturating_sub(cells_ns(amount, limit)).max(now.ns);
            match cas_tat(slot, tat, new_tat) {
                Ok(()) => return Ok(((tat - new_tat) as f64 / 1e9 * limit.rate_per_second()).min(amount)),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Charge `amount` cells unconditionally: the bucket may go into debt past its burst.
    pub fn charge(&self, key: &str, limit: Limit, amount: f64, now: Option<f64>) -> Result<(), ShmError> {
        if !(amount.is_finite() && amount >= 0.0) {
            return Err(RateLimitError::InvalidCost(amount).into());
        }
        let now = resolve_now(now)?;
        if amount == 0.0 {
            return Ok(());
        }
        let slot = self.table.find_or_claim(Kind::Rate, key)?.slot;
        let mut tat = load_tat(slot);
        loop {
            let new_tat = tat.max(now.ns).saturating_add(cells_ns(amount, limit));
            match cas_tat(slot, tat, new_tat) {
                Ok(()) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }

    /// Cells available now: `burst` for an unknown or full bucket, 0 for one in debt.
    pub fn remaining(&self, key: &str, limit: Limit, now: Option<f64>) -> Result<f64, ShmError> {
        let now = resolve_now(now)?;
        let tat = self.table.find(Kind::Rate, key).map_or(NEVER, load_tat);
        let owed = tat.saturating_sub(now.ns).max(0) as f64 / 1e9 * limit.rate_per_second();
        Ok((limit.burst() - owed).max(0.0))
    }

    /// Seconds until the bucket is full again (0.0 if it is).
    /// (The TAT alone says when a bucket is full, so no limit is needed here.)
    pub fn reset_after(&self, key: &str, now: Option<f64>) -> Result<f64, ShmError> {
        let now = resolve_now(now)?;
        let tat = self.table.find(Kind::Rate, key).map_or(NEVER, load_tat);
        Ok(if tat > now.ns { wait_seconds(now, tat) } else { 0.0 })
    }

    // --- budgets -------------------------------------------------------------------------------

    /// If `committed + amount <= limit`, add `amount` to committed and return true; else false.
    pub fn reserve(&self, key: &str, amount: i64, limit: i64) -> Result<bool, ShmError> {
        non_negative("amount", amount)?;
        let slot = self.table.find_or_claim(Kind::Budget, key)?.slot;
        let mut committed = slot.a.load(Ordering::Relaxed);
        loop {
            let Some(new) = committed.checked_add(amount).filter(|&c| c <= limit) else {
                return Ok(false);
            };
            match slot.a.compare_exchange_weak(committed, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(true),
                Err(seen) => committed = seen,
            }
        }
    }

    /// Replace a reservation by the actual cost: committed += actual - reserved (it may pass the
    /// limit by the overshoot: the money is spent), spent += actual.
    pub fn settle(&self, key: &str, reserved: i64, actual: i64) -> Result<(), ShmError> {
        non_negative("reserved", reserved)?;
        non_negative("actual", actual)?;
        let slot = self.table.find_or_claim(Kind::Budget, key)?.slot;
        slot.a.fetch_add(actual.wrapping_sub(reserved), Ordering::Relaxed);
        slot.b.fetch_add(actual, Ordering::Relaxed);
        Ok(())
    }

    /// Drop a reservation that was not used: committed -= reserved.
    pub fn release(&self, key: &str, reserved: i64) -> Result<(), ShmError> {
        non_negative("reserved", reserved)?;
        let slot = self.table.find_or_claim(Kind::Budget, key)?.slot;
        slot.a.fetch_sub(reserved, Ordering::Relaxed);
        Ok(())
    }

    /// Start-up load from the ledger: committed = spent = `spent`, only if no process has
    /// touched the key yet (exactly one of racing seeders wins). Returns whether it seeded.
    ///
    /// Seed before serving: the values are added right after the claim, so a reserve of the
    /// same key racing the seed by nanoseconds may be checked against the unseeded zero.
    pub fn seed(&self, key: &str, spent: i64) -> Result<bool, ShmError> {
        non_negative("spent", spent)?;
        let claimed = self.table.find_or_claim(Kind::Budget, key)?;
        if !claimed.new {
            return Ok(false);
        }
        // adds, not stores: a reserve that slipped in after the claim is kept
        claimed.slot.b.fetch_add(spent, Ordering::Relaxed);
        claimed.slot.a.fetch_add(spent, Ordering::Relaxed);
        Ok(true)
    }

    /// `(committed, spent)`; `(0, 0)` for an unknown key. Two loads, not one snapshot: a settle
    /// between them shows its spent without its committed, or vice versa.
    pub fn budget(&self, key: &str) -> (i64, i64) {
        self.table
            .find(Kind::Budget, key)
            .map_or((0, 0), |slot| (slot.a.load(Ordering::Relaxed), slot.b.load(Ordering::Relaxed)))
    }

    // --- plain counters ------------------------------------------------------------------------

    /// Add `delta` (wrapping at the i64 bounds) and return the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64, ShmError> {
        let slot = self.table.find_or_claim(Kind::Counter, key)?.slot;
        Ok(slot.a.fetch_add(delta, Ordering::Relaxed).wrapping_add(delta))
    }

    /// The counter's value; 0 for an unknown key.
    pub fn get(&self, key: &str) -> i64 {
        self.table.find(Kind::Counter, key).map_or(0, |slot| slot.a.load(Ordering::Relaxed))
    }
}
