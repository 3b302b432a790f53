//! One namespace's rows: a hard partition of the index (a lookup only ever scans its own
//! namespace's rows), stored either as one block (exact search) or as k-means partitions
//! (approximate: scan the `probes` nearest partitions).

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
        if let Some(moved) = self.blocks[block as usize].swap_remove(row as usize) {
            self.locations.insert(moved, (block, row));
        }
        true
    }

    /// Ids whose expiry has passed at `now`.
    pub fn expired_ids(&self, now: f64) -> Vec<u64> {
        let mut out = Vec::new();
        for b in &self.blocks {
            for (id, exp) in b.ids.iter().zip(&b.expires) {
                if !ttl::is_live(*exp, now) {
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

    /// Switches between exact and partitioned layouts as the namespace grows or shrinks:
    /// partition at `threshold` rows, re-train when the rows double since the last training
    /// (amortised O(1) per insert), go back to one block below `threshold / 2`.
    pub fn reorganise(&mut self, threshold: usize, kernels: &Kernels) {
        let n = self.len();
        if !self.is_partitioned() {
            if n >= threshold && n >= 2 {
                self.partition(kernels);
            }
        } else if n >= 2 * self.trained_len {
            self.partition(kernels);
        } else if n < threshold / 2 {
            self.flatten();
        }
    }

    fn take_all_rows(&mut self) -> (Vec<u64>, Vec<f64>, Vec<f32>) {
        let n = self.len();
        let (mut ids, mut expires, mut vectors) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n * self.dim));
        for b in std::mem::take(&mut self.blocks) {
            for row in 0..b.len() {
                vectors.extend_from_slice(b.vector(row));
            }
            ids.extend_from_slice(&b.ids);
            expires.extend_from_slice(&b.expires);
        }
        self.locations.clear();
        (ids, expires, vectors)
    }

    fn partition(&mut self, kernels: &Kernels) {
        let (ids, expires, vectors) = self.take_all_rows();
        let lists = ivf::list_count(ids.len());
        self.centroids = ivf::train_centroids(&vectors, self.dim, lists, kernels);
        let assignment = ivf::nearest_centroids(&vectors, &self.centroids, self.dim, kernels);
        self.centroid_codes.clear();
        self.centroid_factors = self.centroids.chunks_exact(self.dim).map(|c| quantize_i8_into(c, &mut self.centroid_codes)).collect();
        self.blocks = (0..lists).map(|_| RowBlock::new(self.dim, self.quantized)).collect();
        for (i, &block) in assignment.iter().enumerate() {
            let row = self.blocks[block as usize].push(ids[i], expires[i], &vectors[i * self.dim..(i + 1) * self.dim]);
            self.locations.insert(ids[i], (block, row as u32));
        }
        self.trained_len = ids.len();
    }

    fn flatten(&mut self) {
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

    /// Every row as (id, expiry, unit vector) — for snapshots.
    pub fn rows(&self) -> impl Iterator<Item = (u64, f64, &[f32])> {
        self.blocks.iter().flat_map(|b| (0..b.len()).map(move |r| (b.ids[r], b.expires[r], b.vector(r))))
    }

    pub fn vector_of(&self, id: u64) -> Option<&[f32]> {
        let (block, row) = *self.locations.get(&id)?;
        Some(self.blocks[block as usize].vector(row as usize))
    }
}
