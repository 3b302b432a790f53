use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::hash::{key_hashes, sip_pair, Kind};
use super::table::{HEADER_BYTES, SLOT_BYTES};
use super::*;
use crate::rng::Rng;

/// A table file in the temp dir, removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn new() -> TempPath {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempPath(std::env::temp_dir().join(format!("llmgw-shm-test-{}-{n}", std::process::id())))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

fn table(slots: usize) -> (TempPath, SharedCounters) {
    let path = TempPath::new();
    let counters = SharedCounters::create(&path, slots).unwrap();
    (path, counters)
}

fn limit(rate: f64, burst: f64) -> Limit {
    Limit::new(rate, burst).unwrap()
}

fn check(key: &str, rate: f64, burst: f64, cost: f64) -> Check<'_> {
    Check { key, limit: limit(rate, burst), cost }
}

fn acquire(c: &SharedCounters, checks: &[Check<'_>], now: f64) -> Decision {
    c.acquire(checks, Some(now)).unwrap()
}

// --- hashing -----------------------------------------------------------------------------------

#[test]
#[allow(deprecated)] // std's SipHasher is SipHash-2-4: the reference for our implementation
fn sip_pair_matches_std_siphash_2_4() {
    use std::hash::Hasher;
    let keys = [0x0706050403020100, 0x0f0e0d0c0b0a0908, 0xdead_beef, 42];
    let msg: Vec<u8> = (0..=255u8).collect();
    for len in 0..msg.len() {
        let (a, b) = sip_pair::<2, 4>(&keys, &msg[..len]);
        let mut std_a = std::hash::SipHasher::new_with_keys(keys[0], keys[1]);
        std_a.write(&msg[..len]);
        let mut std_b = std::hash::SipHasher::new_with_keys(keys[2], keys[3]);
        std_b.write(&msg[..len]);
        assert_eq!((a, b), (std_a.finish(), std_b.finish()), "len {len}");
    }
    // the published SipHash-2-4 test vector for the 15-byte message 00..0e
    assert_eq!(sip_pair::<2, 4>(&keys, &msg[..15]).0, 0xa129ca6149be45e5);
}

#[test]
fn key_hashes_depend_on_seeds_kind_and_key_only() {
    let seeds = [1, 2, 3, 4];
    assert_eq!(key_hashes(&seeds, Kind::Rate, "rpm:key:a"), key_hashes(&seeds, Kind::Rate, "rpm:key:a"));
    assert_ne!(key_hashes(&seeds, Kind::Rate, "rpm:key:a"), key_hashes(&seeds, Kind::Budget, "rpm:key:a"));
    assert_ne!(key_hashes(&seeds, Kind::Rate, "a"), key_hashes(&[1, 2, 3, 5], Kind::Rate, "a"));
    let (h1, h2) = key_hashes(&seeds, Kind::Counter, "k");
    assert_ne!(h1, h2, "the two hashes use independent keys");
    // long keys take the heap path and must hash the same way
    let long = "x".repeat(1000);
    assert_eq!(key_hashes(&seeds, Kind::Rate, &long), key_hashes(&seeds, Kind::Rate, &long));
    assert_ne!(key_hashes(&seeds, Kind::Rate, &long), key_hashes(&seeds, Kind::Rate, &long[1..]));
}

// --- the table ---------------------------------------------------------------------------------

#[test]
fn create_rounds_slots_up_and_open_sees_the_same_table() {
    let (path, a) = table(1000);
    assert_eq!(a.capacity(), 1024);
    assert!(a.is_empty());
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, HEADER_BYTES + 1024 * SLOT_BYTES);
    assert_eq!(a.add("hits", 5).unwrap(), 5);
    let b = SharedCounters::open(&path).unwrap();
    assert_eq!(b.capacity(), 1024);
    assert_eq!(b.get("hits"), 5);
    assert_eq!(b.add("hits", 2).unwrap(), 7);
    assert_eq!(a.get("hits"), 7, "two mappings of one file share every write");
    assert_eq!((a.len(), b.len()), (1, 1));
    drop(a);
    drop(b);
    assert_eq!(SharedCounters::open(&path).unwrap().get("hits"), 7, "a key survives close and reopen");
}

#[test]
fn invalid_slot_counts_are_rejected() {
    let path = TempPath::new();
    assert!(matches!(SharedCounters::create(&path, 0), Err(ShmError::InvalidSlots(0))));
    assert!(matches!(SharedCounters::create(&path, MAX_SLOTS + 1), Err(ShmError::InvalidSlots(_))));
    assert!(!path.0.exists());
    assert_eq!(SharedCounters::create(&path, 1).unwrap().capacity(), 1);
}

