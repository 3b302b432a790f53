//! Partitioning for the approximate search: spherical k-means over unit vectors.
//!
//! The namespace splits its rows into `lists` partitions around these centroids; a query scans
//! only the rows of its `probes` nearest partitions (see `namespace.rs`).

use super::kernels::Kernels;
use super::vector::quantize_i8_into;

/// k-means rounds: 8 rounds with 48 samples per list gave the same recall@1 (1.000, clustered
/// 100k × 384) as 6 rounds with 32, for more build time.
const KMEANS_ROUNDS: usize = 6;
/// Default training sample per centroid: 32 points each estimate a centroid well enough and
/// bound the training cost at 32 × lists × lists × dim multiply-adds per round (at 100k rows:
/// 20,224 sample rows of 100k; benches/bench_simcache.py compares it with training on every row).
pub const DEFAULT_SAMPLE_PER_LIST: usize = 32;

/// Number of partitions for `n` rows: ≈ 2·√n, the usual IVF rule that balances scanning the
/// centroids (2·√n rows) against scanning the probed lists (probes · √n / 2 rows). Not tuned
/// further: at 100k it already gives p50 ≈ 100 µs with recall@1 1.000 on clustered data.
pub fn list_count(n: usize) -> usize {
    ((2.0 * (n as f64).sqrt()).round() as usize).clamp(1, n.max(1))
}

/// Deterministic: the index must behave the same each run.
pub use crate::rng::Rng;

/// For each row of `rows` (unit vectors, `dim` wide), the index of the nearest centroid (largest
/// dot product), compared on i8 codes: the VNNI i8 kernel is ~2.5× faster than f32 here and
/// an occasional near-tie going to the neighbouring partition does not hurt, since queries
/// probe 16 partitions. Splits the rows across up to `threads` threads.
pub fn nearest_centroids(rows: &[f32], centroids: &[f32], dim: usize, kernels: &Kernels, threads: usize) -> Vec<u32> {
    let n = rows.len() / dim;
    let mut out = vec![0u32; n];
    let mut centroid_codes = Vec::with_capacity(centroids.len());
    let factors: Vec<f32> = centroids.chunks_exact(dim).map(|c| quantize_i8_into(c, &mut centroid_codes)).collect();
    let (centroid_codes, factors) = (&centroid_codes, &factors);
    let threads = threads.min(n.div_ceil(1024)).max(1);
    let per = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk_rows, chunk_out) in rows.chunks(per * dim).zip(out.chunks_mut(per)) {
            scope.spawn(move || {
                let mut dots = vec![0i32; factors.len()];
                let mut codes = Vec::with_capacity(dim);
                for (row, slot) in chunk_rows.chunks_exact(dim).zip(chunk_out.iter_mut()) {
                    codes.clear();
                    quantize_i8_into(row, &mut codes);
                    *slot = nearest_by_codes(&codes, centroid_codes, factors, &mut dots, kernels) as u32;
                }
            });
        }
    });
    out
}

/// Index of the centroid whose i8 codes (scaled by `factors`) best match `codes`; `dots` is
/// scratch space of one i32 per centroid.
pub fn nearest_by_codes(codes: &[i8], centroid_codes: &[i8], factors: &[f32], dots: &mut [i32], kernels: &Kernels) -> usize {
    (kernels.dots_i8)(codes, centroid_codes, dots);
    let mut best = 0;
    let mut best_score = f32::NEG_INFINITY;
    for (i, (d, f)) in dots.iter().zip(factors).enumerate() {
        let score = *d as f32 * f;
        if score > best_score {
            best_score = score;
            best = i;
        }
    }
    best
}

/// Which of `total` rows to train on: `per_list` random rows (with replacement) per centroid,
/// or every row when `per_list` is 0 or the sample would not be smaller. Sorted, so the copy
/// walks the rows in order.
pub fn sample_positions(total: usize, lists: usize, per_list: usize) -> Vec<usize> {
    let size = if per_list == 0 { total } else { lists.saturating_mul(per_list).min(total) };
    if size == total {
        return (0..total).collect();
    }
    let mut rng = Rng::new(0x005E_ED0F_1CE5 ^ total as u64);
    let mut positions: Vec<usize> = (0..size).map(|_| rng.below(total)).collect();
    positions.sort_unstable();
    positions
}

