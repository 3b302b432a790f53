use super::*;

fn limit(rate: f64, burst: f64) -> Limit {
    Limit::new(rate, burst).unwrap()
}

fn check(key: &str, rate: f64, burst: f64, cost: f64) -> Check<'_> {
    Check { key, limit: limit(rate, burst), cost }
}

fn acquire(l: &RateLimiter, checks: &[Check<'_>], now: f64) -> Decision {
    l.acquire(checks, Some(now)).unwrap()
}

// Deterministic PRNG for the property loops.
use crate::rng::Rng;

#[test]
fn full_bucket_admits_burst_then_denies_for_one_emission_interval() {
    let l = RateLimiter::new(1000).unwrap();
    for _ in 0..5 {
        assert_eq!(acquire(&l, &[check("k", 2.0, 5.0, 1.0)], 100.0), Decision::Admitted);
    }
    assert_eq!(acquire(&l, &[check("k", 2.0, 5.0, 1.0)], 100.0), Decision::RetryAfter(0.5));
    assert_eq!(acquire(&l, &[check("k", 2.0, 5.0, 1.0)], 100.5), Decision::Admitted);
}

#[test]
fn cost_above_burst_is_never_admitted_and_charges_nothing() {
    let l = RateLimiter::new(1000).unwrap();
    let d = acquire(&l, &[check("small", 1.0, 10.0, 1.0), check("tok", 1.0, 100.0, 101.0)], 0.0);
    assert_eq!(d, Decision::Never);
    assert!(l.is_empty());
    // exactly the burst is admissible on a full bucket
    assert_eq!(acquire(&l, &[check("tok", 1.0, 100.0, 100.0)], 0.0), Decision::Admitted);
}

#[test]
fn a_key_repeated_in_one_call_is_one_bucket_charged_with_the_sum() {
    let l = RateLimiter::new(1000).unwrap();
    let twice = [check("k", 1.0, 10.0, 6.0), check("k", 1.0, 10.0, 6.0)];
    assert_eq!(acquire(&l, &twice, 0.0), Decision::Never);
    let d = acquire(&l, &[check("k", 1.0, 10.0, 4.0), check("k", 1.0, 10.0, 4.0)], 0.0);
    assert_eq!(d, Decision::Admitted);
    assert_eq!(acquire(&l, &[check("k", 1.0, 10.0, 2.0)], 0.0), Decision::Admitted);
    assert_eq!(acquire(&l, &[check("k", 1.0, 10.0, 1.0)], 0.0), Decision::RetryAfter(1.0));
}

#[test]
fn deny_in_one_bucket_charges_no_other_bucket() {
    let l = RateLimiter::new(1000).unwrap();
    assert_eq!(acquire(&l, &[check("team", 1.0, 3.0, 3.0)], 0.0), Decision::Admitted);
    for _ in 0..10 {
        let d = acquire(&l, &[check("user", 1.0, 3.0, 1.0), check("team", 1.0, 3.0, 1.0)], 0.0);
        assert_eq!(d, Decision::RetryAfter(1.0));
    }
    // the user bucket is still full: its whole burst goes through at once
    assert_eq!(acquire(&l, &[check("user", 1.0, 3.0, 3.0)], 0.0), Decision::Admitted);
}

#[test]
fn retry_after_is_the_max_over_denying_buckets() {
    let l = RateLimiter::new(1000).unwrap();
    acquire(&l, &[check("rpm", 1.0, 2.0, 2.0), check("tpm", 10.0, 100.0, 100.0)], 0.0);
    // rpm needs 1 s for one request; tpm needs 5 s for 50 tokens
    let d = acquire(&l, &[check("rpm", 1.0, 2.0, 1.0), check("tpm", 10.0, 100.0, 50.0)], 0.0);
    assert_eq!(d, Decision::RetryAfter(5.0));
    let d = acquire(&l, &[check("rpm", 1.0, 2.0, 1.0), check("tpm", 10.0, 100.0, 50.0)], 5.0);
    assert_eq!(d, Decision::Admitted);
}

#[test]
fn zero_cost_checks_always_pass_and_create_no_bucket() {
    let l = RateLimiter::new(1000).unwrap();
    assert_eq!(acquire(&l, &[check("k", 1.0, 0.0, 0.0)], 0.0), Decision::Admitted);
    assert!(l.is_empty());
    assert_eq!(acquire(&l, &[check("k", 1.0, 0.0, 0.5)], 0.0), Decision::Never);
}

#[test]
fn invalid_arguments_are_errors() {
    assert_eq!(Limit::new(0.0, 1.0), Err(RateLimitError::InvalidRate(0.0)));
    assert!(Limit::new(f64::NAN, 1.0).is_err());
    assert_eq!(Limit::new(1.0, -1.0), Err(RateLimitError::InvalidBurst(-1.0)));
    assert!(Limit::new(1.0, f64::INFINITY).is_err());
    assert_eq!(RateLimiter::new(3).err(), Some(RateLimitError::InvalidMaxKeys(3)));
    let l = RateLimiter::new(1000).unwrap();
    assert_eq!(l.acquire(&[check("k", 1.0, 1.0, -1.0)], Some(0.0)), Err(RateLimitError::InvalidCost(-1.0)));
    assert!(l.acquire(&[check("k", 1.0, 1.0, 1.0)], Some(f64::NAN)).is_err());
    let many = vec![check("k", 1.0, 100.0, 1.0); MAX_CHECKS + 1];
    assert_eq!(l.acquire(&many, Some(0.0)), Err(RateLimitError::TooManyChecks(MAX_CHECKS + 1)));
    assert!(l.refund("k", limit(1.0, 1.0), f64::NAN, Some(0.0)).is_err());
    assert!(l.charge("k", limit(1.0, 1.0), -2.0, Some(0.0)).is_err());
}

#[test]
fn refund_gives_back_capacity_but_never_past_a_full_bucket() {
    let l = RateLimiter::new(1000).unwrap();
    let tpm = limit(10.0, 1000.0);
    // estimate 800 tokens up front; real usage turns out to be 300
    assert_eq!(acquire(&l, &[check("tpm", 10.0, 1000.0, 800.0)], 0.0), Decision::Admitted);
    assert_eq!(l.refund("tpm", tpm, 500.0, Some(0.0)).unwrap(), 500.0);
    assert_eq!(acquire(&l, &[check("tpm", 10.0, 1000.0, 700.0)], 0.0), Decision::Admitted);
    assert!(matches!(acquire(&l, &[check("tpm", 10.0, 1000.0, 1.0)], 0.0), Decision::RetryAfter(_)));
    // 1000 outstanding at t=0; at t=60, 600 have refilled, so at most 400 can be refunded
    assert!((l.refund("tpm", tpm, 5000.0, Some(60.0)).unwrap() - 400.0).abs() < 1e-9);
    assert_eq!(l.refund("tpm", tpm, 1.0, Some(60.0)).unwrap(), 0.0);
    assert_eq!(l.refund("absent", tpm, 1.0, Some(60.0)).unwrap(), 0.0);
    // full again: exactly one burst, not more
    assert_eq!(acquire(&l, &[check("tpm", 10.0, 1000.0, 1000.0)], 60.0), Decision::Admitted);
    assert!(matches!(acquire(&l, &[check("tpm", 10.0, 1000.0, 1.0)], 60.0), Decision::RetryAfter(_)));
}

#[test]
fn charge_past_the_estimate_puts_the_bucket_in_debt() {
    let l = RateLimiter::new(1000).unwrap();
    let tpm = limit(1.0, 10.0);
    assert_eq!(acquire(&l, &[check("tpm", 1.0, 10.0, 10.0)], 0.0), Decision::Admitted);
    l.charge("tpm", tpm, 20.0, Some(0.0)).unwrap();
    // 30 cells owed at rate 1: one more cell conforms at 30 + 1 - 10 = 21 s
    assert_eq!(acquire(&l, &[check("tpm", 1.0, 10.0, 1.0)], 0.0), Decision::RetryAfter(21.0));
    assert_eq!(acquire(&l, &[check("tpm", 1.0, 10.0, 1.0)], 21.0), Decision::Admitted);
}

#[test]
fn idle_buckets_are_evicted_and_behave_as_full() {
    let l = RateLimiter::new(1000).unwrap();
    for i in 0..100 {
        let key = format!("user:{i}");
        acquire(&l, &[check(&key, 1.0, 10.0, (i % 10 + 1) as f64)], 0.0);
    }
    assert_eq!(l.len(), 100);
    // bucket i is full again at (i % 10 + 1) s
    assert_eq!(l.evict_idle(Some(5.0)).unwrap(), 50);
    assert_eq!(l.len(), 50);
    assert_eq!(l.evict_idle(Some(10.0)).unwrap(), 50);
    assert!(l.is_empty());
    assert_eq!(acquire(&l, &[check("user:9", 1.0, 10.0, 10.0)], 10.0), Decision::Admitted);
}

#[test]
fn inserts_sweep_idle_keys_so_memory_tracks_live_keys() {
    let l = RateLimiter::new(1_000_000).unwrap();
    // 100k one-off callers, one per millisecond, each bucket full again 1 s later
    for i in 0..100_000u32 {
        let key = format!("user:{i}");
        acquire(&l, &[check(&key, 1.0, 10.0, 1.0)], i as f64 / 1000.0);
    }
    // ~1000 live at the end; sweeps run when a shard doubles, so at most ~2x live + floor
    assert!(l.len() < 64 * SWEEP_FLOOR, "len {}", l.len());
}

#[test]
fn max_keys_is_a_hard_cap_that_forgets_buckets_nearest_to_full_first() {
    let l = RateLimiter::new(64).unwrap();
    // key i owes i cells (TAT = i): larger i means further from full
    for i in 1..=200u32 {
        let key = format!("k{i}");
        assert_eq!(acquire(&l, &[check(&key, 1.0, 1000.0, i as f64)], 0.0), Decision::Admitted);
        assert!(l.len() <= 64);
    }
    // the most indebted key survived and still owes its 200 cells
    assert_eq!(acquire(&l, &[check("k200", 1.0, 1000.0, 801.0)], 0.0), Decision::RetryAfter(1.0));
    // the least indebted were forgotten (k1 is a fresh, full bucket again)
    assert_eq!(acquire(&l, &[check("k1", 1.0, 1000.0, 1000.0)], 0.0), Decision::Admitted);
    assert!(l.len() <= 64);
}

#[test]
fn a_call_never_evicts_its_own_buckets_to_make_room() {
    let l = RateLimiter::new(16).unwrap();
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        acquire(&l, &[check(key, 1.0, 100.0, 50.0 + i as f64)], 0.0);
    }
    // k0 has the smallest TAT; a call charging k0 plus a new key must keep k0
    let d = acquire(&l, &[check("k0", 1.0, 100.0, 10.0), check("new", 1.0, 100.0, 1.0)], 0.0);
    assert_eq!(d, Decision::Admitted);
    assert!(l.len() <= 16);
    assert_eq!(acquire(&l, &[check("k0", 1.0, 100.0, 41.0)], 0.0), Decision::RetryAfter(1.0));
}

