//! `encode_otlp_traces` for Python (see `llmgw/_core.pyi`): span tuples become `otlp::Span`s that
//! borrow the Python strings and bytes (no copies), then `otlp` encodes them.
//!
//! Two passes, because a borrowed `&str` must outlive the vector it sits in: the first holds a
//! reference to every object whose text is borrowed (span tuples, attribute keys and values,
//! lists turned into tuples), the second borrows from them.

use std::ops::Range;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::otlp::{self, AnyValue, KeyValue, Scope, Span, SpanKind, Status, StatusCode};

const SPAN_SHAPE: &str = "a span must be a tuple (trace_id: bytes, span_id: bytes, parent_span_id: bytes, \
     name: str, kind: int, start_ns: int, end_ns: int, status_code: int, status_message: str, \
     attributes: list[tuple[str, value]] | flat list[key, value, ...][, flags: int])";
const ATTRIBUTE_SHAPE: &str =
    "attributes must be (key: str, value) tuples or a flat [key: str, value, key: str, value, ...] list";

/// A str that can be borrowed as UTF-8: lone surrogates (which UTF-8 cannot hold) become U+FFFD,
/// so a stray surrogate in a client's model name costs a character, not the batch. None: not a str.
fn utf8_str(obj: Bound<'_, PyAny>) -> Option<Bound<'_, PyString>> {
    let s = obj.cast_into::<PyString>().ok()?;
    if s.to_str().is_ok() {
        return Some(s);
    }
    lossy(&s)
}

#[cold]
fn lossy<'py>(s: &Bound<'py, PyString>) -> Option<Bound<'py, PyString>> {
    // through UTF-16 with surrogatepass: one U+FFFD per lone surrogate
    let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass")).ok()?;
    utf16.call_method1("decode", ("utf-16", "replace")).ok()?.cast_into::<PyString>().ok()
}

/// An attribute's array as a tuple (its items can be borrowed; a list's could change), with
/// its strs made UTF-8-safe like `utf8_str`.
fn array_tuple<'py>(seq: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let tuple = match seq.cast::<PyTuple>() {
        Ok(t) => t.clone(),
        Err(_) => seq.cast::<PyList>()?.to_tuple(),
    };
    let clean = tuple.iter().all(|item| item.cast::<PyString>().map_or(true, |s| s.to_str().is_ok()));
    if clean {
        return Ok(tuple);
    }
    let items: Vec<Bound<'py, PyAny>> =
        tuple.iter().map(|item| utf8_str(item.clone()).map_or(item, |s| s.into_any())).collect();
    PyTuple::new(seq.py(), items)
}

/// Where an error happened, for messages: `span 3 ("chat gpt-4o")` (its index and name).
fn span_label(index: usize, span: &Bound<'_, PyTuple>) -> String {
    let name = span.get_item(3).ok().and_then(|n| n.extract::<String>().ok());
    match name {
        Some(name) => format!("span {index} ({name:?})"),
        None => format!("span {index}"),
    }
}

/// (key, value) still as Python objects: the value a str (UTF-8-safe), a scalar, or a tuple of
/// scalars (see `array_tuple`).
type HeldAttr<'py> = (Bound<'py, PyString>, Bound<'py, PyAny>);

