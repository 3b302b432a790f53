//! NEON kernels (aarch64, where NEON is part of the base ISA, so no run-time check is needed).
//!
//! Not compiled or run on the x86-64 development machine (no aarch64 target installed there);
//! the property tests in `kernels::tests` cover it when `cargo test` runs on aarch64.

use std::arch::aarch64::*;

fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: NEON is mandatory on aarch64; every load reads i..i+4 (or i+16) with that ≤ n.
    unsafe {
        let mut acc = [vdupq_n_f32(0.0); 4];
        while i + 16 <= n {
            for (lane, slot) in acc.iter_mut().enumerate() {
                let off = i + lane * 4;
                *slot = vfmaq_f32(*slot, vld1q_f32(pa.add(off)), vld1q_f32(pb.add(off)));
            }
            i += 16;
        }
        while i + 4 <= n {
            acc[0] = vfmaq_f32(acc[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += 4;
        }
        let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
        let mut total = vaddvq_f32(sum);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }
}

fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut i = 0;
    // SAFETY: NEON is mandatory on aarch64; every load reads i..i+16 with i + 16 ≤ n.
    unsafe {
        let mut acc = vdupq_n_s32(0);
        while i + 16 <= n {
            let x = vld1q_s8(pa.add(i));
            let y = vld1q_s8(pb.add(i));
            // i8·i8 fits i16 exactly; pairwise-add-accumulate widens to i32 without overflow.
            acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(y)));
            acc = vpadalq_s16(acc, vmull_high_s8(x, y));
            i += 16;
        }
        let mut total = vaddvq_s32(acc);
        for j in i..n {
            total += i32::from(a[j]) * i32::from(b[j]);
        }
        total
    }
}

pub(super) fn dots_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_f32(query, row);
    }
}

pub(super) fn dots_i8(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_i8(query, row);
    }
}