#[test]
fn shard_count_scales_with_max_keys() {
    assert_eq!(RateLimiter::new(16).unwrap().shards.len(), 1);
    assert_eq!(RateLimiter::new(100_000).unwrap().shards.len(), 16);
    let big = RateLimiter::new(1_000_000).unwrap();
    assert_eq!(big.shards.len(), 64);
    assert!(big.shard_cap * big.shards.len() <= 1_000_000);
}

#[test]
fn concurrent_callers_never_overdraw_a_shared_bucket() {
    let l = std::sync::Arc::new(RateLimiter::new(100_000).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let l = l.clone();
            std::thread::spawn(move || {
                let mut admitted = 0;
                for i in 0..2000 {
                    let own = format!("user:{t}:{}", i % 50);
                    let checks = [check("team", 1.0, 1000.0, 1.0), check(&own, 1.0, 1e6, 1.0)];
                    if acquire(&l, &checks, 0.0) == Decision::Admitted {
                        admitted += 1;
                    }
                }
                admitted
            })
        })
        .collect();
    let total: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 1000);
}

#[test]
fn property_admitted_cells_never_exceed_burst_plus_refill_over_any_window() {
    let mut rng = Rng::new(7);
    for case in 0..200 {
        let rate = 0.1 + rng.unit() * 50.0;
        let burst = 1.0 + (rng.below(40)) as f64;
        let l = RateLimiter::new(1000).unwrap();
        let mut now = rng.unit() * 1e6;
        let mut admitted: Vec<(f64, f64)> = Vec::new();
        for _ in 0..150 {
            now += rng.unit() * 3.0 / rate * if rng.below(4) == 0 { 0.0 } else { 1.0 };
            let cost = (1 + rng.below(burst as usize)) as f64 * if rng.below(3) == 0 { 0.5 } else { 1.0 };
            if acquire(&l, &[check("k", rate, burst, cost)], now) == Decision::Admitted {
                admitted.push((now, cost));
            }
        }
        assert!(!admitted.is_empty(), "case {case}");
        for i in 0..admitted.len() {
            let mut sum = 0.0;
            for j in i..admitted.len() {
                sum += admitted[j].1;
                let allowed = burst + rate * (admitted[j].0 - admitted[i].0);
                assert!(sum <= allowed * (1.0 + 1e-9) + 1e-9, "case {case}: {sum} > {allowed}");
            }
        }
    }
}