/// First pass over one attribute list: hold each (key, value), skipping None values.
///
/// Two spellings: `[(key, value), ...]`, or flat `[key, value, key, value, ...]`. The flat one is
/// what spans_of builds: one list instead of a tuple per attribute is ~4 µs less per request of
/// ~57 attributes (tuple allocations and the garbage collector's work on them, bench_otlp).
fn hold_attributes<'py>(
    attrs: &Bound<'py, PyAny>,
    held: &mut Vec<HeldAttr<'py>>,
    label: &dyn Fn() -> String,
) -> PyResult<()> {
    let shape = || PyTypeError::new_err(format!("{}: {ATTRIBUTE_SHAPE}", label()));
    let mut iter = attrs
        .try_iter()
        .map_err(|_| PyTypeError::new_err(format!("{}: attributes must be a list", label())))?;
    let mut flat: Option<bool> = None;
    while let Some(item) = iter.next() {
        let item = item?;
        let (key, value) = if let Ok(pair) = item.cast::<PyTuple>() {
            if flat == Some(true) || pair.len() != 2 {
                return Err(shape());
            }
            flat = Some(false);
            (pair.get_item(0)?, pair.get_item(1)?)
        } else {
            if flat == Some(false) {
                return Err(shape());
            }
            flat = Some(true);
            let value = iter.next().ok_or_else(|| {
                PyTypeError::new_err(format!("{}: a flat attribute list needs an even number of items", label()))
            })??;
            (item, value)
        };
        if value.is_none() {
            continue;
        }
        let key = utf8_str(key).ok_or_else(shape)?;
        let value = if value.is_instance_of::<PyString>() {
            utf8_str(value.clone()).map_or(value, |s| s.into_any())
        } else if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
            array_tuple(&value)?.into_any()
        } else {
            value
        };
        held.push((key, value));
    }
    Ok(())
}

/// Why a value cannot be encoded: its type (TypeError) or its value (ValueError).
enum Problem {
    Type(String),
    Value(String),
}

/// Second pass: a held value as an `AnyValue` borrowing its text (None: skip it).
fn any_value<'a>(value: &'a Bound<'_, PyAny>, nested: bool) -> Result<Option<AnyValue<'a>>, Problem> {
    if let Ok(s) = value.cast::<PyString>() {
        // the first pass made every str UTF-8-safe
        return s.to_str().map(|s| Some(AnyValue::Str(s))).map_err(|e| Problem::Value(e.to_string()));
    }
    if value.is_instance_of::<PyBool>() {
        return Ok(Some(AnyValue::Bool(value.is_truthy().unwrap_or(false))));
    }
    if value.is_instance_of::<PyInt>() {
        return value
            .extract::<i64>()
            .map(|i| Some(AnyValue::Int(i)))
            .map_err(|_| Problem::Value("an int outside the int64 range".into()));
    }
    if value.is_instance_of::<PyFloat>() {
        return value.extract::<f64>().map(|d| Some(AnyValue::Double(d))).map_err(|e| Problem::Value(e.to_string()));
    }
    if value.is_none() {
        return Ok(None);
    }
    if !nested {
        if let Ok(tuple) = value.cast::<PyTuple>() {
            let mut items = Vec::with_capacity(tuple.len());
            for item in tuple.as_slice() {
                if let Some(v) = any_value(item, true)? {
                    items.push(v);
                }
            }
            return Ok(Some(AnyValue::Array(items)));
        }
    }
    let type_name = value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    Err(Problem::Type(if nested {
        format!("an array item of type {type_name} (arrays hold str, bool, int or float)")
    } else {
        format!("a value of type {type_name} (str, bool, int, float or a list of them)")
    }))
}

fn key_values<'a>(
    held: &'a [HeldAttr<'_>],
    out: &mut Vec<KeyValue<'a>>,
    label: &dyn Fn() -> String,
) -> PyResult<()> {
    for (key, value) in held {
        let key = key.to_str()?;
        match any_value(value, false) {
            Ok(Some(value)) => out.push(KeyValue { key, value }),
            Ok(None) => {}
            Err(Problem::Type(problem)) => {
                return Err(PyTypeError::new_err(format!("{}: attribute {key:?} has {problem}", label())))
            }
            Err(Problem::Value(problem)) => {
                return Err(PyValueError::new_err(format!("{}: attribute {key:?} has {problem}", label())))
            }
        }
    }
    Ok(())
}

/// What the first pass holds for one span.
struct HeldSpan<'py> {
    tuple: Bound<'py, PyTuple>,
    name: Bound<'py, PyString>,
    message: Bound<'py, PyString>,
    attrs: Range<usize>,
}