#[test]
fn create_replaces_an_existing_table_with_an_empty_one() {
    let (path, old) = table(64);
    old.add("k", 1).unwrap();
    let new = SharedCounters::create(&path, 128).unwrap();
    assert_eq!((new.get("k"), new.len(), new.capacity()), (0, 0, 128));
    assert_eq!(SharedCounters::open(&path).unwrap().get("k"), 0);
    // the old mapping keeps working on the replaced file instead of faulting
    assert_eq!(old.add("k", 1).unwrap(), 2);
    // no temporary file is left next to the table
    let dir = path.0.parent().unwrap();
    let name = path.0.file_name().unwrap().to_str().unwrap();
    let leftovers = std::fs::read_dir(dir).unwrap().filter(|e| {
        e.as_ref().unwrap().file_name().to_str().is_some_and(|n| n.starts_with(&format!(".{name}.")))
    });
    assert_eq!(leftovers.count(), 0);
}

#[test]
fn opening_something_that_is_not_a_table_fails_clearly() {
    let path = TempPath::new();
    assert!(matches!(SharedCounters::open(&path), Err(ShmError::Io { source: e, .. }) if e.kind() == std::io::ErrorKind::NotFound));
    let not_a_table = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        match SharedCounters::open(&path) {
            Err(ShmError::NotATable { reason, .. }) => reason,
            other => panic!("expected NotATable, got {other:?}"),
        }
    };
    assert!(not_a_table(b"").contains("shorter"));
    assert!(not_a_table(b"hello world").contains("shorter"));
    assert!(not_a_table(&[7u8; 4096]).contains("magic"));

    let good = {
        let (p, _) = table(16);
        std::fs::read(&p).unwrap()
    };
    let mut bad = good.clone();
    bad[8] = 99; // version
    assert!(not_a_table(&bad).contains("version 99"));
    let mut bad = good.clone();
    bad[12] = 32; // slot_bytes
    assert!(not_a_table(&bad).contains("32-byte slots"));
    let mut bad = good.clone();
    bad[16] = 3; // slot count
    assert!(not_a_table(&bad).contains("power of two"));
    assert!(not_a_table(&good[..good.len() - 1]).contains("expected"));
    let mut bad = good.clone();
    bad.extend_from_slice(&[0; 64]);
    assert!(not_a_table(&bad).contains("expected"));
    std::fs::write(&path, &good).unwrap();
    assert_eq!(SharedCounters::open(&path).unwrap().capacity(), 16);
    let absent = path.0.with_extension("absent");
    let message = SharedCounters::open(&absent).unwrap_err().to_string();
    assert!(message.contains("No such file") && message.contains(&absent.display().to_string()), "{message}");
}

#[test]
fn claims_probe_past_collisions_until_the_table_is_full() {
    let (path, c) = table(16);
    let keys: Vec<String> = (0..16).map(|i| format!("user:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.add(key, i as i64 + 1).unwrap(), i as i64 + 1);
    }
    assert_eq!(c.len(), 16);
    // 16 keys in 16 slots: some had to probe past their home slot, and each kept its value
    let probes: Vec<usize> = keys.iter().map(|k| c.table.probes_of(Kind::Counter, k).unwrap()).collect();
    assert!(probes.iter().any(|&p| p > 1), "{probes:?}");
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.get(key), i as i64 + 1);
    }
    // a 17th key: a clear error naming the file and its capacity; nothing is overwritten
    let err = c.add("one-too-many", 1).unwrap_err();
    assert!(matches!(err, ShmError::Full { capacity: 16, used: 16, .. }));
    let message = err.to_string();
    assert!(message.contains(&path.0.display().to_string()) && message.contains("16 of 16"), "{message}");
    assert!(matches!(c.reserve("b", 1, 10), Err(ShmError::Full { .. })));
    assert!(matches!(c.acquire(&[check("r", 1.0, 1.0, 1.0)], Some(0.0)), Err(ShmError::Full { .. })));
    // reads of unknown keys still work on a full table, and claim nothing
    assert_eq!(c.get("absent"), 0);
    assert_eq!(c.budget("absent"), (0, 0));
    assert_eq!(c.remaining("absent", limit(1.0, 5.0), Some(0.0)).unwrap(), 5.0);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(c.get(key), i as i64 + 1);
    }
}

