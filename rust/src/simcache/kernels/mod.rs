//! Similarity kernels: one file per instruction set, chosen once per process.
//!
//! `Kernels::active()` detects the CPU's features on first use (`is_x86_feature_detected!` on
//! x86-64; NEON is baseline on aarch64) and keeps the best set as plain function pointers in a
//! `OnceLock`, so a scan pays one indirect call per block of rows, never a feature check.
//! `scalar` is the reference every SIMD kernel is property-tested against (tests below).
//!
//! Contract for the i8 kernels: every element lies in [-127, 127] (the quantiser's range). The
//! VNNI kernel relies on it; the others are exact for any i8.

mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

use std::sync::OnceLock;

/// `out[r] = dot(query, rows[r·dim..(r+1)·dim])` with `dim = query.len()`.
pub type DotsF32 = fn(query: &[f32], rows: &[f32], out: &mut [f32]);
/// Same for i8 rows, exact in i32.
pub type DotsI8 = fn(query: &[i8], rows: &[i8], out: &mut [i32]);

/// One instruction set's kernels.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// Which implementation this is, e.g. "avx512+vnni" (reported by `SimilarityIndex.kernel`).
    pub name: &'static str,
    pub dots_f32: DotsF32,
    pub dots_i8: DotsI8,
}

static ACTIVE: OnceLock<Kernels> = OnceLock::new();

impl Kernels {
    /// The best kernels this CPU supports, detected once per process.
    pub fn active() -> &'static Kernels {
        ACTIVE.get_or_init(|| Self::avx512().or_else(Self::avx2).or_else(Self::neon).unwrap_or_else(Self::scalar))
    }

    /// The portable reference.
    pub fn scalar() -> Kernels {
        Kernels { name: "scalar", dots_f32: scalar::dots_f32, dots_i8: scalar::dots_i8 }
    }

    /// AVX2 + FMA, if this CPU has both.
    pub fn avx2() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Some(Kernels { name: "avx2", dots_f32: avx2::dots_f32, dots_i8: avx2::dots_i8 });
        }
        None
    }

    /// AVX-512 (F + BW), with the VNNI i8 kernel when `avx512vnni` is present too.
    pub fn avx512() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            if std::is_x86_feature_detected!("avx512vnni") {
                return Some(Kernels { name: "avx512+vnni", dots_f32: avx512::dots_f32, dots_i8: avx512::dots_i8_vnni });
            }
            return Some(Kernels { name: "avx512", dots_f32: avx512::dots_f32, dots_i8: avx512::dots_i8_bw });
        }
        None
    }

    /// AVX-512 F + BW without VNNI, even on a VNNI machine (so tests cover both i8 paths).
    pub fn avx512_without_vnni() -> Option<Kernels> {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            return Some(Kernels { name: "avx512", dots_f32: avx512::dots_f32, dots_i8: avx512::dots_i8_bw });
        }
        None
    }

    /// NEON (always present on aarch64).
    pub fn neon() -> Option<Kernels> {
        #[cfg(target_arch = "aarch64")]
        return Some(Kernels { name: "neon", dots_f32: neon::dots_f32, dots_i8: neon::dots_i8 });
        #[allow(unreachable_code)]
        None
    }

    /// Every kernel set this CPU can run (for tests and benchmarks).
    pub fn all_available() -> Vec<Kernels> {
        [Some(Self::scalar()), Self::avx2(), Self::avx512_without_vnni(), Self::avx512(), Self::neon()]
            .into_iter()
            .flatten()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::rng::Rng;

    fn i8_in_range(rng: &mut Rng) -> i8 {
        ((rng.next_u64() % 255) as i32 - 127) as i8
    }

    /// Widths cover every tail length of every kernel (16/32/64/128-element blocks) plus
    /// common embedding sizes.
    fn widths() -> Vec<usize> {
        let mut w: Vec<usize> = (1..=130).collect();
        w.extend([255, 256, 257, 383, 384, 385, 511, 768, 1023, 1536]);
        w
    }

    #[test]
    fn every_f32_kernel_matches_scalar_within_tolerance() {
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        let reference = Kernels::scalar();
        for k in Kernels::all_available() {
            for dim in widths() {
                let rows = 3;
                let q: Vec<f32> = (0..dim).map(|_| rng.signed_f32()).collect();
                let data: Vec<f32> = (0..dim * rows).map(|_| rng.signed_f32()).collect();
                let (mut want, mut got) = (vec![0.0; rows], vec![0.0; rows]);
                (reference.dots_f32)(&q, &data, &mut want);
                (k.dots_f32)(&q, &data, &mut got);
                for r in 0..rows {
                    // Tolerance: summation order differs, so allow 1e-5 of Σ|a·b| (f32 has a
                    // 6e-8 unit roundoff; 1e-5 covers ~dim·eps error growth up to dim ≈ 1536).
                    let magnitude: f32 = q.iter().zip(&data[r * dim..(r + 1) * dim]).map(|(a, b)| (a * b).abs()).sum();
                    let tol = 1e-5 * magnitude.max(1.0);
                    assert!((want[r] - got[r]).abs() <= tol, "{} dim {dim}: {} vs {}", k.name, got[r], want[r]);
                }
            }
        }
    }

    #[test]
    fn every_i8_kernel_matches_scalar_exactly() {
        let mut rng = Rng::new(0xD1B5_4A32_D192_ED03);
        let reference = Kernels::scalar();
        for k in Kernels::all_available() {
            for dim in widths() {
                let rows = 3;
                let q: Vec<i8> = (0..dim).map(|_| i8_in_range(&mut rng)).collect();
                let data: Vec<i8> = (0..dim * rows).map(|_| i8_in_range(&mut rng)).collect();
                let (mut want, mut got) = (vec![0; rows], vec![0; rows]);
                (reference.dots_i8)(&q, &data, &mut want);
                (k.dots_i8)(&q, &data, &mut got);
                assert_eq!(want, got, "{} dim {dim}", k.name);
            }
        }
    }

    #[test]
    fn i8_kernels_are_exact_at_the_extremes() {
        // All ±127: the largest magnitudes the quantiser emits, so any i16 saturation would show.
        for k in Kernels::all_available() {
            for dim in [1usize, 63, 64, 65, 384, 1536] {
                let q = vec![-127i8; dim];
                let rows: Vec<i8> = (0..dim * 2).map(|i| if i < dim { -127 } else { 127 }).collect();
                let mut got = vec![0; 2];
                (k.dots_i8)(&q, &rows, &mut got);
                assert_eq!(got, vec![127 * 127 * dim as i32, -127 * 127 * dim as i32], "{} dim {dim}", k.name);
            }
        }
    }

    #[test]
    fn active_kernel_is_the_best_available() {
        let active = Kernels::active();
        let best = Kernels::avx512().or_else(Kernels::avx2).or_else(Kernels::neon).unwrap_or_else(Kernels::scalar);
        assert_eq!(active.name, best.name);
    }
}