/// The span's fixed fields, read in the second pass.
fn span_fields<'a>(
    index: usize,
    held: &'a HeldSpan<'_>,
) -> PyResult<Span<'a>> {
    let t = &held.tuple;
    let label = || span_label(index, t);
    let id_bytes = |i: usize| -> PyResult<&'a [u8]> {
        t.get_borrowed_item(i)?.extract().map_err(|_| {
            PyTypeError::new_err(format!("{}: trace_id, span_id and parent_span_id must be bytes", label()))
        })
    };
    let (trace, span, parent) = (id_bytes(0)?, id_bytes(1)?, id_bytes(2)?);
    let id_error = |e: otlp::OtlpError| PyValueError::new_err(format!("{}: {e}", label()));
    let trace_id = otlp::trace_id(trace).map_err(id_error)?;
    let span_id = otlp::span_id(span).map_err(id_error)?;
    let parent_span_id = otlp::parent_span_id(parent).map_err(id_error)?;
    let int = |i: usize, what: &str| -> PyResult<i64> {
        t.get_borrowed_item(i)?
            .extract::<i64>()
            .map_err(|_| PyTypeError::new_err(format!("{}: {what} must be an int", label())))
    };
    let nanos = |i: usize, what: &str| -> PyResult<u64> {
        t.get_borrowed_item(i)?
            .extract::<u64>()
            .map_err(|_| PyValueError::new_err(format!("{}: {what} must be an int in 0..2**64 (Unix ns)", label())))
    };
    let kind = SpanKind::from_i64(int(4, "kind")?).map_err(|e| PyValueError::new_err(format!("{}: {e}", label())))?;
    let code =
        StatusCode::from_i64(int(7, "status_code")?).map_err(|e| PyValueError::new_err(format!("{}: {e}", label())))?;
    let flags = if t.len() > 10 {
        t.get_borrowed_item(10)?
            .extract::<u32>()
            .map_err(|_| PyValueError::new_err(format!("{}: flags must be an int in 0..2**32", label())))?
    } else {
        0
    };
    Ok(Span {
        trace_id,
        span_id,
        parent_span_id,
        flags,
        name: held.name.to_str()?,
        kind,
        start_time_unix_nano: nanos(5, "start_ns")?,
        end_time_unix_nano: nanos(6, "end_ns")?,
        attributes: &[],
        status: Status { code, message: held.message.to_str()? },
    })
}