#[test]
fn reads_of_unknown_keys_claim_no_slot() {
    let (_path, c) = table(64);
    assert_eq!(c.get("a"), 0);
    assert_eq!(c.budget("a"), (0, 0));
    assert_eq!(c.remaining("a", limit(1.0, 3.0), Some(0.0)).unwrap(), 3.0);
    assert_eq!(c.reset_after("a", Some(0.0)).unwrap(), 0.0);
    assert_eq!(c.refund("a", limit(1.0, 3.0), 1.0, Some(0.0)).unwrap(), 0.0);
    c.charge("a", limit(1.0, 3.0), 0.0, Some(0.0)).unwrap();
    assert_eq!(acquire(&c, &[check("a", 1.0, 3.0, 0.0)], 0.0), Decision::Admitted);
    assert!(c.is_empty());
}

#[test]
fn one_string_is_three_keys_for_rate_budget_and_counter() {
    let (_path, c) = table(64);
    c.add("k", 7).unwrap();
    assert!(c.reserve("k", 5, 10).unwrap());
    assert_eq!(acquire(&c, &[check("k", 1.0, 3.0, 3.0)], 0.0), Decision::Admitted);
    assert_eq!(c.len(), 3);
    assert_eq!(c.get("k"), 7);
    assert_eq!(c.budget("k"), (5, 0));
    assert_eq!(c.remaining("k", limit(1.0, 3.0), Some(0.0)).unwrap(), 0.0);
}

#[test]
fn a_claim_left_half_done_by_a_dead_process_is_adopted() {
    let (_path, c) = table(64);
    c.table.half_claim(Kind::Counter, "orphan");
    assert_eq!(c.len(), 1);
    assert_eq!(c.get("orphan"), 0, "a half claim is not a key yet");
    assert_eq!(c.add("orphan", 3).unwrap(), 3);
    assert_eq!(c.table.probes_of(Kind::Counter, "orphan"), Some(1), "adopted its home slot");
    assert_eq!(c.len(), 1);
    // seed counts an adopted slot as new: nobody had seeded it
    c.table.half_claim(Kind::Budget, "b");
    assert!(c.seed("b", 40).unwrap());
    assert_eq!(c.budget("b"), (40, 40));
}

#[test]
fn probe_limit_fill() {
    // How full random keys get a table before the first key finds no slot within PROBE_LIMIT
    // probes: 92-95% with 2^18 slots over 8 seeds (probe_limit_fill_measure); 95% for this seed at 2^14.
    let path = TempPath::new();
    let c = SharedCounters::create_with_seeds(&path, 1 << 14, [11, 12, 13, 14]).unwrap();
    let mut i = 0;
    while c.add(&format!("k{i}"), 1).is_ok() {
        i += 1;
    }
    let fill = c.len() as f64 / c.capacity() as f64;
    assert!(fill > 0.85, "fill {fill}");
}

#[test]
#[ignore = "measurement: cargo test --profile dev-opt -- --ignored probe_limit_fill_measure --nocapture"]
fn probe_limit_fill_measure() {
    for seed in 0..8u64 {
        let path = TempPath::new();
        let c = SharedCounters::create_with_seeds(&path, 1 << 18, [seed, seed + 100, seed + 200, seed + 300]).unwrap();
        let mut i = 0;
        while c.add(&format!("rpm:user:{i}"), 1).is_ok() {
            i += 1;
        }
        println!("seed {seed}: first overflow at {:.1}% full", 100.0 * c.len() as f64 / c.capacity() as f64);
    }
}

// --- GCRA: the fake-clock cases of ratelimit_tests.rs ------------------------------------------

#[test]
fn full_bucket_admits_burst_then_denies_for_one_emission_interval() {
    let (_path, c) = table(64);
    for _ in 0..5 {
        assert_eq!(acquire(&c, &[check("k", 2.0, 5.0, 1.0)], 100.0), Decision::Admitted);
    }
    assert_eq!(acquire(&c, &[check("k", 2.0, 5.0, 1.0)], 100.0), Decision::RetryAfter(0.5));
    assert_eq!(acquire(&c, &[check("k", 2.0, 5.0, 1.0)], 100.5), Decision::Admitted);
}