/// Trains `lists` unit centroids on every row of `sample`. Empty clusters are re-seeded from a
/// random sample point so every partition stays in use.
pub fn train_on_sample(sample: &[f32], dim: usize, lists: usize, kernels: &Kernels, threads: usize) -> Vec<f32> {
    let sample_size = sample.len() / dim;
    let mut rng = Rng::new(0x0C3E_A7E5 ^ sample_size as u64);
    let mut centroids = Vec::with_capacity(lists * dim);
    for _ in 0..lists {
        let r = rng.below(sample_size);
        centroids.extend_from_slice(&sample[r * dim..(r + 1) * dim]);
    }
    for _ in 0..KMEANS_ROUNDS {
        let assignment = nearest_centroids(sample, &centroids, dim, kernels, threads);
        let mut sums = vec![0f64; lists * dim];
        let mut counts = vec![0usize; lists];
        for (row, &c) in sample.chunks_exact(dim).zip(&assignment) {
            counts[c as usize] += 1;
            for (acc, x) in sums[c as usize * dim..(c as usize + 1) * dim].iter_mut().zip(row) {
                *acc += f64::from(*x);
            }
        }
        for c in 0..lists {
            let target = &mut centroids[c * dim..(c + 1) * dim];
            let sum = &sums[c * dim..(c + 1) * dim];
            let norm = sum.iter().map(|x| x * x).sum::<f64>().sqrt();
            if counts[c] == 0 || norm == 0.0 {
                let r = rng.below(sample_size);
                target.copy_from_slice(&sample[r * dim..(r + 1) * dim]);
            } else {
                for (t, s) in target.iter_mut().zip(sum) {
                    *t = (s / norm) as f32;
                }
            }
        }
    }
    centroids
}

/// Trains `lists` centroids on the default sample of `rows` (all in memory).
pub fn train_centroids(rows: &[f32], dim: usize, lists: usize, kernels: &Kernels) -> Vec<f32> {
    let positions = sample_positions(rows.len() / dim, lists, DEFAULT_SAMPLE_PER_LIST);
    let sample: Vec<f32> = positions.iter().flat_map(|&r| rows[r * dim..(r + 1) * dim].iter().copied()).collect();
    train_on_sample(&sample, dim, lists, kernels, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_separates_well_separated_groups() {
        // Two tight groups around +x and +y: every member must land with its own group.
        let dim = 4;
        let mut rows = Vec::new();
        for i in 0..200 {
            let e = (i % 7) as f32 * 0.01;
            let v = if i % 2 == 0 { [1.0, e, 0.0, 0.0] } else { [e, 1.0, 0.0, 0.0] };
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            rows.extend(v.iter().map(|x| x / norm));
        }
        let k = Kernels::active();
        let centroids = train_centroids(&rows, dim, 2, k);
        let assignment = nearest_centroids(&rows, &centroids, dim, k, 2);
        for i in 0..200 {
            assert_eq!(assignment[i], assignment[i % 2], "row {i}");
        }
        assert_ne!(assignment[0], assignment[1]);
    }

    #[test]
    fn sample_is_bounded_sorted_and_in_range() {
        let p = sample_positions(100_000, 632, 32);
        assert_eq!(p.len(), 632 * 32);
        assert!(p.windows(2).all(|w| w[0] <= w[1]) && *p.last().unwrap() < 100_000);
        assert_eq!(sample_positions(500, 20, 32), (0..500).collect::<Vec<_>>(), "a sample as large as the rows is every row");
        assert_eq!(sample_positions(9_000, 190, 0).len(), 9_000, "0 per list means every row");
    }

    #[test]
    fn list_count_grows_with_square_root() {
        assert_eq!(list_count(1), 1);
        assert_eq!(list_count(10_000), 200);
        assert_eq!(list_count(1_000_000), 2000);
    }
}
