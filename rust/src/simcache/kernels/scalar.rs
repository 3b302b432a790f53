//! Portable reference kernels. Every SIMD kernel is property-tested against these (see
//! `kernels::tests`), and they are the fallback on CPUs with none of the instruction sets below.

/// Dot product of two equal-length f32 slices, accumulated left to right in f32.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut sum = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        sum += x * y;
    }
    sum
}

/// Dot product of two equal-length i8 slices, exact in i32 (|sum| ≤ 128·128·len fits for
/// len < 131,072, far above any embedding width).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    let mut sum = 0i32;
    for (x, y) in a.iter().zip(b) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// `out[r] = dot(query, rows[r·dim .. (r+1)·dim])` for each row.
pub fn dots_f32(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_f32(query, row);
    }
}

/// `out[r] = dot(query, rows[r·dim .. (r+1)·dim])` for each row, exact in i32.
pub fn dots_i8(query: &[i8], rows: &[i8], out: &mut [i32]) {
    let dim = query.len();
    for (row, slot) in rows.chunks_exact(dim).zip(out.iter_mut()) {
        *slot = dot_i8(query, row);
    }
}