#[test]
fn cost_above_burst_is_never_admitted_and_charges_nothing() {
    let (_path, c) = table(64);
    let d = acquire(&c, &[check("small", 1.0, 10.0, 1.0), check("tok", 1.0, 100.0, 101.0)], 0.0);
    assert_eq!(d, Decision::Never);
    assert!(c.is_empty());
    assert_eq!(acquire(&c, &[check("tok", 1.0, 100.0, 100.0)], 0.0), Decision::Admitted);
}

#[test]
fn a_key_repeated_in_one_call_is_one_bucket_charged_with_the_sum() {
    let (_path, c) = table(64);
    let twice = [check("k", 1.0, 10.0, 6.0), check("k", 1.0, 10.0, 6.0)];
    assert_eq!(acquire(&c, &twice, 0.0), Decision::Never);
    let d = acquire(&c, &[check("k", 1.0, 10.0, 4.0), check("k", 1.0, 10.0, 4.0)], 0.0);
    assert_eq!(d, Decision::Admitted);
    assert_eq!(acquire(&c, &[check("k", 1.0, 10.0, 2.0)], 0.0), Decision::Admitted);
    assert_eq!(acquire(&c, &[check("k", 1.0, 10.0, 1.0)], 0.0), Decision::RetryAfter(1.0));
}

#[test]
fn deny_in_one_bucket_charges_no_other_bucket() {
    let (_path, c) = table(64);
    assert_eq!(acquire(&c, &[check("team", 1.0, 3.0, 3.0)], 0.0), Decision::Admitted);
    for _ in 0..10 {
        let d = acquire(&c, &[check("user", 1.0, 3.0, 1.0), check("team", 1.0, 3.0, 1.0)], 0.0);
        assert_eq!(d, Decision::RetryAfter(1.0));
    }
    assert_eq!(acquire(&c, &[check("user", 1.0, 3.0, 3.0)], 0.0), Decision::Admitted);
}

#[test]
fn retry_after_is_the_max_over_denying_buckets() {
    let (_path, c) = table(64);
    acquire(&c, &[check("rpm", 1.0, 2.0, 2.0), check("tpm", 10.0, 100.0, 100.0)], 0.0);
    let d = acquire(&c, &[check("rpm", 1.0, 2.0, 1.0), check("tpm", 10.0, 100.0, 50.0)], 0.0);
    assert_eq!(d, Decision::RetryAfter(5.0));
    let d = acquire(&c, &[check("rpm", 1.0, 2.0, 1.0), check("tpm", 10.0, 100.0, 50.0)], 5.0);
    assert_eq!(d, Decision::Admitted);
}

#[test]
fn zero_cost_checks_always_pass_and_create_no_bucket() {
    let (_path, c) = table(64);
    assert_eq!(acquire(&c, &[check("k", 1.0, 0.0, 0.0)], 0.0), Decision::Admitted);
    assert!(c.is_empty());
    assert_eq!(acquire(&c, &[check("k", 1.0, 0.0, 0.5)], 0.0), Decision::Never);
}

#[test]
fn invalid_arguments_are_errors() {
    let (_path, c) = table(64);
    let is = |r: Result<Decision, ShmError>, e: RateLimitError| matches!(r, Err(ShmError::RateLimit(x)) if x == e);
    assert!(is(c.acquire(&[check("k", 1.0, 1.0, -1.0)], Some(0.0)), RateLimitError::InvalidCost(-1.0)));
    assert!(matches!(c.acquire(&[check("k", 1.0, 1.0, 1.0)], Some(f64::NAN)), Err(ShmError::RateLimit(_))));
    assert!(matches!(c.acquire(&[check("k", 1.0, 1.0, 1.0)], Some(5e9)), Err(ShmError::NowOutOfRange(_))));
    let many = vec![check("k", 1.0, 100.0, 1.0); MAX_CHECKS + 1];
    assert!(is(c.acquire(&many, Some(0.0)), RateLimitError::TooManyChecks(MAX_CHECKS + 1)));
    assert!(c.refund("k", limit(1.0, 1.0), f64::NAN, Some(0.0)).is_err());
    assert!(c.charge("k", limit(1.0, 1.0), -2.0, Some(0.0)).is_err());
    assert!(matches!(c.reserve("b", -1, 10), Err(ShmError::NegativeAmount { name: "amount", value: -1 })));
    assert!(c.settle("b", 1, -1).is_err());
    assert!(c.settle("b", -1, 1).is_err());
    assert!(c.release("b", -1).is_err());
    assert!(c.seed("b", -1).is_err());
    assert!(c.is_empty());
}

