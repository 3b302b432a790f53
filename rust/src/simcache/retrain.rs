//! Background (re-)training of a namespace's partitions, so no lookup or insert waits for k-means.
//!
//! Training used to run inside the insert that crossed the size trigger, under the index's write
//! lock: worst lookup 0.93-0.99 s at 100k × 384 (benches/bench_simcache.py), tens of seconds at
//! 1M, during which every namespace stalled.
//! Now that insert only starts a job (one per namespace at a time, identified by a generation
//! number unique in the index) and returns. The job, on its own thread:
//!
//! 1. copies a sample of the rows (`sample_per_list` per partition) in short read-locked chunks
//!    and trains the centroids with no lock held;
//! 2. copies the rows that existed at the start, again in read-locked chunks, and assigns them to
//!    the new partitions with no lock held, building the new layout beside the old one;
//! 3. catches up with rows appended meanwhile the same way until few are left;
//! 4. takes the write lock only to place those last few rows, drop the rows removed meanwhile,
//!    and swap the layouts (`Namespace::finish_job`).
//!
//! Meanwhile the namespace serves from its old layout (exact scan or the old partitions);
//! removals (delete, TTL sweep, LRU eviction) leave tombstones so row positions stay stable for
//! the chunked copies. Memory: the new layout is built beside the old one, so a namespace
//! transiently needs twice its row storage while its job runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::index::State;
use super::ivf;
use super::kernels::Kernels;
use super::namespace::{Namespace, Plan};

/// Rows copied per read-locked chunk: 1024 × 384-d f32 = 1.5 MB, a copy of ~0.2 ms, so a writer
/// never waits long behind the trainer.
const COPY_CHUNK_ROWS: usize = 1024;
/// The job swaps once at most this many appended rows are left to place under the write lock:
/// 256 rows × 632 centroids × 384-d at 100k rows is ~62M i8 multiply-adds, well under a ms.
const SWAP_TAIL_ROWS: usize = 256;
/// Catch-up rounds before swapping anyway (a writer faster than the trainer's assignment would
/// otherwise keep it from ever finishing; the remaining tail is then placed under the lock).
const MAX_CATCH_UP_ROUNDS: usize = 8;
/// Threads a job uses for k-means and assignment: all cores but one, which stays free for
/// lookups and inserts (on the 2-core dev box: one thread, so a build that then waits for its
/// training takes ~1.5× as long as with both cores, measured 2.4 s vs 1.6 s at 100k × 384).
fn job_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |p| p.get()).saturating_sub(1).max(1)
}

/// Shared between the index and its jobs: how many run, the test hook, and shutdown.
#[derive(Default)]
pub(super) struct Control {
    running: Mutex<usize>,
    idle: Condvar,
    /// The test hook: (held, jobs parked at the barrier).
    held: Mutex<(bool, usize)>,
    released: Condvar,
    parked: Condvar,
    closing: AtomicBool,
    next_generation: AtomicU64,
}

