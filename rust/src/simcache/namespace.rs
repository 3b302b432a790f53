//! One namespace's rows: a hard partition of the index (a lookup only ever scans its own
//! namespace's rows), stored either as one block (exact search) or as k-means partitions
//! (approximate: scan the `probes` nearest partitions).
//!
//! Re-training runs in the background (`retrain.rs`) while this namespace keeps serving from
//! its current layout. During such a job row positions must stay stable so the trainer can copy
//! rows in short read-locked chunks: removals then leave a tombstone (the row stays, marked
//! dead and no longer in `locations`) instead of moving the last row into the hole, and inserts
//! only append. `finish_job` replays what changed since onto the new layout.

use std::collections::HashMap;

use super::ivf;
use super::kernels::Kernels;
use super::rows::{BestCandidates, RowBlock};
use super::ttl;
use super::vector::{quantize_i8_into, Query};

/// Quantised scores are re-ranked exactly for this many of the best rows (or k if larger):
/// 32 f32 dot products of 384-d cost about a microsecond, and with them recall@1 measured
/// 1.000 against exact f32 search at every benchmarked size on clustered data.
const RERANK_SHORTLIST: usize = 32;

pub struct Namespace {
    dim: usize,
    quantized: bool,
    /// `lists × dim` unit centroids; empty while the namespace is searched exactly.
    centroids: Vec<f32>,
    /// i8 codes of the centroids and their scale factors, for choosing which partitions to
    /// probe: at 100k × 384 the f32 centroids (632 × 1.5 KB ≈ 970 KB) were read per query, as
    /// much as the probed rows themselves; codes read a quarter of that.
    centroid_codes: Vec<i8>,
    centroid_factors: Vec<f32>,
    blocks: Vec<RowBlock>,
    /// id → (block, row).
    locations: HashMap<u64, (u32, u32)>,
    /// Row count when the partitions were last trained (0 while exact).
    trained_len: usize,
    /// The background re-training in flight, if any.
    job: Option<JobLog>,
}

/// What a namespace records while a background re-training runs.
struct JobLog {
    generation: u64,
    /// Ids removed since the job started (their rows are tombstones in the current layout).
    removed: Vec<u64>,
}

/// Expiry written into a removed row while a job runs: never live at any `now`, so scans skip it.
const TOMBSTONE: f64 = f64::NEG_INFINITY;

/// What `plan` decides the namespace's layout needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    Keep,
    /// (Re-)train partitions in the background.
    Train,
    /// Go back to one exactly searched block (cheap: the namespace is small).
    Flatten,
}

impl Namespace {
    pub fn new(dim: usize, quantized: bool) -> Self {
        Namespace {
            dim,
            quantized,
            centroids: Vec::new(),
            centroid_codes: Vec::new(),
            centroid_factors: Vec::new(),
            blocks: vec![RowBlock::new(dim, quantized)],
            locations: HashMap::new(),
            trained_len: 0,
            job: None,
        }
    }

    /// An empty partitioned namespace around trained `centroids`, to be filled by a job.
    pub fn with_centroids(dim: usize, quantized: bool, centroids: Vec<f32>, trained_len: usize) -> Self {
        let mut centroid_codes = Vec::with_capacity(centroids.len());
        let centroid_factors = centroids.chunks_exact(dim).map(|c| quantize_i8_into(c, &mut centroid_codes)).collect();
        let lists = centroids.len() / dim;
        Namespace {
            dim,
            quantized,
            centroids,
            centroid_codes,
            centroid_factors,
            blocks: (0..lists).map(|_| RowBlock::new(dim, quantized)).collect(),
            // Room up to the next re-training (2 × trained_len): this map then never grows under
            // the write lock; the next job builds the next one off the lock.
            locations: HashMap::with_capacity(2 * trained_len),
            trained_len,
            job: None,
        }
    }