#[test]
fn refund_gives_back_capacity_but_never_past_a_full_bucket() {
    let (_path, c) = table(64);
    let tpm = limit(10.0, 1000.0);
    assert_eq!(acquire(&c, &[check("tpm", 10.0, 1000.0, 800.0)], 0.0), Decision::Admitted);
    assert_eq!(c.refund("tpm", tpm, 500.0, Some(0.0)).unwrap(), 500.0);
    assert_eq!(acquire(&c, &[check("tpm", 10.0, 1000.0, 700.0)], 0.0), Decision::Admitted);
    assert!(matches!(acquire(&c, &[check("tpm", 10.0, 1000.0, 1.0)], 0.0), Decision::RetryAfter(_)));
    assert!((c.refund("tpm", tpm, 5000.0, Some(60.0)).unwrap() - 400.0).abs() < 1e-9);
    assert_eq!(c.refund("tpm", tpm, 1.0, Some(60.0)).unwrap(), 0.0);
    assert_eq!(c.refund("absent", tpm, 1.0, Some(60.0)).unwrap(), 0.0);
    assert_eq!(acquire(&c, &[check("tpm", 10.0, 1000.0, 1000.0)], 60.0), Decision::Admitted);
    assert!(matches!(acquire(&c, &[check("tpm", 10.0, 1000.0, 1.0)], 60.0), Decision::RetryAfter(_)));
}

#[test]
fn charge_past_the_estimate_puts_the_bucket_in_debt() {
    let (_path, c) = table(64);
    let tpm = limit(1.0, 10.0);
    assert_eq!(acquire(&c, &[check("tpm", 1.0, 10.0, 10.0)], 0.0), Decision::Admitted);
    c.charge("tpm", tpm, 20.0, Some(0.0)).unwrap();
    assert_eq!(acquire(&c, &[check("tpm", 1.0, 10.0, 1.0)], 0.0), Decision::RetryAfter(21.0));
    assert_eq!(acquire(&c, &[check("tpm", 1.0, 10.0, 1.0)], 21.0), Decision::Admitted);
}

#[test]
fn remaining_and_reset_after_describe_the_bucket() {
    let (_path, c) = table(64);
    let l = limit(2.0, 10.0);
    assert_eq!(c.remaining("k", l, Some(50.0)).unwrap(), 10.0);
    assert_eq!(acquire(&c, &[check("k", 2.0, 10.0, 4.0)], 50.0), Decision::Admitted);
    assert_eq!(c.remaining("k", l, Some(50.0)).unwrap(), 6.0);
    assert_eq!(c.reset_after("k", Some(50.0)).unwrap(), 2.0);
    assert_eq!(c.remaining("k", l, Some(51.0)).unwrap(), 8.0);
    assert_eq!(c.reset_after("k", Some(51.0)).unwrap(), 1.0);
    assert_eq!(c.remaining("k", l, Some(52.0)).unwrap(), 10.0);
    assert_eq!(c.reset_after("k", Some(53.0)).unwrap(), 0.0);
    c.charge("k", l, 30.0, Some(60.0)).unwrap();
    assert_eq!(c.remaining("k", l, Some(60.0)).unwrap(), 0.0, "in debt: nothing, never negative");
    assert_eq!(c.reset_after("k", Some(60.0)).unwrap(), 15.0);
}

#[test]
fn negative_fake_clocks_work_from_a_fresh_slot() {
    let (_path, c) = table(64);
    assert_eq!(acquire(&c, &[check("k", 1.0, 2.0, 2.0)], -100.0), Decision::Admitted);
    assert_eq!(acquire(&c, &[check("k", 1.0, 2.0, 1.0)], -100.0), Decision::RetryAfter(1.0));
}

