//! `SimilarityIndex`: namespaces, payloads, TTL and LRU around the per-namespace row stores.
//!
//! Concurrency: the rows and entries sit behind one `RwLock`, so lookups from many request
//! handlers run in parallel; inserts, deletes and sweeps take it exclusively. The recency list
//! has its own small `Mutex` because a lookup *hit* must update recency while holding only the
//! read lock. Lock order is always state, then recency.
//!
//! Partition (re-)training never runs under the lock: it is a background job (`retrain.rs`)
//! while the namespace keeps serving; `wait_idle` lets callers (tests, benchmarks) wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use super::error::SimcacheError;
use super::kernels::Kernels;
use super::lru::RecencyList;
use super::ivf::DEFAULT_SAMPLE_PER_LIST;
use super::namespace::Namespace;
use super::retrain::Retrainer;
use super::ttl::{self, SweepSchedule};
use super::vector::{normalized, Query};

/// Rows in one namespace from which search switches from exact to partitioned. Measured with
/// i8, 384-d clustered data, p50 per query from Python (exact | partitioned): 1k 18 | 14 µs,
/// 2k 29 | 16 µs, 5k 57 | 27 µs, 10k 98 | 33 µs, 20k 180 | 49 µs. Below 2k the gain is a few
/// µs, not worth any recall risk, so exact search stays up to 2k.
pub const DEFAULT_APPROXIMATE_THRESHOLD: usize = 2_000;
/// Partitions scanned per query: 16 of 2·√n gave recall@1 1.000 on clustered 384-d data at
/// 10k, 100k and 1M (benches/bench_simcache.py). 8 also gave 1.000 at 100k (p50 56 vs 94 µs)
/// but lost recall (288/300 vs 296/300) on 64-d queries lying between clusters; 16 is the safer
/// default and `probes` is a constructor argument.
pub const DEFAULT_PROBES: usize = 16;

/// Entry maps are sized for `max_entries` up front, up to this many: growing a hash map of
/// 917,504 entries (entries, recency and locations together) held the write lock for 134 ms
/// (measured at 1M × 384), a stall as bad as the training this index now keeps off the lock.
/// Untouched slots cost address space, not memory.
const PRESIZE_ENTRIES_MAX: usize = 1 << 24;

/// How rows are stored for the scan. Stored vectors are always kept in f32 too: results carry
/// the exact cosine, and i8 scores are re-ranked exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantization {
    /// Scan f32 rows (4 bytes per dimension).
    None,
    /// Scan i8 rows (1 more byte per dimension; 4× less memory traffic during the scan).
    I8,
}