/// Both passes over `resource` and `spans`, then `f` with the borrowed attributes and spans.
fn with_spans<'py, R>(
    resource: &Bound<'py, PyAny>,
    spans: &Bound<'py, PyAny>,
    f: impl FnOnce(&[KeyValue<'_>], &[Span<'_>]) -> PyResult<R>,
) -> PyResult<R> {
    // first pass: hold every object whose text or bytes the encoder borrows
    // sized for a typical request's spans (~20 attributes each) so the vectors rarely regrow
    let span_count = spans.len().unwrap_or(0);
    let mut held_attrs: Vec<HeldAttr<'py>> = Vec::with_capacity(16 + span_count * 20);
    hold_attributes(resource, &mut held_attrs, &|| "resource".to_string())?;
    let resource_attrs = 0..held_attrs.len();
    let mut held_spans: Vec<HeldSpan<'py>> = Vec::with_capacity(span_count);
    for (index, item) in spans.try_iter()?.enumerate() {
        let tuple = item?
            .cast_into::<PyTuple>()
            .map_err(|_| PyTypeError::new_err(format!("span {index}: {SPAN_SHAPE}")))?;
        if !(10..=11).contains(&tuple.len()) {
            return Err(PyTypeError::new_err(format!("span {index}: {SPAN_SHAPE}")));
        }
        let label = || span_label(index, &tuple);
        let name = utf8_str(tuple.get_item(3)?)
            .ok_or_else(|| PyTypeError::new_err(format!("span {index}: name must be a str")))?;
        let message = utf8_str(tuple.get_item(8)?)
            .ok_or_else(|| PyTypeError::new_err(format!("{}: status_message must be a str", label())))?;
        let start = held_attrs.len();
        hold_attributes(&tuple.get_item(9)?, &mut held_attrs, &label)?;
        let attrs = start..held_attrs.len();
        held_spans.push(HeldSpan { tuple, name, message, attrs });
    }

    // second pass: borrow
    let mut kvs: Vec<KeyValue<'_>> = Vec::with_capacity(held_attrs.len());
    key_values(&held_attrs[resource_attrs], &mut kvs, &|| "resource".to_string())?;
    let resource_kvs = 0..kvs.len();
    let mut fixed: Vec<(Span<'_>, Range<usize>)> = Vec::with_capacity(held_spans.len());
    for (index, held) in held_spans.iter().enumerate() {
        let span = span_fields(index, held)?;
        let start = kvs.len();
        key_values(&held_attrs[held.attrs.clone()], &mut kvs, &|| span_label(index, &held.tuple))?;
        fixed.push((span, start..kvs.len()));
    }
    let out: Vec<Span<'_>> = fixed
        .into_iter()
        .map(|(span, range)| Span { attributes: &kvs[range], ..span })
        .collect();
    f(&kvs[resource_kvs], &out)
}

#[pyfunction]
fn encode_otlp_traces<'py>(
    py: Python<'py>,
    resource: &Bound<'py, PyAny>,
    scope_name: &str,
    scope_version: &str,
    spans: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    with_spans(resource, spans, |resource, spans| {
        let scope = Scope { name: scope_name, version: scope_version };
        let request = otlp::ExportRequest::new(resource, scope, spans);
        // written straight into the bytes object: no second ~1 MB buffer and copy per batch
        PyBytes::new_with(py, request.len(), |buf| {
            request.write(buf);
            Ok(())
        })
    })
}

/// The spans as `ScopeSpans.spans` entries only (what `Telemetry.trace_request` returns), for
/// `frame_otlp_traces`.
#[pyfunction]
fn encode_otlp_spans<'py>(py: Python<'py>, spans: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let empty = pyo3::types::PyList::empty(py);
    with_spans(empty.as_any(), spans, |_, spans| {
        let mut out = Vec::with_capacity(spans.len() * 512);
        for span in spans {
            otlp::push_span(&mut out, span, &[]);
        }
        Ok(PyBytes::new(py, &out))
    })
}

/// One ExportTraceServiceRequest of `resource` and the scope around span entries already encoded
/// (`items`: bytes, concatenated in order).
#[pyfunction]
fn frame_otlp_traces<'py>(
    py: Python<'py>,
    resource: &Bound<'py, PyAny>,
    scope_name: &str,
    scope_version: &str,
    items: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    let held: Vec<Bound<'py, PyBytes>> = items
        .try_iter()?
        .map(|item| {
            item?.cast_into::<PyBytes>().map_err(|_| PyTypeError::new_err("frame_otlp_traces: items must be bytes"))
        })
        .collect::<PyResult<_>>()?;
    let slices: Vec<&[u8]> = held.iter().map(|b| b.as_bytes()).collect();
    let empty = pyo3::types::PyList::empty(py);
    with_spans(resource, empty.as_any(), |resource, _| {
        let scope = Scope { name: scope_name, version: scope_version };
        let request = otlp::FramedRequest::new(resource, scope, &slices);
        PyBytes::new_with(py, request.len(), |buf| {
            request.write(buf);
            Ok(())
        })
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(encode_otlp_traces, m)?)?;
    m.add_function(wrap_pyfunction!(encode_otlp_spans, m)?)?;
    m.add_function(wrap_pyfunction!(frame_otlp_traces, m)?)
}