#[test]
fn property_admitted_cells_never_exceed_burst_plus_refill_over_any_window() {
    // as in ratelimit_tests.rs, plus the documented quantisation: <= 1 ns of refill per charge
    let mut rng = Rng::new(7);
    for case in 0..200 {
        let rate = 0.1 + rng.unit() * 50.0;
        let burst = 1.0 + (rng.below(40)) as f64;
        let (_path, c) = table(16);
        let mut now = rng.unit() * 1e6;
        let mut admitted: Vec<(f64, f64)> = Vec::new();
        for _ in 0..150 {
            now += rng.unit() * 3.0 / rate * if rng.below(4) == 0 { 0.0 } else { 1.0 };
            let cost = (1 + rng.below(burst as usize)) as f64 * if rng.below(3) == 0 { 0.5 } else { 1.0 };
            if acquire(&c, &[check("k", rate, burst, cost)], now) == Decision::Admitted {
                admitted.push((now, cost));
            }
        }
        assert!(!admitted.is_empty(), "case {case}");
        for i in 0..admitted.len() {
            let mut sum = 0.0;
            for j in i..admitted.len() {
                sum += admitted[j].1;
                let quantum = rate * 1e-9 * (j - i + 2) as f64;
                let allowed = burst + rate * (admitted[j].0 - admitted[i].0) + quantum;
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
        let (_path, c) = table(16);
        let now0 = rng.unit() * 1e7;
        let limits: Vec<(String, f64, f64)> = (0..1 + rng.below(4))
            .map(|i| (format!("b{i}"), 0.01 + rng.unit() * 100.0, 1.0 + rng.below(100) as f64))
            .collect();
        for (key, rate, burst) in &limits {
            let spent = rng.unit() * burst;
            acquire(&c, &[check(key, *rate, *burst, spent)], now0 - rng.unit() * 2.0);
        }
        let checks: Vec<Check<'_>> = limits.iter().map(|(key, rate, burst)| check(key, *rate, *burst, rng.unit() * burst)).collect();
        match acquire(&c, &checks, now0) {
            Decision::RetryAfter(wait) => {
                denials += 1;
                assert!(wait > 0.0);
                let early = now0 + wait - (wait * 1e-9).max(1e-6);
                if early > now0 {
                    assert!(matches!(acquire(&c, &checks, early), Decision::RetryAfter(_)));
                }
                assert_eq!(acquire(&c, &checks, now0 + wait), Decision::Admitted);
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
    let (_path, c) = table(64);
    let keys = ["a", "b", "c", "d", "e"];
    let mut level = [20.0f64; 5];
    let mut now = 0.0;
    for _ in 0..5000 {
        let dt = rng.below(3) as f64;
        now += dt;
        for lv in level.iter_mut() {
            *lv = (*lv + dt).min(20.0);
        }
        let picked: Vec<usize> = (0..5).filter(|_| rng.below(2) == 0).collect();
        let costs: Vec<f64> = picked.iter().map(|_| rng.below(8) as f64).collect();
        let checks: Vec<Check<'_>> = picked.iter().zip(&costs).map(|(&k, &c)| check(keys[k], 1.0, 20.0, c)).collect();
        let fits = picked.iter().zip(&costs).all(|(&k, &c)| c <= level[k]);
        let d = acquire(&c, &checks, now);
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
    let mut rng = Rng::new(5);
    for i in 0..20_000 {
        let (rate, burst) = (0.001 + rng.unit() * 1000.0, 1.0 + rng.unit() * 1e4);
        let now = rng.unit() * 10f64.powi(i % 10);
        let (_path, c) = table(1);
        assert_eq!(acquire(&c, &[check("k", rate, burst, burst)], now), Decision::Admitted, "rate {rate} burst {burst} now {now}");
    }
}

#[test]
fn equal_charges_summing_to_the_burst_all_fit_despite_ns_rounding() {
    // 1/3 s per cell is 333333333.3 ns: rounding each charge to nearest would make the 7th of
    // 7 cells miss the 7-cell burst by ns; rounding charges down and the burst up cannot
    let mut rng = Rng::new(13);
    for _ in 0..2000 {
        let rate = 0.01 + rng.unit() * 1000.0;
        let n = 1 + rng.below(50);
        let cost = 0.1 + rng.unit() * 10.0;
        let (_path, c) = table(1);
        let now = rng.unit() * 1e6;
        for k in 0..n {
            let d = acquire(&c, &[check("k", rate, cost * n as f64, cost)], now);
            assert_eq!(d, Decision::Admitted, "rate {rate} cost {cost} call {k} of {n}");
        }
        assert!(matches!(acquire(&c, &[check("k", rate, cost * n as f64, cost)], now), Decision::RetryAfter(_)));
    }
}

#[test]
fn waiting_the_returned_retry_after_is_enough_even_across_magnitudes() {
    let mut rng = Rng::new(9);
    for _ in 0..20_000 {
        let now = rng.unit();
        let rate = 0.001 + rng.unit() * 10.0;
        let (_path, c) = table(1);
        c.charge("k", limit(rate, 5.0), rng.unit() * 1e7, Some(now)).unwrap();
        let checks = [check("k", rate, 5.0, 1.0 + rng.unit() * 4.0)];
        let Decision::RetryAfter(wait) = acquire(&c, &checks, now) else { panic!("in debt") };
        assert_eq!(acquire(&c, &checks, now + wait), Decision::Admitted, "now {now} wait {wait}");
    }
}

#[test]
fn the_default_clock_is_clock_monotonic() {
    let (_path, c) = table(16);
    let before = monotonic_ns();
    assert_eq!(c.acquire(&[check("k", 1.0, 10.0, 10.0)], None).unwrap(), Decision::Admitted);
    let after = monotonic_ns();
    // the bucket is full again 10 s after the call's own clock reading
    let reset = c.reset_after("k", Some(before as f64 / 1e9)).unwrap();
    assert!((10.0..=10.0 + (after - before) as f64 / 1e9 + 1e-6).contains(&reset), "{reset}");
    let Decision::RetryAfter(wait) = c.acquire(&[check("k", 1.0, 10.0, 1.0)], None).unwrap() else { panic!() };
    assert!(wait > 0.9 && wait <= 1.0, "{wait}");
}

// --- budgets and counters ----------------------------------------------------------------------

#[test]
fn reserve_admits_up_to_the_limit_exactly() {
    let (_path, c) = table(64);
    assert!(c.reserve("team", 60, 100).unwrap());
    assert!(c.reserve("team", 40, 100).unwrap(), "exactly at the limit is allowed");
    assert!(!c.reserve("team", 1, 100).unwrap());
    assert!(c.reserve("team", 0, 100).unwrap());
    assert_eq!(c.budget("team"), (100, 0));
    assert!(!c.reserve("other", i64::MAX, i64::MAX).unwrap() || c.budget("other") == (i64::MAX, 0));
    assert!(!c.reserve("other", 1, i64::MAX).unwrap(), "overflow is a refusal, not a wrap");
}

#[test]
fn settle_replaces_the_reservation_and_may_overshoot() {
    let (_path, c) = table(64);
    assert!(c.reserve("k", 50, 100).unwrap());
    assert!(c.reserve("k", 50, 100).unwrap());
    c.settle("k", 50, 20).unwrap(); // cheaper than reserved
    assert_eq!(c.budget("k"), (70, 20));
    c.settle("k", 50, 90).unwrap(); // dearer: the money is spent, committed passes the limit
    assert_eq!(c.budget("k"), (110, 110));
    assert!(!c.reserve("k", 0, 100).unwrap());
}

#[test]
fn release_returns_a_reservation() {
    let (_path, c) = table(64);
    assert!(c.reserve("k", 80, 100).unwrap());
    assert!(!c.reserve("k", 30, 100).unwrap());
    c.release("k", 80).unwrap();
    assert_eq!(c.budget("k"), (0, 0));
    assert!(c.reserve("k", 100, 100).unwrap());
}

#[test]
fn seed_only_sets_a_key_nobody_has_touched() {
    let (_path, c) = table(64);
    assert!(c.seed("month:team:a", 900).unwrap());
    assert_eq!(c.budget("month:team:a"), (900, 900));
    assert!(!c.seed("month:team:a", 5).unwrap());
    assert_eq!(c.budget("month:team:a"), (900, 900));
    assert!(c.reserve("month:team:a", 100, 1000).unwrap());
    assert!(!c.reserve("month:team:a", 1, 1000).unwrap());
    assert!(c.reserve("month:team:b", 1, 1000).unwrap());
    assert!(!c.seed("month:team:b", 500).unwrap(), "already in use");
    assert_eq!(c.budget("month:team:b"), (1, 0));
}

#[test]
fn counters_add_and_get() {
    let (_path, c) = table(64);
    assert_eq!(c.get("n"), 0);
    assert_eq!(c.add("n", 5).unwrap(), 5);
    assert_eq!(c.add("n", -7).unwrap(), -2);
    assert_eq!(c.get("n"), -2);
}

// --- concurrency -------------------------------------------------------------------------------

const THREADS: usize = 8;
const OPS: usize = 100_000;

fn hammer<T: Send + 'static>(c: &Arc<SharedCounters>, work: impl Fn(usize, &SharedCounters) -> T + Send + Sync + 'static) -> Vec<T> {
    let work = Arc::new(work);
    let barrier = Arc::new(std::sync::Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (c, work, barrier) = (c.clone(), work.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                work(t, &c)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn hammer_counters_sum_exactly() {
    let path = TempPath::new();
    let c = Arc::new(SharedCounters::create(&path, 1024).unwrap());
    // each thread opens its own mapping too, as a worker process would
    let p = path.0.clone();
    hammer(&c, move |t, shared| {
        let own = SharedCounters::open(&p).unwrap();
        for i in 0..OPS {
            let c = if i % 2 == 0 { shared } else { &own };
            c.add("total", 1).unwrap();
            c.add(&format!("k{}", i % 64), 2).unwrap();
            c.add(&format!("t{t}"), 1).unwrap();
        }
    });
    assert_eq!(c.get("total"), (THREADS * OPS) as i64);
    let spread: i64 = (0..64).map(|k| c.get(&format!("k{k}"))).sum();
    assert_eq!(spread, (2 * THREADS * OPS) as i64);
    for t in 0..THREADS {
        assert_eq!(c.get(&format!("t{t}")), OPS as i64);
    }
    assert_eq!(c.len(), 1 + 64 + THREADS);
}

#[test]
fn hammer_reserve_never_over_commits() {
    let (_path, c) = table(1024);
    let c = Arc::new(c);
    const LIMIT: i64 = 250_000;
    // reserve 1-4, release every third success; a watcher-free check: each thread's view of the
    // books must balance at the end, and committed can never have passed the limit because the
    // last successful reserve saw committed + amount <= LIMIT
    let results = hammer(&c, |t, c| {
        let mut rng = Rng::new(t as u64 + 1);
        let (mut kept, mut ok, mut refused) = (0i64, 0usize, 0usize);
        for _ in 0..OPS {
            let amount = 1 + rng.below(4) as i64;
            if c.reserve("team", amount, LIMIT).unwrap() {
                ok += 1;
                if ok % 3 == 0 {
                    c.release("team", amount).unwrap();
                } else {
                    kept += amount;
                }
                let (committed, _) = c.budget("team");
                assert!(committed <= LIMIT, "committed {committed} > {LIMIT}");
            } else {
                refused += 1;
            }
        }
        (kept, ok, refused)
    });
    let kept: i64 = results.iter().map(|r| r.0).sum();
    let refused: usize = results.iter().map(|r| r.2).sum();
    assert_eq!(c.budget("team").0, kept);
    // each thread may end on a release of up to 4
    assert!(kept <= LIMIT && kept > LIMIT - 4 * (THREADS as i64 + 1), "the limit was reached: kept {kept}");
    assert!(refused > 0);
}

#[test]
fn hammer_unit_reserves_admit_exactly_the_limit() {
    let (_path, c) = table(64);
    let c = Arc::new(c);
    let admitted: usize = hammer(&c, |_, c| (0..OPS).filter(|_| c.reserve("k", 1, 123_456).unwrap()).count()).into_iter().sum();
    assert_eq!(admitted, 123_456);
    assert_eq!(c.budget("k"), (123_456, 0));
}

#[test]
fn hammer_gcra_admits_exactly_the_burst_across_threads() {
    // a shared team bucket (burst 10,000) and per-thread buckets (burst 2,000 each, 16,000 in
    // all): admission must stop at exactly 10,000, and the rollbacks of calls that passed
    // the pre-check but lost a bucket at CAS time must leave no charge behind
    let (_path, c) = table(1024);
    let c = Arc::new(c);
    let results = hammer(&c, |t, c| {
        let own = format!("user:{t}");
        let mut admitted = 0usize;
        for i in 0..OPS / 10 {
            let checks = if i % 2 == 0 {
                [check("team", 1e-3, 10_000.0, 1.0), check(&own, 1e-3, 2_000.0, 1.0)]
            } else {
                [check(&own, 1e-3, 2_000.0, 1.0), check("team", 1e-3, 10_000.0, 1.0)]
            };
            if c.acquire(&checks, Some(1000.0)).unwrap() == Decision::Admitted {
                admitted += 1;
            }
        }
        (own, admitted)
    });
    let total: usize = results.iter().map(|r| r.1).sum();
    assert_eq!(total, 10_000);
    let team_left = c.remaining("team", limit(1e-3, 10_000.0), Some(1000.0)).unwrap();
    assert!(team_left.abs() < 1e-6, "{team_left}");
    for (own, admitted) in &results {
        let left = c.remaining(own, limit(1e-3, 2_000.0), Some(1000.0)).unwrap();
        assert!((left - (2_000 - admitted) as f64).abs() < 1e-6, "{own}: {left} left after {admitted}");
    }
}
