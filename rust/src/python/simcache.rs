//! PyO3 shell for `simcache::SimilarityIndex`: converts vectors, payloads and errors only.

use std::path::PathBuf;
use std::time::Duration;

use pyo3::buffer::PyBuffer;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

use crate::simcache::{self, IndexConfig, Match, Quantization, SimcacheError};

create_exception!(_core, SnapshotError, PyValueError, "A simcache snapshot file is not valid: wrong magic, unknown version, truncated or corrupt.");

/// Calls on namespaces above this many rows release the GIL so other Python threads run
/// meanwhile; below it a lookup takes ~20-30 µs (bench) and holding the GIL is simpler.
const RELEASE_GIL_ABOVE_ROWS: usize = 10_000;

fn to_py_err(err: SimcacheError) -> PyErr {
    match err {
        SimcacheError::Snapshot(_) => SnapshotError::new_err(err.to_string()),
        SimcacheError::Io(e) => PyOSError::new_err(format!("snapshot I/O failed: {e}")),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// A vector from a float32 buffer (numpy array, array.array('f'), memoryview) or from bytes of
/// little-endian float32.
fn extract_floats(obj: &Bound<'_, PyAny>) -> PyResult<Vec<f32>> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        let raw = bytes.as_bytes();
        if raw.len() % 4 != 0 {
            return Err(PyValueError::new_err(format!("vector bytes must be a multiple of 4 (float32), got {} bytes", raw.len())));
        }
        return Ok(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
    }
    let buffer = PyBuffer::<f32>::get(obj)
        .map_err(|_| PyTypeError::new_err("vector must be a float32 buffer (e.g. numpy.float32 array) or bytes of little-endian float32"))?;
    buffer.to_vec(obj.py())
}

fn seconds(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("timeout_s must be a non-negative finite number, got {s}")))
}

fn now_or_clock(now: Option<f64>) -> f64 {
    now.unwrap_or_else(simcache::ttl::wall_clock_now)
}

fn match_to_tuple<'py>(py: Python<'py>, m: &Match) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, [m.score.into_pyobject(py)?.into_any(), PyBytes::new(py, &m.payload).into_any()])
}

/// Vector similarity index (cosine) with namespaces, TTL, LRU and snapshots. Thread-safe.
#[pyclass(frozen, name = "SimilarityIndex", module = "llmgw._core")]
pub struct PySimilarityIndex {
    inner: simcache::SimilarityIndex,
}

impl PySimilarityIndex {
    fn run<T: Send>(&self, py: Python<'_>, rows: usize, f: impl FnOnce(&simcache::SimilarityIndex) -> T + Send) -> T {
        if rows > RELEASE_GIL_ABOVE_ROWS {
            py.detach(|| f(&self.inner))
        } else {
            f(&self.inner)
        }
    }
}

#[pymethods]
impl PySimilarityIndex {
    #[new]
    #[pyo3(signature = (dim, max_entries = 100_000, quantization = "i8", approximate_threshold = None, probes = None, training_sample_per_list = None))]
    fn new(dim: usize, max_entries: usize, quantization: &str, approximate_threshold: Option<usize>, probes: Option<usize>, training_sample_per_list: Option<usize>) -> PyResult<Self> {
        let mut config = IndexConfig::new(dim, max_entries, Quantization::parse(quantization).map_err(to_py_err)?);
        if let Some(t) = approximate_threshold {
            config.approximate_threshold = t;
        }
        if let Some(p) = probes {
            config.probes = p;
        }
        if let Some(s) = training_sample_per_list {
            config.training_sample_per_list = s;
        }
        Ok(PySimilarityIndex { inner: simcache::SimilarityIndex::new(config).map_err(to_py_err)? })
    }