#[test]
fn property_a_denied_call_is_admitted_exactly_at_its_retry_after() {
    let mut rng = Rng::new(11);
    let mut denials = 0;
    for _ in 0..2000 {
        let l = RateLimiter::new(1000).unwrap();
        let now0 = rng.unit() * 1e7;
        let limits: Vec<(String, f64, f64)> = (0..1 + rng.below(4))
            .map(|i| (format!("b{i}"), 0.01 + rng.unit() * 100.0, 1.0 + rng.below(100) as f64))
            .collect();
        // drain each bucket by a random amount at a random earlier time
        for (key, rate, burst) in &limits {
            let spent = rng.unit() * burst;
            acquire(&l, &[check(key, *rate, *burst, spent)], now0 - rng.unit() * 2.0);
        }
        let checks: Vec<Check<'_>> = limits
            .iter()
            .map(|(key, rate, burst)| check(key, *rate, *burst, rng.unit() * burst))
            .collect();
        match acquire(&l, &checks, now0) {
            Decision::RetryAfter(wait) => {
                denials += 1;
                assert!(wait > 0.0);
                let early = now0 + wait - (wait * 1e-9).max(1e-6);
                if early > now0 {
                    assert!(matches!(acquire(&l, &checks, early), Decision::RetryAfter(_)));
                }
                assert_eq!(acquire(&l, &checks, now0 + wait), Decision::Admitted);
            }
            Decision::Admitted => {}
            Decision::Never => panic!("every cost is within its burst"),
        }
    }
    assert!(denials > 300, "too few denials to mean anything: {denials}");
}

