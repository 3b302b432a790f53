//! Time-to-live: absolute expiry times and the schedule for reclaiming expired entries.
//!
//! Times are seconds since the Unix epoch (f64) so expiries survive a snapshot round trip;
//! every time-dependent call takes `now` so tests can inject a clock.

use std::time::{SystemTime, UNIX_EPOCH};

use super::error::SimcacheError;

/// Expiry of an entry that never expires.
pub const NEVER: f64 = f64::INFINITY;

/// How often an insert sweeps every entry for expired ones. A sweep reads one f64 per entry
/// (800 KB at 100k entries, tens of µs), so once a second is a negligible share of a core.
pub const SWEEP_INTERVAL_S: f64 = 1.0;

/// The wall clock, in seconds since the Unix epoch.
pub fn wall_clock_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Absolute expiry for an entry inserted at `now` with an optional TTL.
pub fn expiry(now: f64, ttl_s: Option<f64>) -> Result<f64, SimcacheError> {
    match ttl_s {
        None => Ok(NEVER),
        Some(ttl) if ttl > 0.0 && ttl.is_finite() => Ok(now + ttl),
        Some(ttl) => Err(SimcacheError::InvalidArgument(format!("ttl_s must be a positive finite number, got {ttl}"))),
    }
}

/// An entry is live strictly before its expiry instant.
#[inline]
pub fn is_live(expires_at: f64, now: f64) -> bool {
    now < expires_at
}

/// Decides when the next full sweep is due.
#[derive(Debug, Clone)]
pub struct SweepSchedule {
    /// Wall-clock second at which the next sweep is due.
    next_at: f64,
}

impl Default for SweepSchedule {
    fn default() -> Self {
        Self::new()
    }
}

impl SweepSchedule {
    /// The first call to `due` is always due.
    pub fn new() -> Self {
        SweepSchedule { next_at: f64::NEG_INFINITY }
    }

    /// True (and re-arms) when a sweep is due at `now`.
    pub fn due(&mut self, now: f64) -> bool {
        if now >= self.next_at {
            self.next_at = now + SWEEP_INTERVAL_S;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_and_liveness() {
        assert_eq!(expiry(10.0, None).unwrap(), NEVER);
        assert_eq!(expiry(10.0, Some(5.0)).unwrap(), 15.0);
        assert!(expiry(10.0, Some(0.0)).is_err());
        assert!(expiry(10.0, Some(f64::NAN)).is_err());
        assert!(is_live(15.0, 14.999) && !is_live(15.0, 15.0));
    }

    #[test]
    fn sweep_runs_at_most_once_per_interval() {
        let mut s = SweepSchedule::new();
        assert!(s.due(100.0));
        assert!(!s.due(100.5));
        assert!(s.due(101.0));
    }
}
