//! Contiguous row storage and the scan over it.
//!
//! A `RowBlock` keeps every row's unit f32 vector back to back (and, when quantised, its i8
//! codes back to back) so a scan is one linear pass the SIMD kernels stream through. Removal
//! swaps the last row into the hole, keeping the arrays dense.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::kernels::Kernels;
use super::ttl;
use super::vector::{quantize_i8_into, Query};

/// Rows scored per kernel call: 256 × 384-d i8 rows = 96 KB, so the scores stay in L1 while
/// the selection loop reads them.
const SCAN_BLOCK_ROWS: usize = 256;

pub struct RowBlock {
    dim: usize,
    quantized: bool,
    pub ids: Vec<u64>,
    pub expires: Vec<f64>,
    vectors: Vec<f32>,
    codes: Vec<i8>,
    code_factors: Vec<f32>,
}

impl RowBlock {
    pub fn new(dim: usize, quantized: bool) -> Self {
        RowBlock { dim, quantized, ids: Vec::new(), expires: Vec::new(), vectors: Vec::new(), codes: Vec::new(), code_factors: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn vector(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dim..(row + 1) * self.dim]
    }

    /// Appends a unit vector; returns its row.
    pub fn push(&mut self, id: u64, expires_at: f64, unit: &[f32]) -> usize {
        debug_assert_eq!(unit.len(), self.dim);
        self.ids.push(id);
        self.expires.push(expires_at);
        self.vectors.extend_from_slice(unit);
        if self.quantized {
            let f = quantize_i8_into(unit, &mut self.codes);
            self.code_factors.push(f);
        }
        self.ids.len() - 1
    }

    /// Removes `row` by moving the last row into it; returns the id that now sits at `row`
    /// (None when `row` was the last one).
    pub fn swap_remove(&mut self, row: usize) -> Option<u64> {
        let last = self.len() - 1;
        let d = self.dim;
        self.ids.swap_remove(row);
        self.expires.swap_remove(row);
        if row != last {
            self.vectors.copy_within(last * d..(last + 1) * d, row * d);
        }
        self.vectors.truncate(last * d);
        if self.quantized {
            self.code_factors.swap_remove(row);
            if row != last {
                self.codes.copy_within(last * d..(last + 1) * d, row * d);
            }
            self.codes.truncate(last * d);
        }
        (row != last).then(|| self.ids[row])
    }

    /// Offers every live row of this block to `best`, tagged with `block`. Scores are exact f32
    /// cosines, or i8 approximations when the block is quantised (re-ranked later).
    pub fn scan(&self, block: u32, query: &Query, now: f64, kernels: &Kernels, best: &mut BestCandidates) {
        let n = self.len();
        let d = self.dim;
        let mut scores = [0f32; SCAN_BLOCK_ROWS];
        let mut dots = [0i32; SCAN_BLOCK_ROWS];
        let mut start = 0;
        while start < n {
            let end = (start + SCAN_BLOCK_ROWS).min(n);
            let count = end - start;
            if self.quantized {
                (kernels.dots_i8)(&query.codes, &self.codes[start * d..end * d], &mut dots[..count]);
                for i in 0..count {
                    scores[i] = dots[i] as f32 * self.code_factors[start + i] * query.code_factor;
                }
            } else {
                (kernels.dots_f32)(&query.vector, &self.vectors[start * d..end * d], &mut scores[..count]);
            }
            for (i, &score) in scores[..count].iter().enumerate() {
                // Expiry is checked only for rows that would enter the shortlist.
                if score > best.floor() && ttl::is_live(self.expires[start + i], now) {
                    best.offer(Candidate { score, block, row: (start + i) as u32 });
                }
            }
            start = end;
        }
    }
}

/// A scored row: `block` indexes the namespace's partitions.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub score: f32,
    pub block: u32,
    pub row: u32,
}

/// Min-first ordering so the heap's top is the weakest of the kept candidates.
struct Weakest(Candidate);

impl PartialEq for Weakest {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Weakest {}
impl PartialOrd for Weakest {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Weakest {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.score.total_cmp(&self.0.score)
    }
}

/// The `capacity` highest-scoring candidates seen so far.
pub struct BestCandidates {
    capacity: usize,
    heap: BinaryHeap<Weakest>,
    floor: f32,
}

impl BestCandidates {
    pub fn new(capacity: usize) -> Self {
        BestCandidates { capacity: capacity.max(1), heap: BinaryHeap::with_capacity(capacity + 1), floor: f32::NEG_INFINITY }
    }

    /// Scores at or below this cannot enter.
    #[inline]
    pub fn floor(&self) -> f32 {
        self.floor
    }

    pub fn offer(&mut self, c: Candidate) {
        if c.score <= self.floor {
            return;
        }
        self.heap.push(Weakest(c));
        if self.heap.len() > self.capacity {
            self.heap.pop();
        }
        if self.heap.len() == self.capacity {
            self.floor = self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(|a, b| b.score.total_cmp(&a.score));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_candidates_keeps_the_top_scores() {
        let mut b = BestCandidates::new(3);
        for (i, s) in [0.1f32, 0.9, 0.5, 0.7, 0.2, 0.95].iter().enumerate() {
            b.offer(Candidate { score: *s, block: 0, row: i as u32 });
        }
        let scores: Vec<f32> = b.into_sorted().iter().map(|c| c.score).collect();
        assert_eq!(scores, vec![0.95, 0.9, 0.7]);
    }

    #[test]
    fn swap_remove_keeps_rows_dense() {
        let mut block = RowBlock::new(2, true);
        block.push(1, ttl::NEVER, &[1.0, 0.0]);
        block.push(2, ttl::NEVER, &[0.0, 1.0]);
        block.push(3, ttl::NEVER, &[0.6, 0.8]);
        assert_eq!(block.swap_remove(0), Some(3));
        assert_eq!(block.ids, vec![3, 2]);
        assert_eq!(block.vector(0), &[0.6, 0.8]);
        assert_eq!(block.swap_remove(1), None);
        assert_eq!(block.len(), 1);
    }
}
