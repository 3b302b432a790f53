//! `llmgw._core.RateLimiter`: converts Python checks to `ratelimit::Check`s and errors to
//! `ValueError`/`TypeError`. A decision comes back as one float (0.0, seconds, or inf) so the
//! caller needs no extra object per request.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use crate::ratelimit::{self, Check, Decision, Limit, RateLimitError, MAX_CHECKS};

fn to_py_err(err: RateLimitError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

const CHECK_SHAPE: &str = "each check must be a (key: str, rate_per_second: float, burst: float, cost: float) tuple";

/// Thread-safe keyed GCRA rate limiter (see `_core.pyi`).
#[pyclass(frozen, name = "RateLimiter", module = "llmgw._core")]
pub struct PyRateLimiter {
    inner: ratelimit::RateLimiter,
}

/// Parsed check fields; the key stays a Python string so its UTF-8 is borrowed, not copied.
struct RawCheck<'py> {
    key: Bound<'py, PyString>,
    rate: f64,
    burst: f64,
    cost: f64,
}

fn parse_check<'py>(item: &Bound<'py, PyAny>) -> PyResult<RawCheck<'py>> {
    let tuple = item.cast::<PyTuple>().map_err(|_| PyTypeError::new_err(CHECK_SHAPE))?;
    if tuple.len() != 4 {
        return Err(PyTypeError::new_err(CHECK_SHAPE));
    }
    let key = tuple.get_item(0)?.cast_into::<PyString>().map_err(|_| PyTypeError::new_err(CHECK_SHAPE))?;
    Ok(RawCheck {
        key,
        rate: tuple.get_borrowed_item(1)?.extract()?,
        burst: tuple.get_borrowed_item(2)?.extract()?,
        cost: tuple.get_borrowed_item(3)?.extract()?,
    })
}

fn parse_checks<'py>(
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    raw: &mut [Option<RawCheck<'py>>; MAX_CHECKS],
) -> PyResult<usize> {
    let count = items.len();
    if count > MAX_CHECKS {
        return Err(to_py_err(RateLimitError::TooManyChecks(count)));
    }
    for (slot, item) in raw.iter_mut().zip(items) {
        *slot = Some(parse_check(&item)?);
    }
    Ok(count)
}

fn decision_to_float(decision: Decision) -> f64 {
    match decision {
        Decision::Admitted => 0.0,
        Decision::RetryAfter(seconds) => seconds,
        Decision::Never => f64::INFINITY,
    }
}

#[pymethods]
impl PyRateLimiter {
    #[new]
    #[pyo3(signature = (max_keys = 1_000_000))]
    fn new(max_keys: usize) -> PyResult<Self> {
        Ok(PyRateLimiter { inner: ratelimit::RateLimiter::new(max_keys).map_err(to_py_err)? })
    }

    #[pyo3(signature = (checks, now = None))]
    fn acquire(&self, checks: &Bound<'_, PyAny>, now: Option<f64>) -> PyResult<f64> {
        let mut raw: [Option<RawCheck<'_>>; MAX_CHECKS] = Default::default();
        let count = if let Ok(list) = checks.cast::<PyList>() {
            parse_checks(list.iter(), &mut raw)?
        } else if let Ok(tuple) = checks.cast::<PyTuple>() {
            parse_checks(tuple.iter(), &mut raw)?
        } else {
            return Err(PyTypeError::new_err("checks must be a list or tuple of check tuples"));
        };
        let empty = Check { key: "", limit: Limit::new(1.0, 0.0).expect("valid"), cost: 0.0 };
        let mut parsed = [empty; MAX_CHECKS];
        for (slot, r) in parsed.iter_mut().zip(raw[..count].iter()) {
            let r = r.as_ref().expect("filled");
            *slot = Check { key: r.key.to_str()?, limit: Limit::new(r.rate, r.burst).map_err(to_py_err)?, cost: r.cost };
        }
        let decision = self.inner.acquire(&parsed[..count], now).map_err(to_py_err)?;
        Ok(decision_to_float(decision))
    }

    #[pyo3(signature = (key, rate_per_second, burst, amount, now = None))]
    fn refund(&self, key: &str, rate_per_second: f64, burst: f64, amount: f64, now: Option<f64>) -> PyResult<f64> {
        let limit = Limit::new(rate_per_second, burst).map_err(to_py_err)?;
        self.inner.refund(key, limit, amount, now).map_err(to_py_err)
    }

    #[pyo3(signature = (key, rate_per_second, burst, amount, now = None))]
    fn charge(&self, key: &str, rate_per_second: f64, burst: f64, amount: f64, now: Option<f64>) -> PyResult<()> {
        let limit = Limit::new(rate_per_second, burst).map_err(to_py_err)?;
        self.inner.charge(key, limit, amount, now).map_err(to_py_err)
    }

    #[pyo3(signature = (now = None))]
    fn evict_idle(&self, now: Option<f64>) -> PyResult<usize> {
        self.inner.evict_idle(now).map_err(to_py_err)
    }

    fn now(&self) -> f64 {
        self.inner.now()
    }

    fn memory_bytes(&self) -> usize {
        self.inner.memory_bytes()
    }

    #[getter]
    fn max_keys(&self) -> usize {
        self.inner.max_keys()
    }

    fn __len__(&self) -> usize {
        self.inner.len()
    }

    fn __repr__(&self) -> String {
        format!("RateLimiter(max_keys={}) with {} keys", self.inner.max_keys(), self.inner.len())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyRateLimiter>()?;
    m.add("RATE_LIMIT_MAX_CHECKS", MAX_CHECKS)?;
    Ok(())
}