impl Quantization {
    pub fn parse(name: &str) -> Result<Self, SimcacheError> {
        match name {
            "none" => Ok(Self::None),
            "i8" => Ok(Self::I8),
            other => Err(SimcacheError::InvalidArgument(format!("quantization must be \"none\" or \"i8\", got {other:?}"))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::I8 => "i8",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexConfig {
    pub dim: usize,
    pub max_entries: usize,
    pub quantization: Quantization,
    pub approximate_threshold: usize,
    pub probes: usize,
    /// k-means trains on this many sampled rows per partition (0 = on every row). Not stored in
    /// snapshots: a loaded index uses the default.
    pub training_sample_per_list: usize,
}

impl IndexConfig {
    pub fn new(dim: usize, max_entries: usize, quantization: Quantization) -> Self {
        IndexConfig { dim, max_entries, quantization, approximate_threshold: DEFAULT_APPROXIMATE_THRESHOLD, probes: DEFAULT_PROBES, training_sample_per_list: DEFAULT_SAMPLE_PER_LIST }
    }

    fn validate(&self) -> Result<(), SimcacheError> {
        let bad = |m: &str| Err(SimcacheError::InvalidArgument(m.to_string()));
        if self.dim == 0 || self.dim > 65_536 {
            return bad("dim must be between 1 and 65536");
        }
        if self.max_entries == 0 {
            return bad("max_entries must be at least 1");
        }
        if self.probes == 0 {
            return bad("probes must be at least 1");
        }
        Ok(())
    }
}

/// One lookup result.
#[derive(Clone, Debug, PartialEq)]
pub struct Match {
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    pub id: u64,
    pub payload: Vec<u8>,
}

pub(super) struct Entry {
    pub namespace: Arc<str>,
    pub payload: Box<[u8]>,
    pub expires_at: f64,
}

pub(super) struct State {
    pub namespaces: HashMap<Arc<str>, Namespace>,
    pub entries: HashMap<u64, Entry>,
    pub next_id: u64,
    sweep: SweepSchedule,
}

pub struct SimilarityIndex {
    config: IndexConfig,
    kernels: &'static Kernels,
    /// Shared with the background training jobs.
    state: Arc<RwLock<State>>,
    recency: Mutex<RecencyList>,
    retrainer: Retrainer,
}

impl Drop for SimilarityIndex {
    fn drop(&mut self) {
        // Jobs hold the state alive; tell them to stop at their next chunk instead of finishing.
        self.retrainer.close();
    }
}

impl SimilarityIndex {
    pub fn new(config: IndexConfig) -> Result<Self, SimcacheError> {
        config.validate()?;
        let kernels = Kernels::active();
        let presize = config.max_entries.min(PRESIZE_ENTRIES_MAX);
        let entries = HashMap::with_capacity(presize);
        let state = Arc::new(RwLock::new(State { namespaces: HashMap::new(), entries, next_id: 1, sweep: SweepSchedule::new() }));
        let retrainer = Retrainer::new(
            state.clone(),
            kernels,
            config.dim,
            config.quantization == Quantization::I8,
            config.approximate_threshold,
            config.training_sample_per_list,
        );
        Ok(SimilarityIndex { config, kernels, state, recency: Mutex::new(RecencyList::with_capacity(presize)), retrainer })
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Name of the kernel set chosen for this CPU ("avx512+vnni", "avx2", "neon", "scalar").
    pub fn kernel_name(&self) -> &'static str {
        self.kernels.name
    }

    /// Stored entries, including expired ones not reclaimed yet.
    pub fn len(&self) -> usize {
        self.read().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stored entries of one namespace.
    pub fn namespace_len(&self, namespace: &str) -> usize {
        self.read().namespaces.get(namespace).map_or(0, Namespace::len)
    }

    /// Whether `namespace` is currently searched through partitions (approximate).
    pub fn is_partitioned(&self, namespace: &str) -> bool {
        self.read().namespaces.get(namespace).is_some_and(Namespace::is_partitioned)
    }

    /// Whether a background job is (re-)training `namespace`'s partitions right now.
    pub fn is_retraining(&self, namespace: &str) -> bool {
        self.read().namespaces.get(namespace).is_some_and(Namespace::is_retraining)
    }

    /// Waits until no background training job runs (including follow-up jobs a finishing job
    /// starts); false if `timeout` passed first. None waits without limit.
    pub fn wait_idle(&self, timeout: Option<Duration>) -> bool {
        self.retrainer.wait_idle(timeout)
    }

    /// Test hook: while `hold` is true, training jobs pause before their final catch-up and
    /// swap, so the namespace deterministically stays mid-training; false releases them.
    pub fn hold_retraining(&self, hold: bool) {
        self.retrainer.hold(hold);
    }

    /// Test hook: waits until a held job has reached its barrier, i.e. has copied and assigned
    /// every row present when it started; false if `timeout` passed first.
    pub fn wait_until_retraining_held(&self, timeout: Duration) -> bool {
        self.retrainer.wait_until_held(timeout)
    }

    /// Stores `vector` (normalised) with `payload`; returns the new entry's id. At capacity,
    /// expired entries are reclaimed first, then the least recently used are evicted.
    pub fn insert(&self, namespace: &str, vector: &[f32], payload: &[u8], ttl_s: Option<f64>, now: f64) -> Result<u64, SimcacheError> {
        let unit = normalized(vector, self.config.dim)?;
        let expires_at = ttl::expiry(now, ttl_s)?;
        let mut state = self.write();
        let mut recency = self.recency();
        let id = self.insert_locked(&mut state, &mut recency, namespace, &unit, payload.into(), expires_at, now);
        self.reorganise(&mut state, namespace);
        Ok(id)
    }

    /// Inserts `vectors.len() / dim` rows at once (one lock; at most one re-training job started,
    /// at the end).
    pub fn insert_many(&self, namespace: &str, vectors: &[f32], payloads: Vec<Vec<u8>>, ttl_s: Option<f64>, now: f64) -> Result<Vec<u64>, SimcacheError> {
        let dim = self.config.dim;
        if vectors.len() != payloads.len() * dim {
            return Err(SimcacheError::InvalidArgument(format!(
                "{} payloads need {} floats ({} × dim {dim}), got {}",
                payloads.len(),
                payloads.len() * dim,
                payloads.len(),
                vectors.len()
            )));
        }
        let units = vectors.chunks_exact(dim).map(|v| normalized(v, dim)).collect::<Result<Vec<_>, _>>()?;
        let expires_at = ttl::expiry(now, ttl_s)?;
        let mut state = self.write();
        let mut recency = self.recency();
        let ids = units
            .iter()
            .zip(payloads)
            .map(|(unit, payload)| self.insert_locked(&mut state, &mut recency, namespace, unit, payload.into_boxed_slice(), expires_at, now))
            .collect();
        self.reorganise(&mut state, namespace);
        Ok(ids)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_locked(&self, state: &mut State, recency: &mut RecencyList, namespace: &str, unit: &[f32], payload: Box<[u8]>, expires_at: f64, now: f64) -> u64 {
        let mut swept = false;
        if state.sweep.due(now) {
            Self::purge_locked(state, recency, now);
            swept = true;
        }
        if state.entries.len() >= self.config.max_entries {
            if !swept {
                Self::purge_locked(state, recency, now);
            }
            while state.entries.len() >= self.config.max_entries {
                let Some(oldest) = recency.oldest() else { break };
                Self::remove_locked(state, recency, oldest);
            }
        }
        let id = state.next_id;
        state.next_id += 1;
        self.store_locked(state, recency, id, namespace, unit, payload, expires_at);
        id
    }

    /// Places an entry with a known id (inserts, and snapshot loading).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn store_locked(&self, state: &mut State, recency: &mut RecencyList, id: u64, namespace: &str, unit: &[f32], payload: Box<[u8]>, expires_at: f64) {
        let ns_key: Arc<str> = match state.namespaces.get_key_value(namespace) {
            Some((k, _)) => k.clone(),
            None => {
                let k: Arc<str> = namespace.into();
                state.namespaces.insert(k.clone(), Namespace::new(self.config.dim, self.config.quantization == Quantization::I8));
                k
            }
        };
        state.namespaces.get_mut(namespace).expect("namespace just ensured").insert(id, expires_at, unit, self.kernels);
        state.entries.insert(id, Entry { namespace: ns_key, payload, expires_at });
        recency.touch(id);
    }

    /// Flattens a shrunken namespace, or starts a background job to (re-)train its partitions.
    pub(super) fn reorganise(&self, state: &mut State, namespace: &str) {
        self.retrainer.reorganise(state, namespace);
    }

    fn remove_locked(state: &mut State, recency: &mut RecencyList, id: u64) -> bool {
        let Some(entry) = state.entries.remove(&id) else { return false };
        recency.remove(id);
        if let Some(ns) = state.namespaces.get_mut(&entry.namespace) {
            ns.remove(id);
            if ns.is_empty() {
                state.namespaces.remove(&entry.namespace);
            }
        }
        true
    }

    fn purge_locked(state: &mut State, recency: &mut RecencyList, now: f64) -> usize {
        let expired: Vec<u64> = state.namespaces.values().flat_map(|ns| ns.expired_ids(now)).collect();
        for id in &expired {
            Self::remove_locked(state, recency, *id);
        }
        expired.len()
    }

    /// Removes an entry; false if no entry has that id (never issued, deleted or evicted).
    pub fn delete(&self, id: u64) -> bool {
        let mut state = self.write();
        let mut recency = self.recency();
        let Some(namespace) = state.entries.get(&id).map(|e| e.namespace.clone()) else { return false };
        let removed = Self::remove_locked(&mut state, &mut recency, id);
        self.reorganise(&mut state, &namespace);
        removed
    }

    /// Reclaims every entry expired at `now`; returns how many.
    pub fn purge_expired(&self, now: f64) -> usize {
        let mut state = self.write();
        let mut recency = self.recency();
        let n = Self::purge_locked(&mut state, &mut recency, now);
        let names: Vec<Arc<str>> = state.namespaces.keys().cloned().collect();
        for name in names {
            self.reorganise(&mut state, &name);
        }
        n
    }

    /// The `k` live entries of `namespace` most similar to `vector`, best first. Returned
    /// entries count as used for LRU.
    pub fn top_k(&self, namespace: &str, vector: &[f32], k: usize, now: f64) -> Result<Vec<Match>, SimcacheError> {
        self.search(namespace, vector, k, f32::NEG_INFINITY, now)
    }

    /// The most similar live entry of `namespace` if its cosine similarity is ≥ `threshold`.
    pub fn best_match(&self, namespace: &str, vector: &[f32], threshold: f32, now: f64) -> Result<Option<Match>, SimcacheError> {
        if threshold.is_nan() {
            return Err(SimcacheError::InvalidArgument("threshold must be a number".into()));
        }
        Ok(self.search(namespace, vector, 1, threshold, now)?.into_iter().next())
    }

    fn search(&self, namespace: &str, vector: &[f32], k: usize, threshold: f32, now: f64) -> Result<Vec<Match>, SimcacheError> {
        let query = Query::new(vector, self.config.dim)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let state = self.read();
        let Some(ns) = state.namespaces.get(namespace) else { return Ok(Vec::new()) };
        let found = ns.search(&query, now, k, self.config.probes, self.kernels);
        let matches: Vec<Match> = found
            .into_iter()
            .filter(|(score, _)| *score >= threshold)
            .map(|(score, id)| Match { score, id, payload: state.entries[&id].payload.to_vec() })
            .collect();
        if !matches.is_empty() {
            let mut recency = self.recency();
            for m in &matches {
                recency.touch(m.id);
            }
        }
        Ok(matches)
    }

    /// Ids from least to most recently used (what LRU eviction would remove first).
    pub fn ids_by_recency(&self) -> Vec<u64> {
        let _state = self.read();
        self.recency().oldest_first()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way later
        // reads would misinterpret worse than failing, so recover from poisoning.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn recency(&self) -> MutexGuard<'_, RecencyList> {
        self.recency.lock().unwrap_or_else(|e| e.into_inner())
    }
}