impl Control {
    fn lock_running(&self) -> MutexGuard<'_, usize> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn lock_held(&self) -> MutexGuard<'_, (bool, usize)> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Decrements the running count when a job ends, however it ends (panics included).
struct RunningGuard(Arc<Control>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut running = self.0.lock_running();
        *running -= 1;
        if *running == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// Starts jobs and is what a job thread holds to reach the index state.
#[derive(Clone)]
pub(super) struct Retrainer {
    state: Arc<RwLock<State>>,
    control: Arc<Control>,
    kernels: &'static Kernels,
    dim: usize,
    quantized: bool,
    threshold: usize,
    sample_per_list: usize,
}

struct Job {
    namespace: Arc<str>,
    generation: u64,
    /// Rows per block of the old layout when the job started.
    start_lens: Vec<usize>,
    /// Live rows when the job started: sizes the partitions and the next re-training trigger.
    rows_at_start: usize,
}

/// Rows copied out of the namespace, awaiting assignment.
#[derive(Default)]
struct RowBuffer {
    ids: Vec<u64>,
    expires: Vec<f64>,
    vectors: Vec<f32>,
}

impl Retrainer {
    pub fn new(state: Arc<RwLock<State>>, kernels: &'static Kernels, dim: usize, quantized: bool, threshold: usize, sample_per_list: usize) -> Self {
        Retrainer { state, control: Arc::new(Control::default()), kernels, dim, quantized, threshold, sample_per_list }
    }

    /// Applies what `namespace`'s layout needs; called with the write lock held (`state`).
    /// Flattening is done at once (the namespace is small); training starts a background job.
    pub fn reorganise(&self, state: &mut State, namespace: &str) {
        let Some(plan) = state.namespaces.get(namespace).map(|ns| ns.plan(self.threshold)) else { return };
        match plan {
            Plan::Keep => {}
            Plan::Flatten => state.namespaces.get_mut(namespace).expect("present").flatten(),
            Plan::Train => {
                if self.control.closing.load(Ordering::Acquire) {
                    return;
                }
                let key = state.namespaces.get_key_value(namespace).expect("present").0.clone();
                let ns = state.namespaces.get_mut(namespace).expect("present");
                let generation = self.control.next_generation.fetch_add(1, Ordering::Relaxed);
                let job = Job { namespace: key, generation, start_lens: ns.start_job(generation), rows_at_start: ns.len() };
                *self.control.lock_running() += 1;
                let guard = RunningGuard(self.control.clone());
                let me = self.clone();
                let spawned = std::thread::Builder::new().name("simcache-train".into()).spawn(move || {
                    let _guard = guard;
                    me.run(job);
                });
                if spawned.is_err() {
                    // No thread (resource limit): keep serving the current layout; the next
                    // insert or delete of this namespace tries again.
                    ns.cancel_job();
                }
            }
        }
    }

    /// Waits until no job runs; false if `timeout` passed first (None = wait without limit).
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        let running = self.control.lock_running();
        match timeout {
            None => {
                let _idle = self.control.idle.wait_while(running, |n| *n > 0).unwrap_or_else(|e| e.into_inner());
                true
            }
            Some(t) => {
                let (_idle, result) = self.control.idle.wait_timeout_while(running, t, |n| *n > 0).unwrap_or_else(|e| e.into_inner());
                !result.timed_out()
            }
        }
    }

    /// Test hook: while held, jobs stop before catching up and swapping (after building the new
    /// layout from the rows present at their start), so a test can act during a job
    /// deterministically.
    pub fn hold(&self, hold: bool) {
        self.control.lock_held().0 = hold;
        self.control.released.notify_all();
    }

    /// Test hook: waits until a held job has reached the barrier (so it has copied the rows
    /// present at its start); false if `timeout` passed first.
    pub fn wait_until_held(&self, timeout: Duration) -> bool {
        let held = self.control.lock_held();
        let (_held, result) = self.control.parked.wait_timeout_while(held, timeout, |(_, parked)| *parked == 0).unwrap_or_else(|e| e.into_inner());
        !result.timed_out()
    }

    /// Makes running jobs stop at their next chunk (the index is being dropped).
    pub fn close(&self) {
        self.control.closing.store(true, Ordering::Release);
        self.control.released.notify_all();
    }

    fn closing(&self) -> bool {
        self.control.closing.load(Ordering::Acquire)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self, job: Job) {
        // Every `?` in train_and_swap is an abandoned job: the index is closing, or the namespace
        // emptied and was dropped (a re-created namespace of the same name has a new generation).
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.train_and_swap(&job)));
        if outcome.is_err() {
            // A failed job must not leave the namespace recording tombstones forever: it goes
            // back to plain serving, and the next insert or delete plans a new job.
            if let Some(ns) = self.write().namespaces.get_mut(&job.namespace).filter(|ns| ns.runs_job(job.generation)) {
                ns.cancel_job();
            }
        }
    }

    fn train_and_swap(&self, job: &Job) -> Option<()> {
        let dim = self.dim;
        let total: usize = job.start_lens.iter().sum();
        let lists = ivf::list_count(job.rows_at_start);
        let sample = self.copy_sample(job, &ivf::sample_positions(total, lists, self.sample_per_list))?;
        let centroids = ivf::train_on_sample(&sample, dim, lists, self.kernels, job_threads());
        drop(sample);
        let mut fresh = Namespace::with_centroids(dim, self.quantized, centroids, job.rows_at_start);
        let mut copied = vec![0usize; job.start_lens.len()];
        self.copy_and_assign(job, &job.start_lens, &mut copied, &mut fresh)?;
        self.wait_while_held()?;
        for _ in 0..MAX_CATCH_UP_ROUNDS {
            let current = self.with_namespace(job, Namespace::block_lens)?;
            let pending: usize = current.iter().zip(&copied).map(|(c, d)| c - d).sum();
            if pending <= SWAP_TAIL_ROWS {
                break;
            }
            self.copy_and_assign(job, &current, &mut copied, &mut fresh)?;
        }
        let old = {
            let mut state = self.write();
            let ns = state.namespaces.get_mut(&job.namespace).filter(|ns| ns.runs_job(job.generation))?;
            let old = ns.finish_job(fresh, &copied, self.kernels);
            // The namespace may have doubled again or shrunk meanwhile.
            self.reorganise(&mut state, &job.namespace);
            old
        };
        drop(old); // freeing the old rows (up to GBs) outside the lock
        Some(())
    }

    /// Runs `f` on the job's namespace under the read lock; None if the job is abandoned.
    fn with_namespace<T>(&self, job: &Job, f: impl FnOnce(&Namespace) -> T) -> Option<T> {
        if self.closing() {
            return None;
        }
        let state = self.read();
        let ns = state.namespaces.get(&job.namespace).filter(|ns| ns.runs_job(job.generation))?;
        Some(f(ns))
    }

    /// Copies the rows at `positions` (flat over the blocks as they were at the start).
    fn copy_sample(&self, job: &Job, positions: &[usize]) -> Option<Vec<f32>> {
        let places = flat_to_block_rows(positions, &job.start_lens);
        let mut sample = Vec::with_capacity(positions.len() * self.dim);
        for chunk in places.chunks(COPY_CHUNK_ROWS) {
            self.with_namespace(job, |ns| {
                for &(b, r) in chunk {
                    sample.extend_from_slice(ns.row(b, r).2);
                }
            })?;
        }
        Some(sample)
    }

    /// Copies each block's rows from `copied[b]` up to `upto[b]` in chunks (skipping rows removed
    /// already), assigns them to `fresh`'s partitions with no lock held, and appends them there.
    fn copy_and_assign(&self, job: &Job, upto: &[usize], copied: &mut [usize], fresh: &mut Namespace) -> Option<()> {
        let mut buf = RowBuffer::default();
        for b in 0..upto.len() {
            while copied[b] < upto[b] {
                let end = upto[b].min(copied[b] + COPY_CHUNK_ROWS);
                buf.ids.clear();
                buf.expires.clear();
                buf.vectors.clear();
                self.with_namespace(job, |ns| {
                    for r in copied[b]..end {
                        let (id, expires_at, unit) = ns.row(b, r);
                        if ns.contains(id) {
                            buf.ids.push(id);
                            buf.expires.push(expires_at);
                            buf.vectors.extend_from_slice(unit);
                        }
                    }
                })?;
                copied[b] = end;
                let assignment = fresh.assign(&buf.vectors, self.kernels, job_threads());
                fresh.push_assigned(&buf.ids, &buf.expires, &buf.vectors, &assignment);
            }
        }
        Some(())
    }

    /// Blocks while the test hook holds jobs; None if the index closes meanwhile.
    fn wait_while_held(&self) -> Option<()> {
        let mut held = self.control.lock_held();
        if held.0 {
            held.1 += 1;
            self.control.parked.notify_all();
            held = self.control.released.wait_while(held, |(h, _)| *h && !self.closing()).unwrap_or_else(|e| e.into_inner());
            held.1 -= 1;
        }
        (!self.closing()).then_some(())
    }
}

/// (block, row) of each flat position over blocks of `lens` rows; `positions` sorted.
fn flat_to_block_rows(positions: &[usize], lens: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(positions.len());
    let (mut block, mut block_start) = (0, 0);
    for &p in positions {
        while p >= block_start + lens[block] {
            block_start += lens[block];
            block += 1;
        }
        out.push((block, p - block_start));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_positions_map_to_block_rows() {
        assert_eq!(flat_to_block_rows(&[0, 2, 3, 3, 7], &[3, 0, 4, 1]), vec![(0, 0), (0, 2), (2, 0), (2, 0), (3, 0)]);
    }
}
