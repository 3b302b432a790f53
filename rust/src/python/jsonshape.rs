//! `json_depth` for Python (see `llmgw/_core.pyi`).

use pyo3::prelude::*;

use crate::jsonshape;

#[pyfunction]
fn json_depth(data: &[u8], limit: usize) -> usize {
    jsonshape::json_depth(data, limit)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(json_depth, m)?)
}
