//! Turning caller vectors into what the index stores and scans: unit-length f32 (so cosine
//! similarity is a dot product) and, for the i8 scan, symmetric per-vector quantised codes.

use super::error::SimcacheError;

/// Checks `v` and returns it scaled to unit length.
pub fn normalized(v: &[f32], dim: usize) -> Result<Vec<f32>, SimcacheError> {
    if v.len() != dim {
        return Err(SimcacheError::WrongDimension { expected: dim, got: v.len() });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(SimcacheError::NonFinite);
    }
    // Accumulate the norm in f64: an f32 sum of 1536 squares can lose the low digits.
    let norm = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return Err(SimcacheError::ZeroVector);
    }
    Ok(v.iter().map(|&x| (f64::from(x) / norm) as f32).collect())
}

/// Appends the i8 codes of unit vector `v` to `out` and returns the factor that turns a code dot
/// product back into the f32 scale: `dot(a, b) ≈ dot_i8(ca, cb) · fa · fb`.
///
/// Scale per vector to its own largest |component| (→ ±127): the cosine error stays below
/// 5e-3 (tested below); the exact re-rank of the best few removes it from the results.
pub fn quantize_i8_into(v: &[f32], out: &mut Vec<i8>) -> f32 {
    let max_abs = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    if max_abs == 0.0 {
        out.extend(std::iter::repeat(0i8).take(v.len()));
        return 0.0;
    }
    let scale = 127.0 / max_abs;
    out.extend(v.iter().map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8));
    1.0 / scale
}

/// A query prepared once for every row it will be compared with.
pub struct Query {
    pub vector: Vec<f32>,
    pub codes: Vec<i8>,
    pub code_factor: f32,
}

impl Query {
    /// Codes are always made (≈0.3 µs at 384-d): partitioned namespaces choose partitions with
    /// them even when rows are scanned in f32.
    pub fn new(v: &[f32], dim: usize) -> Result<Query, SimcacheError> {
        let vector = normalized(v, dim)?;
        let mut codes = Vec::with_capacity(dim);
        let code_factor = quantize_i8_into(&vector, &mut codes);
        Ok(Query { vector, codes, code_factor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_has_unit_length_and_keeps_direction() {
        let v = normalized(&[3.0, 4.0], 2).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn rejects_bad_vectors() {
        assert!(matches!(normalized(&[1.0], 2), Err(SimcacheError::WrongDimension { expected: 2, got: 1 })));
        assert!(matches!(normalized(&[0.0, 0.0], 2), Err(SimcacheError::ZeroVector)));
        assert!(matches!(normalized(&[f32::NAN, 1.0], 2), Err(SimcacheError::NonFinite)));
    }

    #[test]
    fn quantised_dot_approximates_the_f32_dot() {
        let a = normalized(&(0..384).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect::<Vec<_>>(), 384).unwrap();
        let b = normalized(&(0..384).map(|i| ((i * 104_729) % 97) as f32 - 48.0).collect::<Vec<_>>(), 384).unwrap();
        let (mut ca, mut cb) = (Vec::new(), Vec::new());
        let (fa, fb) = (quantize_i8_into(&a, &mut ca), quantize_i8_into(&b, &mut cb));
        let exact: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let approx = ca.iter().zip(&cb).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum::<i32>() as f32 * fa * fb;
        assert!((exact - approx).abs() < 5e-3, "{exact} vs {approx}");
    }
}
