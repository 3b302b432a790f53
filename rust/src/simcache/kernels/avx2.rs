//! AVX2 + FMA kernels (x86-64, Haswell / Zen 1 and later).
//!
//! Only reachable through `Kernels::avx2()`, which checks `avx2` and `fma` at run time; that check
//! is what makes the `unsafe` calls below sound.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Horizontal sum of the 8 lanes of an f32 vector.
#[target_feature(enable = "avx2,fma")]
fn hsum_ps(v: __m256) -> f32 {
    let pair = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let quad = _mm_add_ps(pair, _mm_movehl_ps(pair, pair));
    let single = _mm_add_ss(quad, _mm_shuffle_ps(quad, quad, 1));
    _mm_cvtss_f32(single)
}

/// Horizontal sum of the 8 lanes of an i32 vector.
#[target_feature(enable = "avx2,fma")]
fn hsum_epi32(v: __m256i) -> i32 {
    let pair = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let quad = _mm_add_epi32(pair, _mm_shuffle_epi32(pair, 0b01_00_11_10));
    let single = _mm_add_epi32(quad, _mm_shuffle_epi32(quad, 0b10_11_00_01));
    _mm_cvtsi128_si32(single)
}

#[target_feature(enable = "avx2,fma")]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four independent accumulators hide the 4-cycle FMA latency (32 floats per iteration).
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads below): i + width ≤ n ≤ both slice lengths.
    unsafe {
        while i + 32 <= n {
            for (lane, slot) in acc.iter_mut().enumerate() {
                let off = i + lane * 8;
                *slot = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(off)), _mm256_loadu_ps(pb.add(off)), *slot);
            }
            i += 32;
        }
        while i + 8 <= n {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc[0]);
            i += 8;
        }
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut total = hsum_ps(sum);
    for j in i..n {
        total += a[j] * b[j];
    }
    total
}

#[target_feature(enable = "avx2,fma")]
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Widen 16 bytes to i16, then madd pairs into i32: exact for every i8 value (unlike the
    // maddubs trick, which saturates at -128·-128·2).
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    // SAFETY: i + 32 ≤ n ≤ both slice lengths.
    unsafe {
        while i + 32 <= n {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i).cast()));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i).cast()));
            let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16).cast()));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16).cast()));
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(a0, b0));
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(a1, b1));
            i += 32;
        }
    }
    let mut total = hsum_epi32(_mm256_add_epi32(acc0, acc1));
    for j in i..n {
        total += i32::from(a[j]) * i32::from(b[j]);
    }
    total
}

#[target_feature(enable = "avx2,fma")]
fn dots_f32_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_f32(query, row);
    }
}

#[target_feature(enable = "avx2,fma")]
fn dots_i8_rows(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_i8(query, row);
    }
}

// Safe entry points (the row loop lives inside the target_feature functions so the dot product
// inlines into it). SAFETY for both: only installed by `Kernels::avx2()` after detecting avx2+fma.
pub(super) fn dots_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    unsafe { dots_f32_rows(query, rows, out) }
}

pub(super) fn dots_i8(query: &[i8], rows: &[i8], out: &mut [i32]) {
    unsafe { dots_i8_rows(query, rows, out) }
}