#[test]
fn property_all_or_nothing_across_buckets() {
    let mut rng = Rng::new(3);
    let l = RateLimiter::new(1000).unwrap();
    let keys = ["a", "b", "c", "d", "e"];
    // a model of the buckets: remaining cells at time `now` (rate 1 cell/s, burst 20)
    let mut level = [20.0f64; 5];
    let mut now = 0.0;
    for _ in 0..5000 {
        let dt = rng.below(3) as f64;
        now += dt;
        for lv in level.iter_mut() {
            *lv = (*lv + dt).min(20.0);
        }
        let mut picked: Vec<usize> = (0..5).filter(|_| rng.below(2) == 0).collect();
        picked.dedup();
        let costs: Vec<f64> = picked.iter().map(|_| rng.below(8) as f64).collect();
        let checks: Vec<Check<'_>> =
            picked.iter().zip(&costs).map(|(&k, &c)| check(keys[k], 1.0, 20.0, c)).collect();
        let fits = picked.iter().zip(&costs).all(|(&k, &c)| c <= level[k]);
        let d = acquire(&l, &checks, now);
        assert_eq!(d == Decision::Admitted, fits, "levels {level:?} picked {picked:?} costs {costs:?}");
        if fits {
            for (&k, &c) in picked.iter().zip(&costs) {
                level[k] -= c;
            }
        }
    }
}

#[test]
fn a_full_bucket_always_admits_exactly_its_burst_despite_rounding() {
    // (now + b/r) - b/r can round an ulp above now; the limiter must not turn that into a
    // retry-after that never ends
    let mut rng = Rng::new(5);
    for i in 0..20_000 {
        let (rate, burst) = (0.001 + rng.unit() * 1000.0, 1.0 + rng.unit() * 1e4);
        let now = rng.unit() * 10f64.powi((i % 12) as i32);
        let l = RateLimiter::new(16).unwrap();
        assert_eq!(acquire(&l, &[check("k", rate, burst, burst)], now), Decision::Admitted, "rate {rate} burst {burst} now {now}");
    }
}

#[test]
fn waiting_the_returned_retry_after_is_enough_even_across_magnitudes() {
    // now near 0 and a TAT far ahead: now + (tat - now) may round below tat without the
    // round-up in seconds_until
    let mut rng = Rng::new(9);
    for _ in 0..20_000 {
        let now = rng.unit();
        let rate = 0.001 + rng.unit() * 10.0;
        let l = RateLimiter::new(16).unwrap();
        l.charge("k", limit(rate, 5.0), rng.unit() * 1e7, Some(now)).unwrap();
        let checks = [check("k", rate, 5.0, 1.0 + rng.unit() * 4.0)];
        let Decision::RetryAfter(wait) = acquire(&l, &checks, now) else { panic!("in debt") };
        assert_eq!(acquire(&l, &checks, now + wait), Decision::Admitted, "now {now} wait {wait}");
    }
}
