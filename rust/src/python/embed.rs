//! `llmgw._core.embed` / `embed_batch`: numpy float32 arrays from `lexical::embed_into`.

use numpy::{PyArray1, PyArray2, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::embed::{self as lexical, EmbedError, DEFAULT_DIM};

fn to_py_err(err: EmbedError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Batches with more text than this release the GIL: ~1 µs per 100 chars, so 64 KiB is
/// ~0.3 ms of work, well above the cost of detaching and re-attaching.
const DETACH_MIN_BYTES: usize = 64 * 1024;

#[pyfunction]
#[pyo3(signature = (text, dim = DEFAULT_DIM))]
fn embed<'py>(py: Python<'py>, text: &str, dim: usize) -> PyResult<Bound<'py, PyArray1<f32>>> {
    if dim == 0 || dim > lexical::MAX_DIM {
        return Err(to_py_err(EmbedError::InvalidDim(dim)));
    }
    let array = PyArray1::<f32>::zeros(py, dim, false);
    // SAFETY: the array was just created here and is not yet visible to any other code.
    let out = unsafe { array.as_slice_mut() }.expect("new array is contiguous");
    lexical::embed_into(text, out).map_err(to_py_err)?;
    Ok(array)
}

#[pyfunction]
#[pyo3(signature = (texts, dim = DEFAULT_DIM))]
fn embed_batch<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    dim: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    if dim == 0 || dim > lexical::MAX_DIM {
        return Err(to_py_err(EmbedError::InvalidDim(dim)));
    }
    let strs: Vec<&str> = texts.iter().map(|t| t.to_str()).collect::<PyResult<_>>()?;
    let array = PyArray2::<f32>::zeros(py, [strs.len(), dim], false);
    // SAFETY: the array was just created here and is not yet visible to any other code.
    let out = unsafe { array.as_slice_mut() }.expect("new array is contiguous");
    let total_bytes: usize = strs.iter().map(|s| s.len()).sum();
    if total_bytes >= DETACH_MIN_BYTES {
        py.detach(|| lexical::embed_batch_into(&strs, dim, out)).map_err(to_py_err)?;
    } else {
        lexical::embed_batch_into(&strs, dim, out).map_err(to_py_err)?;
    }
    Ok(array)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(embed, m)?)?;
    m.add_function(wrap_pyfunction!(embed_batch, m)?)?;
    m.add("EMBED_DEFAULT_DIM", DEFAULT_DIM)?;
    Ok(())
}
