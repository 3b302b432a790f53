//! PyO3 shell for `guard` (see `llmgw/_core.pyi`): type conversion, byte -> str offsets, errors.

use std::borrow::Cow;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::guard::{self, injection, pii};

/// Texts at least this large are scanned with the GIL released. A 2 KB prompt scans in a few
/// µs, where the detach/attach round trip would be a visible share; from 32 KB up (tens of µs)
/// other threads gain the whole scan.
const GIL_RELEASE_MIN_BYTES: usize = 32 * 1024;

/// The UTF-8 text of `s`; lone surrogates become U+FFFD one for one, so str offsets still line up.
fn utf8_of<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    match s.to_str() {
        Ok(text) => Ok(Cow::Borrowed(text)),
        Err(_) => {
            let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass"))?;
            let cleaned = utf16.call_method1("decode", ("utf-16", "replace"))?;
            Ok(Cow::Owned(cleaned.cast::<PyString>()?.to_str()?.to_owned()))
        }
    }
}

#[pyclass(frozen, name = "PiiDetector", module = "llmgw._core")]
pub struct PyPiiDetector {
    inner: pii::PiiDetector,
    types: Vec<&'static str>,
}

#[pymethods]
impl PyPiiDetector {
    #[new]
    #[pyo3(signature = (types = None))]
    fn new(types: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let selected: Vec<pii::PiiType> = match types.filter(|t| !t.is_none()) {
            None => pii::PiiType::ALL.to_vec(),
            Some(obj) => {
                if obj.is_instance_of::<PyString>() {
                    return Err(PyTypeError::new_err(
                        "types must be an iterable of type names, not a str",
                    ));
                }
                let mut out = Vec::new();
                for item in obj.try_iter()? {
                    let item = item?;
                    let name: String = item.extract()?;
                    let ty = pii::PiiType::from_name(&name).ok_or_else(|| {
                        let known: Vec<&str> = pii::PiiType::ALL.iter().map(|t| t.name()).collect();
                        PyValueError::new_err(format!(
                            "unknown PII type {name:?}; known types: {}",
                            known.join(", ")
                        ))
                    })?;
                    if !out.contains(&ty) {
                        out.push(ty);
                    }
                }
                out
            }
        };
        let mut ordered = selected.clone();
        ordered.sort();
        Ok(PyPiiDetector {
            inner: pii::PiiDetector::new(&selected),
            types: ordered.iter().map(|t| t.name()).collect(),
        })
    }

    /// (type, start, end) in str indices, sorted by start, non-overlapping.
    fn find(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
    ) -> PyResult<Vec<(&'static str, usize, usize)>> {
        let text = utf8_of(text)?;
        let found = if text.len() >= GIL_RELEASE_MIN_BYTES {
            py.detach(|| self.inner.find(&text))
        } else {
            self.inner.find(&text)
        };
        if found.is_empty() {
            return Ok(Vec::new());
        }
        // starts are ascending and matches do not overlap, so start/end pairs are ascending too
        let mut offs: Vec<usize> = found.iter().flat_map(|m| [m.start, m.end]).collect();
        guard::char_offsets(&text, &mut offs);
        Ok(found
            .iter()
            .enumerate()
            .map(|(k, m)| (m.ty.name(), offs[2 * k], offs[2 * k + 1]))
            .collect())
    }

    /// str index where an unterminated private-key block (or an open-ended secret token still
    /// running at the end) begins, else None.
    fn open_block(&self, text: &Bound<'_, PyString>) -> PyResult<Option<usize>> {
        let text = utf8_of(text)?;
        Ok(self.inner.open_block(&text).map(|b| {
            let mut o = [b];
            guard::char_offsets(&text, &mut o);
            o[0]
        }))
    }

    #[getter]
    fn max_span(&self) -> usize {
        self.inner.max_span()
    }

    #[getter]
    fn types(&self) -> Vec<&'static str> {
        self.types.clone()
    }

    /// The candidate pattern table: (type, name, regex, max_len or None).
    #[staticmethod]
    fn patterns() -> Vec<(&'static str, &'static str, &'static str, Option<usize>)> {
        pii::PATTERNS
            .iter()
            .map(|p| (p.ty.name(), p.name, p.regex, p.max_len))
            .collect()
    }

    /// Constants the pure-Python reference needs: open-token prefixes and the marker span.
    #[staticmethod]
    fn open_prefixes() -> (Vec<&'static str>, usize) {
        (pii::OPEN_PREFIXES.to_vec(), pii::MARKER_SPAN)
    }

    fn __repr__(&self) -> String {
        format!("PiiDetector(types={:?})", self.types)
    }
}

#[pyclass(frozen, name = "InjectionDetector", module = "llmgw._core")]
pub struct PyInjectionDetector {
    inner: injection::InjectionDetector,
}

#[pymethods]
impl PyInjectionDetector {
    #[new]
    #[pyo3(signature = (threshold = 0.5))]
    fn new(threshold: f64) -> PyResult<Self> {
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PyValueError::new_err(format!(
                "threshold must be within [0, 1], got {threshold}"
            )));
        }
        Ok(PyInjectionDetector {
            inner: injection::InjectionDetector::new(threshold),
        })
    }

    fn score(
        &self,
        py: Python<'_>,
        text: &Bound<'_, PyString>,
    ) -> PyResult<(f64, Vec<&'static str>)> {
        let text = utf8_of(text)?;
        Ok(if text.len() >= GIL_RELEASE_MIN_BYTES {
            py.detach(|| self.inner.score(&text))
        } else {
            self.inner.score(&text)
        })
    }

    fn is_attack(&self, py: Python<'_>, text: &Bound<'_, PyString>) -> PyResult<bool> {
        Ok(self.score(py, text)?.0 >= self.inner.threshold())
    }

    #[getter]
    fn threshold(&self) -> f64 {
        self.inner.threshold()
    }

    /// The signature table: (family, weight, regex); family "_benign" damps the score.
    #[staticmethod]
    fn signatures() -> Vec<(&'static str, f64, &'static str)> {
        injection::SIGNATURES
            .iter()
            .map(|s| (s.family, s.weight, s.regex))
            .collect()
    }

    /// Constants the pure-Python reference needs: decoder patterns and the extra weights.
    #[staticmethod]
    fn decoder_config() -> (Vec<&'static str>, f64, f64) {
        (
            injection::DECODER_PATTERNS.to_vec(),
            injection::LEET_WEIGHT,
            injection::DECODED_WEIGHT,
        )
    }

    fn __repr__(&self) -> String {
        format!("InjectionDetector(threshold={})", self.inner.threshold())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPiiDetector>()?;
    m.add_class::<PyInjectionDetector>()
}
