//! PyO3 shell for `crate::sse`: `SseEvent`, `SseParser`, `StreamTap`. Type conversion only.

use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::sse::{self as core_sse, EventRef};

/// One dispatched event. Fields are stored as Python objects, made once at dispatch, so
/// reading an attribute is a reference-count increment, not a conversion.
#[pyclass(frozen, freelist = 256, module = "llmgw._core", name = "SseEvent")]
pub struct SseEvent {
    #[pyo3(get)]
    event: Option<Py<PyString>>,
    #[pyo3(get)]
    data: Py<PyString>,
    #[pyo3(get)]
    id: Option<Py<PyString>>,
    #[pyo3(get)]
    retry: Option<u64>,
}

impl SseEvent {
    fn from_ref(py: Python<'_>, event: EventRef<'_>) -> Self {
        Self {
            event: event.event().map(|e| PyString::new(py, &e).unbind()),
            data: PyString::new(py, &event.data()).unbind(),
            id: event.id().map(|i| PyString::new(py, &i).unbind()),
            retry: event.retry(),
        }
    }
}

/// Python equality of two optional strings.
fn same_text(py: Python<'_>, x: Option<&Py<PyString>>, y: Option<&Py<PyString>>) -> PyResult<bool> {
    match (x, y) {
        (None, None) => Ok(true),
        (Some(x), Some(y)) => PyAnyMethods::eq(x.bind(py).as_any(), y.bind(py)),
        _ => Ok(false),
    }
}

#[pymethods]
impl SseEvent {
    #[new]
    #[pyo3(signature = (data, event=None, id=None, retry=None))]
    fn new(
        data: Py<PyString>,
        event: Option<Py<PyString>>,
        id: Option<Py<PyString>>,
        retry: Option<u64>,
    ) -> Self {
        Self {
            event,
            data,
            id,
            retry,
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let show = |s: Option<&Py<PyString>>| -> PyResult<String> {
            match s {
                Some(s) => Ok(s.bind(py).repr()?.to_string()),
                None => Ok("None".to_string()),
            }
        };
        let retry = self
            .retry
            .map_or_else(|| "None".to_string(), |r| r.to_string());
        Ok(format!(
            "SseEvent(data={}, event={}, id={}, retry={})",
            show(Some(&self.data))?,
            show(self.event.as_ref())?,
            show(self.id.as_ref())?,
            retry
        ))
    }

    fn __richcmp__(
        &self,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
        py: Python<'_>,
    ) -> PyResult<Py<PyAny>> {
        let Ok(other) = other.cast::<SseEvent>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let equal = self.retry == other.retry
            && same_text(py, Some(&self.data), Some(&other.data))?
            && same_text(py, self.event.as_ref(), other.event.as_ref())?
            && same_text(py, self.id.as_ref(), other.id.as_ref())?;
        match op {
            CompareOp::Eq => Ok(equal.into_pyobject(py)?.to_owned().into_any().unbind()),
            CompareOp::Ne => Ok((!equal).into_pyobject(py)?.to_owned().into_any().unbind()),
            _ => Ok(py.NotImplemented()),
        }
    }
}

/// Incremental SSE parser (see `llmgw/_core.pyi`).
#[pyclass(module = "llmgw._core", name = "SseParser")]
pub struct SseParser {
    inner: core_sse::SseParser,
}

#[pymethods]
impl SseParser {
    #[new]
    fn new() -> Self {
        Self {
            inner: core_sse::SseParser::new(),
        }
    }

    fn feed<'py>(&mut self, py: Python<'py>, chunk: &[u8]) -> PyResult<Bound<'py, PyList>> {
        let events = PyList::empty(py);
        let mut failure = None;
        self.inner.feed_with(chunk, |event| {
            if failure.is_none() {
                let appended =
                    Bound::new(py, SseEvent::from_ref(py, event)).and_then(|e| events.append(e));
                if let Err(err) = appended {
                    failure = Some(err);
                }
            }
        });
        match failure {
            None => Ok(events),
            Some(err) => Err(err),
        }
    }

    fn finish(&mut self) -> bool {
        self.inner.finish()
    }

    #[getter]
    fn comments(&self) -> u64 {
        self.inner.comments()
    }

    #[getter]
    fn pending_bytes(&self) -> usize {
        self.inner.pending_bytes()
    }

    #[getter]
    fn last_event_id(&self) -> Option<String> {
        self.inner.last_event_id().map(|id| id.into_owned())
    }

    #[getter]
    fn retry(&self) -> Option<u64> {
        self.inner.retry()
    }
}

/// Event-aligned verbatim forwarding of an OpenAI stream with usage extraction.
#[pyclass(module = "llmgw._core", name = "StreamTap")]
pub struct StreamTap {
    inner: core_sse::StreamTap,
}

#[pymethods]
impl StreamTap {
    #[new]
    #[pyo3(signature = (collect_text=false))]
    fn new(collect_text: bool) -> Self {
        Self {
            inner: core_sse::StreamTap::new(collect_text),
        }
    }

    fn feed<'py>(&mut self, chunk: &Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyBytes>> {
        let py = chunk.py();
        let bytes = chunk.as_bytes();
        self.inner.feed_with(bytes, |carried, head| {
            if carried.is_empty() && head.len() == bytes.len() {
                // The whole chunk ends at an event boundary (the common case for upstreams
                // that write one event per send): hand back the same object, no copy.
                return Ok(chunk.clone());
            }
            PyBytes::new_with(py, carried.len() + head.len(), |out| {
                out[..carried.len()].copy_from_slice(carried);
                out[carried.len()..].copy_from_slice(head);
                Ok(())
            })
        })
    }

    fn pending<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.pending())
    }

    #[getter]
    fn events(&self) -> u64 {
        self.inner.events()
    }

    #[getter]
    fn done(&self) -> bool {
        self.inner.done()
    }

    #[getter]
    fn usage(&self) -> Option<(u64, u64, u64, Option<u64>)> {
        self.inner.usage().map(|u| {
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.total_tokens,
                u.cached_tokens,
            )
        })
    }

    #[getter]
    fn finish_reason(&self) -> Option<&str> {
        self.inner.finish_reason()
    }

    #[getter]
    fn model(&self) -> Option<&str> {
        self.inner.model()
    }

    #[getter]
    fn text(&self) -> &str {
        self.inner.text()
    }

    #[getter]
    fn error(&self) -> Option<&str> {
        self.inner.error()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SseEvent>()?;
    m.add_class::<SseParser>()?;
    m.add_class::<StreamTap>()?;
    Ok(())
}