    #[getter]
    fn dim(&self) -> usize {
        self.inner.config().dim
    }
    #[getter]
    fn max_entries(&self) -> usize {
        self.inner.config().max_entries
    }
    #[getter]
    fn quantization(&self) -> &'static str {
        self.inner.config().quantization.name()
    }
    #[getter]
    fn approximate_threshold(&self) -> usize {
        self.inner.config().approximate_threshold
    }
    #[getter]
    fn probes(&self) -> usize {
        self.inner.config().probes
    }
    #[getter]
    fn training_sample_per_list(&self) -> usize {
        self.inner.config().training_sample_per_list
    }
    #[getter]
    fn kernel(&self) -> &'static str {
        self.inner.kernel_name()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn namespace_len(&self, namespace: &str) -> usize {
        self.inner.namespace_len(namespace)
    }

    fn is_approximate(&self, namespace: &str) -> bool {
        self.inner.is_partitioned(namespace)
    }

    fn is_retraining(&self, namespace: &str) -> bool {
        self.inner.is_retraining(namespace)
    }

    #[pyo3(signature = (timeout_s = None))]
    fn wait_idle(&self, py: Python<'_>, timeout_s: Option<f64>) -> PyResult<bool> {
        let timeout = timeout_s.map(seconds).transpose()?;
        Ok(py.detach(|| self.inner.wait_idle(timeout)))
    }

    fn hold_retraining(&self, hold: bool) {
        self.inner.hold_retraining(hold);
    }

    fn wait_retraining_held(&self, py: Python<'_>, timeout_s: f64) -> PyResult<bool> {
        let timeout = seconds(timeout_s)?;
        Ok(py.detach(|| self.inner.wait_until_retraining_held(timeout)))
    }

    #[pyo3(signature = (namespace, vector, payload, ttl_s = None, now = None))]
    fn insert(&self, py: Python<'_>, namespace: &str, vector: &Bound<'_, PyAny>, payload: &[u8], ttl_s: Option<f64>, now: Option<f64>) -> PyResult<u64> {
        let v = extract_floats(vector)?;
        let now = now_or_clock(now);
        // Training no longer runs here, but the write lock may be busy with lookups: wait for it
        // without the GIL so other Python threads run.
        let rows = self.inner.namespace_len(namespace);
        self.run(py, rows, |idx| idx.insert(namespace, &v, payload, ttl_s, now)).map_err(to_py_err)
    }

    #[pyo3(signature = (namespace, vectors, payloads, ttl_s = None, now = None))]
    fn insert_many(&self, py: Python<'_>, namespace: &str, vectors: &Bound<'_, PyAny>, payloads: &Bound<'_, PyList>, ttl_s: Option<f64>, now: Option<f64>) -> PyResult<Vec<u64>> {
        let v = extract_floats(vectors)?;
        let payloads: Vec<Vec<u8>> = payloads.iter().map(|p| p.extract::<Vec<u8>>()).collect::<PyResult<_>>()?;
        let now = now_or_clock(now);
        let rows = self.inner.namespace_len(namespace) + payloads.len();
        self.run(py, rows, |idx| idx.insert_many(namespace, &v, payloads, ttl_s, now)).map_err(to_py_err)
    }

    fn delete(&self, id: u64) -> bool {
        self.inner.delete(id)
    }

    #[pyo3(signature = (namespace, vector, threshold, now = None))]
    fn best_match<'py>(&self, py: Python<'py>, namespace: &str, vector: &Bound<'py, PyAny>, threshold: f32, now: Option<f64>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let v = extract_floats(vector)?;
        let now = now_or_clock(now);
        let rows = self.inner.namespace_len(namespace);
        let found = self.run(py, rows, |idx| idx.best_match(namespace, &v, threshold, now)).map_err(to_py_err)?;
        found.map(|m| match_to_tuple(py, &m)).transpose()
    }

    #[pyo3(signature = (namespace, vector, k, now = None))]
    fn top_k<'py>(&self, py: Python<'py>, namespace: &str, vector: &Bound<'py, PyAny>, k: usize, now: Option<f64>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        let v = extract_floats(vector)?;
        let now = now_or_clock(now);
        let rows = self.inner.namespace_len(namespace);
        let found = self.run(py, rows, |idx| idx.top_k(namespace, &v, k, now)).map_err(to_py_err)?;
        found.iter().map(|m| match_to_tuple(py, m)).collect()
    }

    #[pyo3(signature = (namespace, vector, k, now = None))]
    fn top_k_ids(&self, py: Python<'_>, namespace: &str, vector: &Bound<'_, PyAny>, k: usize, now: Option<f64>) -> PyResult<Vec<(f32, u64)>> {
        let v = extract_floats(vector)?;
        let now = now_or_clock(now);
        let rows = self.inner.namespace_len(namespace);
        let found = self.run(py, rows, |idx| idx.top_k(namespace, &v, k, now)).map_err(to_py_err)?;
        Ok(found.into_iter().map(|m| (m.score, m.id)).collect())
    }

    #[pyo3(signature = (now = None))]
    fn purge_expired(&self, py: Python<'_>, now: Option<f64>) -> usize {
        let now = now_or_clock(now);
        py.detach(|| self.inner.purge_expired(now))
    }

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        py.detach(|| simcache::snapshot::save(&self.inner, &path)).map_err(to_py_err)
    }

    #[staticmethod]
    #[pyo3(signature = (path, *, hold_retraining = false))]
    fn load(py: Python<'_>, path: PathBuf, hold_retraining: bool) -> PyResult<Self> {
        let inner = py.detach(|| simcache::snapshot::load_with(&path, hold_retraining)).map_err(to_py_err)?;
        Ok(PySimilarityIndex { inner })
    }

    fn __repr__(&self) -> String {
        let c = self.inner.config();
        format!(
            "SimilarityIndex(dim={}, max_entries={}, quantization={:?}, approximate_threshold={}, probes={}, len={})",
            c.dim,
            c.max_entries,
            c.quantization.name(),
            c.approximate_threshold,
            c.probes,
            self.inner.len()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySimilarityIndex>()?;
    m.add("SnapshotError", m.py().get_type::<SnapshotError>())?;
    Ok(())
}
