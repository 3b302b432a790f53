//! Bytes per key of the rate limiter, measured with a counting allocator (its own test binary,
//! so no other test's allocations are counted).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use _core::ratelimit::{Check, Decision, Limit, RateLimiter};

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bound on requested bytes per held key for keys like "rpm:key:0001234" (15 bytes):
/// 24-byte slot + 1 control byte at >= 7/16 load (hashbrown doubles at 7/8) is <= 58 B,
/// plus the 15-byte key. malloc adds ~16 B per key allocation on top (glibc chunk header).
const BYTES_PER_KEY_BOUND: f64 = 80.0;

#[test]
fn one_million_busy_keys_stay_within_the_memory_bound() {
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let limiter = RateLimiter::new(1_000_000).unwrap();
    let rpm = Limit::new(1.0, 60.0).unwrap();
    let mut key = String::new();
    for i in 0..1_000_000u32 {
        key.clear();
        use std::fmt::Write;
        write!(key, "rpm:key:{i:07}").unwrap();
        let d = limiter.acquire(&[Check { key: &key, limit: rpm, cost: 1.0 }], Some(0.0)).unwrap();
        assert_eq!(d, Decision::Admitted);
    }
    let held = limiter.len();
    let bytes = (LIVE_BYTES.load(Ordering::Relaxed) - before) as f64;
    let per_key = bytes / held as f64;
    println!("{held} keys held, {bytes} bytes requested, {per_key:.1} bytes/key; memory_bytes {}", limiter.memory_bytes());
    // all keys are busy (TAT 1 s ahead): the cap forgets some once shards fill, never exceeds it
    assert!(held <= 1_000_000 && held > 900_000, "held {held}");
    assert!(per_key <= BYTES_PER_KEY_BOUND, "{per_key} bytes per key");
    // the limiter's own estimate agrees with the allocator to within the key rounding
    assert!((limiter.memory_bytes() as f64 - bytes).abs() / bytes < 0.05);
}