    pub fn len(&self) -> usize {
        self.locations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    pub fn is_partitioned(&self) -> bool {
        !self.centroids.is_empty()
    }

    pub fn partition_count(&self) -> usize {
        self.blocks.len()
    }

    pub fn insert(&mut self, id: u64, expires_at: f64, unit: &[f32], kernels: &Kernels) {
        let block = if self.is_partitioned() {
            // Same i8 comparison as the bulk assignment in `partition`, so rows land alike.
            let mut codes = Vec::with_capacity(self.dim);
            quantize_i8_into(unit, &mut codes);
            let mut dots = vec![0i32; self.blocks.len()];
            ivf::nearest_by_codes(&codes, &self.centroid_codes, &self.centroid_factors, &mut dots, kernels)
        } else {
            0
        };
        let row = self.blocks[block].push(id, expires_at, unit);
        self.locations.insert(id, (block as u32, row as u32));
    }

    pub fn remove(&mut self, id: u64) -> bool {
        let Some((block, row)) = self.locations.remove(&id) else { return false };
        if let Some(job) = &mut self.job {
            self.blocks[block as usize].expires[row as usize] = TOMBSTONE;
            job.removed.push(id);
            return true;
        }
        if let Some(moved) = self.blocks[block as usize].swap_remove(row as usize) {
            self.locations.insert(moved, (block, row));
        }
        true
    }

    /// Ids whose expiry has passed at `now` (tombstones are removed already, so not listed).
    pub fn expired_ids(&self, now: f64) -> Vec<u64> {
        let mut out = Vec::new();
        for b in &self.blocks {
            for (id, exp) in b.ids.iter().zip(&b.expires) {
                if !ttl::is_live(*exp, now) && self.locations.contains_key(id) {
                    out.push(*id);
                }
            }
        }
        out
    }

    /// The `k` best live rows as (exact cosine, id), best first.
    pub fn search(&self, query: &Query, now: f64, k: usize, probes: usize, kernels: &Kernels) -> Vec<(f32, u64)> {
        // Never hold more candidates than rows (a caller's k = 10⁹ must not allocate for 10⁹).
        let k = k.min(self.len());
        if k == 0 {
            return Vec::new();
        }
        let shortlist = if self.quantized { k.max(RERANK_SHORTLIST) } else { k };
        let mut best = BestCandidates::new(shortlist);
        for block in self.blocks_to_scan(query, probes, kernels) {
            self.blocks[block].scan(block as u32, query, now, kernels, &mut best);
        }
        let mut found: Vec<(f32, u64)> = best
            .into_sorted()
            .into_iter()
            .map(|c| {
                let b = &self.blocks[c.block as usize];
                let score = if self.quantized {
                    let mut exact = [0f32; 1];
                    (kernels.dots_f32)(&query.vector, b.vector(c.row as usize), &mut exact);
                    exact[0]
                } else {
                    c.score
                };
                (score, b.ids[c.row as usize])
            })
            .collect();
        if self.quantized {
            found.sort_by(|a, b| b.0.total_cmp(&a.0));
        }
        found.truncate(k);
        found
    }

    fn blocks_to_scan(&self, query: &Query, probes: usize, kernels: &Kernels) -> Vec<usize> {
        let lists = self.blocks.len();
        if !self.is_partitioned() || probes >= lists {
            return (0..lists).collect();
        }
        let mut dots = vec![0i32; lists];
        (kernels.dots_i8)(&query.codes, &self.centroid_codes, &mut dots);
        let scores: Vec<f32> = dots.iter().zip(&self.centroid_factors).map(|(d, f)| *d as f32 * f).collect();
        let mut order: Vec<usize> = (0..lists).collect();
        order.select_nth_unstable_by(probes - 1, |a, b| scores[*b].total_cmp(&scores[*a]));
        order.truncate(probes);
        order
    }

    /// What the layout needs as the namespace grows or shrinks: partitions at `threshold` rows,
    /// re-training when the rows double since the last training (amortised O(1) per insert),
    /// one block again below `threshold / 2`. Nothing changes while a job runs.
    pub fn plan(&self, threshold: usize) -> Plan {
        let n = self.len();
        if self.job.is_some() {
            Plan::Keep
        } else if !self.is_partitioned() {
            if n >= threshold && n >= 2 {
                Plan::Train
            } else {
                Plan::Keep
            }
        } else if n >= 2 * self.trained_len {
            Plan::Train
        } else if n < threshold / 2 {
            Plan::Flatten
        } else {
            Plan::Keep
        }
    }

    /// Whether a background re-training job is in flight.
    pub fn is_retraining(&self) -> bool {
        self.job.is_some()
    }

    /// Whether job `generation` is the one in flight here.
    pub fn runs_job(&self, generation: u64) -> bool {
        self.job.as_ref().is_some_and(|j| j.generation == generation)
    }

    /// Starts recording for job `generation`; returns the rows per block at this moment (the
    /// rows the job copies first).
    pub fn start_job(&mut self, generation: u64) -> Vec<usize> {
        self.job = Some(JobLog { generation, removed: Vec::new() });
        self.block_lens()
    }

    /// Forgets a job that will not finish (its thread could not start, or failed), compacting
    /// away the tombstones it left so removals can move rows again.
    pub fn cancel_job(&mut self) {
        let Some(job) = self.job.take() else { return };
        if job.removed.is_empty() {
            return;
        }
        let mut locations = HashMap::with_capacity(self.locations.len());
        for (b, old) in std::mem::take(&mut self.blocks).into_iter().enumerate() {
            let mut block = RowBlock::new(self.dim, self.quantized);
            for r in 0..old.len() {
                if self.locations.contains_key(&old.ids[r]) {
                    let row = block.push(old.ids[r], old.expires[r], old.vector(r));
                    locations.insert(old.ids[r], (b as u32, row as u32));
                }
            }
            self.blocks.push(block);
        }
        self.locations = locations;
    }

    /// Rows per block, tombstones included.
    pub fn block_lens(&self) -> Vec<usize> {
        self.blocks.iter().map(RowBlock::len).collect()
    }

    /// Row `row` of `block` as (id, expiry, unit vector), tombstone or not.
    pub fn row(&self, block: usize, row: usize) -> (u64, f64, &[f32]) {
        let b = &self.blocks[block];
        (b.ids[row], b.expires[row], b.vector(row))
    }

    /// Whether `id` is a live (not removed) row here.
    pub fn contains(&self, id: u64) -> bool {
        self.locations.contains_key(&id)
    }

    /// For each of `vectors`, the partition it belongs to (same i8 comparison as `insert`).
    pub fn assign(&self, vectors: &[f32], kernels: &Kernels, threads: usize) -> Vec<u32> {
        ivf::nearest_centroids(vectors, &self.centroids, self.dim, kernels, threads)
    }

    /// Appends rows whose partitions were computed elsewhere (`assignment[i]` for row `i`).
    pub fn push_assigned(&mut self, ids: &[u64], expires: &[f64], vectors: &[f32], assignment: &[u32]) {
        for (i, &block) in assignment.iter().enumerate() {
            let row = self.blocks[block as usize].push(ids[i], expires[i], &vectors[i * self.dim..(i + 1) * self.dim]);
            self.locations.insert(ids[i], (block, row as u32));
        }
    }

    /// Ends the job: moves into `fresh` (the new layout holding copies of the rows before
    /// `copied[b]` of each block) the rows appended since, drops from it the rows removed since,
    /// and puts it in place. Returns the old layout so the caller can free it outside the lock.
    pub fn finish_job(&mut self, mut fresh: Namespace, copied: &[usize], kernels: &Kernels) -> Namespace {
        let job = self.job.take().expect("finish_job without a job");
        for (b, &from) in copied.iter().enumerate() {
            for r in from..self.blocks[b].len() {
                let (id, expires_at, unit) = self.row(b, r);
                if self.contains(id) {
                    fresh.insert(id, expires_at, unit, kernels);
                }
            }
        }
        for id in job.removed {
            fresh.remove(id);
        }
        debug_assert_eq!(fresh.len(), self.len(), "the new layout holds exactly the live rows");
        std::mem::replace(self, fresh)
    }

    fn take_all_rows(&mut self) -> (Vec<u64>, Vec<f64>, Vec<f32>) {
        let n = self.len();
        let (mut ids, mut expires, mut vectors) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n * self.dim));
        for b in std::mem::take(&mut self.blocks) {
            for row in 0..b.len() {
                if self.locations.contains_key(&b.ids[row]) {
                    ids.push(b.ids[row]);
                    expires.push(b.expires[row]);
                    vectors.extend_from_slice(b.vector(row));
                }
            }
        }
        self.locations.clear();
        (ids, expires, vectors)
    }

    /// One exactly searched block again (only planned when no job runs).
    pub fn flatten(&mut self) {
        let (ids, expires, vectors) = self.take_all_rows();
        self.centroids.clear();
        self.centroid_codes.clear();
        self.centroid_factors.clear();
        self.trained_len = 0;
        let mut block = RowBlock::new(self.dim, self.quantized);
        for (i, id) in ids.iter().enumerate() {
            let row = block.push(*id, expires[i], &vectors[i * self.dim..(i + 1) * self.dim]);
            self.locations.insert(*id, (0, row as u32));
        }
        self.blocks = vec![block];
    }

    pub fn vector_of(&self, id: u64) -> Option<&[f32]> {
        let (block, row) = *self.locations.get(&id)?;
        Some(self.blocks[block as usize].vector(row as usize))
    }
}
