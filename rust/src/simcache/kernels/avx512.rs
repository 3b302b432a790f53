//! AVX-512 kernels (x86-64: Skylake-SP / Ice Lake / Zen 4 and later).
//!
//! f32 needs `avx512f`; the i8 kernel needs `avx512bw`, and a faster variant uses `avx512vnni`
//! (`vpdpbusd`: 64 byte products per instruction). Only reachable through
//! `Kernels::avx512()`, which checks those features at run time; that is what makes the
//! `unsafe` calls sound. Masked loads handle any tail, so odd widths need no scalar loop.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Mask with the low `n` bits set (n ≤ 64).
#[inline(always)]
fn low_mask64(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

#[target_feature(enable = "avx512f")]
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Four accumulators × 16 lanes = 64 floats per iteration (hides FMA latency).
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): full loads stay below n; the tail load is masked to the n - i valid lanes.
    unsafe {
        while i + 64 <= n {
            for (lane, slot) in acc.iter_mut().enumerate() {
                let off = i + lane * 16;
                *slot = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(off)), _mm512_loadu_ps(pb.add(off)), *slot);
            }
            i += 64;
        }
        while i < n {
            let m = low_mask64(n - i) as __mmask16;
            let x = _mm512_maskz_loadu_ps(m, pa.add(i));
            let y = _mm512_maskz_loadu_ps(m, pb.add(i));
            acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
            i += 16;
        }
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum)
}

#[target_feature(enable = "avx512f,avx512bw")]
fn dot_i8_bw(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // Widen 32 bytes to i16 and madd pairs into i32: exact for every i8 value.
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    // SAFETY: the 32-byte loads are masked to the n - i valid bytes.
    unsafe {
        while i < n {
            let m = low_mask64(n - i) as __mmask32;
            let x = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, pa.add(i)));
            let y = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, pb.add(i)));
            acc = _mm512_add_epi32(acc, _mm512_madd_epi16(x, y));
            i += 32;
        }
    }
    _mm512_reduce_add_epi32(acc)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dot_i8_vnni(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // vpdpbusd multiplies unsigned by signed bytes, so compute |a|·(sign(a)·b). Exact for inputs in
    // [-127, 127] (the quantiser's range); a -128 in b under a negative a would wrap, so the
    // contract (checked by the property tests) excludes -128.
    let zero = _mm512_setzero_si512();
    let mut acc0 = _mm512_setzero_si512();
    let mut acc1 = _mm512_setzero_si512();
    let mut i = 0;
    // SAFETY: full loads stay below n; the tail loads are masked to the valid bytes.
    unsafe {
        while i + 128 <= n {
            let x0 = _mm512_loadu_si512(pa.add(i).cast());
            let y0 = _mm512_loadu_si512(pb.add(i).cast());
            let x1 = _mm512_loadu_si512(pa.add(i + 64).cast());
            let y1 = _mm512_loadu_si512(pb.add(i + 64).cast());
            let y0 = _mm512_mask_sub_epi8(y0, _mm512_movepi8_mask(x0), zero, y0);
            let y1 = _mm512_mask_sub_epi8(y1, _mm512_movepi8_mask(x1), zero, y1);
            acc0 = _mm512_dpbusd_epi32(acc0, _mm512_abs_epi8(x0), y0);
            acc1 = _mm512_dpbusd_epi32(acc1, _mm512_abs_epi8(x1), y1);
            i += 128;
        }
        while i < n {
            let m = low_mask64(n - i);
            let x = _mm512_maskz_loadu_epi8(m, pa.add(i));
            let y = _mm512_maskz_loadu_epi8(m, pb.add(i));
            let y = _mm512_mask_sub_epi8(y, _mm512_movepi8_mask(x), zero, y);
            acc0 = _mm512_dpbusd_epi32(acc0, _mm512_abs_epi8(x), y);
            i += 64;
        }
    }
    _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1))
}

#[target_feature(enable = "avx512f")]
fn dots_f32_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_f32(query, row);
    }
}

#[target_feature(enable = "avx512f,avx512bw")]
fn dots_i8_rows_bw(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_i8_bw(query, row);
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn dots_i8_rows_vnni(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_i8_vnni(query, row);
    }
}

// Safe entry points. SAFETY: installed only by `Kernels::avx512()` after detecting the features
// named in each function's target_feature list.
pub(super) fn dots_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    unsafe { dots_f32_rows(query, rows, out) }
}

pub(super) fn dots_i8_bw(query: &[i8], rows: &[i8], out: &mut [i32]) {
    unsafe { dots_i8_rows_bw(query, rows, out) }
}

pub(super) fn dots_i8_vnni(query: &[i8], rows: &[i8], out: &mut [i32]) {
    unsafe { dots_i8_rows_vnni(query, rows, out) }
}
