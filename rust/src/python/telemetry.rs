//! `llmgw._core.Telemetry` (see `llmgw/_core.pyi`): reads the finish tuple into a
//! `telemetry::Finish` that borrows the tuple's strs and bytes (no copies: `PyTuple::as_slice`
//! and `PyString::to_str`, which hands out CPython's own UTF-8 of an ASCII str), then
//! `telemetry::Telemetry` counts and logs. `snapshot` converts the tables to plain Python data.
//!
//! `finish_request` reads the same facts from the request's own objects (the RequestContext, the
//! RequestRunner and their attempts, usage, plan, trace) by attribute, with interned names, and
//! borrows their strs the same way: see the comment above `Request` for why and for what it costs.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::telemetry::request::{overhead, wall_start_ns};
use crate::telemetry::{self, Attempt, Catalog, Finish, Price, TraceId};

/// The finish tuple's items, by position (the layout is written down in `_core.pyi`).
const FIELDS: [&str; 31] = [
    "request_id", "start_ns", "duration_s", "ttfb_s", "upstream_s", "overhead_s", "kind", "method", "path",
    "status", "result", "model", "group", "deployment", "provider", "error_code", "key_id", "key_name", "user",
    "team", "prompt_tokens", "completion_tokens", "cached_tokens", "usage_estimated", "cost_usd", "cache",
    "stream", "trace_id", "attempts", "input_json", "output",
];
const ATTEMPT_FIELDS: [&str; 8] =
    ["deployment", "status", "error_code", "seconds", "via", "retry", "hedge", "cancelled"];
const ATTEMPTS: usize = 28;

/// Why a tuple could not be read: a wrong item (TypeError/ValueError), or a str holding a lone
/// surrogate (no UTF-8 to borrow: the tuple is cleaned and read again, see `clean`).
enum Fail {
    Err(PyErr),
    Surrogate,
}

impl From<PyErr> for Fail {
    fn from(e: PyErr) -> Self {
        Fail::Err(e)
    }
}

type Read<T> = Result<T, Fail>;

/// Where an item sits, for messages: `item 8 (path)` or `item 28 (attempts) [1] item 0 (deployment)`.
#[derive(Clone, Copy)]
struct Place {
    attempt: Option<usize>,
}

impl Place {
    fn name(self, i: usize) -> String {
        match self.attempt {
            None => format!("item {i} ({})", FIELDS[i]),
            Some(j) => format!("item {ATTEMPTS} (attempts) [{j}] item {i} ({})", ATTEMPT_FIELDS[i]),
        }
    }

    #[cold]
    fn wrong(self, i: usize, item: &Bound<'_, PyAny>, want: &str) -> Fail {
        let type_name = item.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        Fail::Err(PyTypeError::new_err(format!("finish record {} must be {want}, not {type_name}", self.name(i))))
    }
}

struct Items<'a, 'py> {
    items: &'a [Bound<'py, PyAny>],
    place: Place,
}

impl<'a, 'py> Items<'a, 'py> {
    #[inline]
    fn str(&self, i: usize) -> Read<&'a str> {
        let item = &self.items[i];
        match item.cast::<PyString>() {
            Ok(s) => s.to_str().map_err(|_| Fail::Surrogate),
            Err(_) => Err(self.place.wrong(i, item, "a str")),
        }
    }

    #[inline]
    fn opt_str(&self, i: usize) -> Read<Option<&'a str>> {
        if self.items[i].is_none() {
            return Ok(None);
        }
        match self.items[i].cast::<PyString>() {
            Ok(s) => s.to_str().map(Some).map_err(|_| Fail::Surrogate),
            Err(_) => Err(self.place.wrong(i, &self.items[i], "a str or None")),
        }
    }

    #[inline]
    fn int(&self, i: usize) -> Read<i64> {
        self.items[i].extract::<i64>().map_err(|_| self.place.wrong(i, &self.items[i], "an int in the int64 range"))
    }

    #[inline]
    fn opt_int(&self, i: usize) -> Read<Option<i64>> {
        if self.items[i].is_none() {
            return Ok(None);
        }
        self.int(i).map(Some)
    }

    #[inline]
    fn float(&self, i: usize) -> Read<f64> {
        self.items[i].extract::<f64>().map_err(|_| self.place.wrong(i, &self.items[i], "a float"))
    }

    #[inline]
    fn opt_float(&self, i: usize) -> Read<Option<f64>> {
        if self.items[i].is_none() {
            return Ok(None);
        }
        self.float(i).map(Some)
    }

    /// Python truthiness, as the plugin tests these fields (`if r.stream`, `r.retry`).
    #[inline]
    fn truthy(&self, i: usize) -> Read<bool> {
        Ok(self.items[i].is_truthy()?)
    }

    fn trace_id(&self, i: usize) -> Read<Option<TraceId<'a>>> {
        let item = &self.items[i];
        if item.is_none() {
            Ok(None)
        } else if let Ok(raw) = item.cast::<PyBytes>() {
            Ok(Some(TraceId::Raw(raw.as_bytes())))
        } else if item.is_instance_of::<PyString>() {
            self.str(i).map(|hex| Some(TraceId::Hex(hex)))
        } else {
            Err(self.place.wrong(i, item, "a str (hex), bytes or None"))
        }
    }

    fn json(&self, i: usize) -> Read<Option<&'a [u8]>> {
        let item = &self.items[i];
        let json = if item.is_none() {
            return Ok(None);
        } else if let Ok(b) = item.cast::<PyBytes>() {
            b.as_bytes()
        } else if item.is_instance_of::<PyString>() {
            self.str(i)?.as_bytes()
        } else {
            return Err(self.place.wrong(i, item, "bytes (one JSON value), str or None"));
        };
        if json.is_empty() {
            return Err(Fail::Err(PyValueError::new_err(format!(
                "finish record {} is empty: it must be one serialized JSON value (or None)",
                self.place.name(i)
            ))));
        }
        Ok(Some(json))
    }
}

#[inline]
fn tuple_of<'a, 'py>(
    obj: &'a Bound<'py, PyAny>,
    len: usize,
    shape: impl FnOnce() -> String,
) -> PyResult<&'a Bound<'py, PyTuple>> {
    match obj.cast::<PyTuple>() {
        Ok(t) if t.len() == len => Ok(t),
        _ => Err(PyTypeError::new_err(format!("{} must be a tuple of {len} items (see Telemetry.finish)", shape()))),
    }
}

/// The attempts item as a tuple whose items can be borrowed (a list's could change).
fn attempts_tuple<'py>(item: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    if let Ok(t) = item.cast::<PyTuple>() {
        return Ok(t.clone());
    }
    match item.cast::<PyList>() {
        Ok(list) => Ok(list.to_tuple()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "finish record item {ATTEMPTS} (attempts) must be a list or tuple of attempt tuples"
        ))),
    }
}

/// Up to this many attempts are read into an array on the stack (no allocation per request).
const INLINE_ATTEMPTS: usize = 4;

fn read_attempt<'a>(j: usize, item: &'a Bound<'_, PyAny>) -> Read<Attempt<'a>> {
    let t = tuple_of(item, ATTEMPT_FIELDS.len(), || format!("finish record item {ATTEMPTS} (attempts) [{j}]"))?;
    let a = Items { items: t.as_slice(), place: Place { attempt: Some(j) } };
    Ok(Attempt {
        deployment: a.str(0)?,
        status: a.opt_int(1)?,
        error_code: a.opt_str(2)?,
        seconds: a.float(3)?,
        via: a.str(4)?,
        retry: a.truthy(5)?,
        hedge: a.truthy(6)?,
        cancelled: a.truthy(7)?,
    })
}

fn read_finish<'a>(r: &'a Bound<'_, PyTuple>, attempts: &'a [Attempt<'a>]) -> Read<Finish<'a>> {
    let f = Items { items: r.as_slice(), place: Place { attempt: None } };
    Ok(Finish {
        request_id: f.str(0)?,
        start_ns: f.int(1)?,
        duration_s: f.float(2)?,
        ttfb_s: f.opt_float(3)?,
        upstream_s: f.float(4)?,
        overhead_s: f.float(5)?,
        kind: f.str(6)?,
        method: f.str(7)?,
        path: f.str(8)?,
        status: f.int(9)?,
        result: f.str(10)?,
        model: f.opt_str(11)?,
        group: f.opt_str(12)?,
        deployment: f.opt_str(13)?,
        provider: f.opt_str(14)?,
        error_code: f.opt_str(15)?,
        key_id: f.opt_str(16)?,
        key_name: f.opt_str(17)?,
        user: f.opt_str(18)?,
        team: f.opt_str(19)?,
        prompt_tokens: f.int(20)?,
        completion_tokens: f.int(21)?,
        cached_tokens: f.int(22)?,
        usage_estimated: f.truthy(23)?,
        cost_usd: f.opt_float(24)?,
        cache: f.opt_str(25)?,
        stream: f.truthy(26)?,
        trace_id: f.trace_id(27)?,
        attempts,
        input_json: f.json(29)?,
        output: f.opt_str(30)?,
    })
}

/// A copy of the tuple (and its attempt tuples) with every str made UTF-8-safe: a lone surrogate
/// becomes U+FFFD (through UTF-16 with surrogatepass, one U+FFFD per surrogate). Rare: orjson
/// refuses them in request bodies, but a plugin's or a header's str may hold one, and orjson's
/// dumps would have failed the whole batch of lines on it.
#[cold]
fn clean<'py>(t: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyTuple>> {
    let mut items = Vec::with_capacity(t.len());
    for (i, item) in t.iter().enumerate() {
        let item = if let Ok(s) = item.cast::<PyString>() {
            if s.to_str().is_ok() {
                item
            } else {
                let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass"))?;
                utf16.call_method1("decode", ("utf-16", "replace"))?
            }
        } else if i == ATTEMPTS && t.len() == FIELDS.len() {
            let attempts = attempts_tuple(&item)?;
            let cleaned = attempts
                .iter()
                .map(|a| match a.cast::<PyTuple>() {
                    Ok(at) => clean(at).map(|c| c.into_any()),
                    Err(_) => Ok(a),
                })
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(t.py(), cleaned)?.into_any()
        } else {
            item
        };
        items.push(item);
    }
    PyTuple::new(t.py(), items)
}

mod slots;

use slots::{At, Slots};

mod request;

use request::{finish_read, read_request};

mod trace;

/// `prices` as given to the constructor or `configure`: deployment -> (input, output,
/// cached_input) micro-USD per token, or None (no price).
fn read_prices(prices: &Bound<'_, PyDict>) -> PyResult<Vec<(String, Option<Price>)>> {
    let mut out = Vec::with_capacity(prices.len());
    for (name, value) in prices.iter() {
        let name = name.cast::<PyString>().map_err(|_| PyTypeError::new_err("prices: keys must be str (deployments)"))?;
        let price = if value.is_none() {
            None
        } else {
            let (input, output, cached_input) = value.extract::<(f64, f64, Option<f64>)>().map_err(|_| {
                PyTypeError::new_err(format!(
                    "prices[{name}] must be (input, output, cached_input or None) in micro-USD per token"
                ))
            })?;
            if !(input.is_finite() && output.is_finite() && cached_input.is_none_or(f64::is_finite)) {
                return Err(PyValueError::new_err(format!("prices[{name}] must be finite")));
            }
            Some(Price { input, output, cached_input })
        };
        out.push((name.to_str()?.to_owned(), price));
    }
    Ok(out)
}

fn read_providers(providers: &Bound<'_, PyDict>) -> PyResult<Vec<(String, String)>> {
    providers
        .iter()
        .map(|(k, v)| {
            let (Ok(k), Ok(v)) = (k.cast::<PyString>(), v.cast::<PyString>()) else {
                return Err(PyTypeError::new_err("providers must map str (upstream) to str (provider)"));
            };
            Ok((k.to_str()?.to_owned(), v.to_str()?.to_owned()))
        })
        .collect()
}

/// Per-request metrics and JSON access-log lines in one call (see `_core.pyi`).
#[pyclass(name = "Telemetry", module = "llmgw._core")]
pub struct PyTelemetry {
    inner: telemetry::Telemetry,
    /// Prices and providers for `finish_request` (the tuple of `finish` carries both already).
    catalog: Catalog,
    /// What finish_request learned of the request objects' types (`Slots`).
    slots: Box<Slots>,
    /// upstream -> (server.address, server.port) for `trace_request`.
    addresses: trace::Addresses,
}

impl PyTelemetry {
    fn finish_tuple(&mut self, r: &Bound<'_, PyTuple>) -> Read<()> {
        let attempts_obj = attempts_tuple(&r.as_slice()[ATTEMPTS])?;
        let items = attempts_obj.as_slice();
        if items.len() <= INLINE_ATTEMPTS {
            let mut inline = [Attempt::default(); INLINE_ATTEMPTS];
            for (j, (slot, item)) in inline.iter_mut().zip(items).enumerate() {
                *slot = read_attempt(j, item)?;
            }
            self.count(r, &inline[..items.len()])
        } else {
            let attempts = items.iter().enumerate().map(|(j, item)| read_attempt(j, item)).collect::<Read<Vec<_>>>()?;
            self.count(r, &attempts)
        }
    }

    #[inline]
    fn count(&mut self, r: &Bound<'_, PyTuple>, attempts: &[Attempt<'_>]) -> Read<()> {
        let rec = read_finish(r, attempts)?;
        self.inner.finish(&rec);
        Ok(())
    }
}

#[pymethods]
impl PyTelemetry {
    #[new]
    #[pyo3(signature = (*, json_log, latency_bounds, overhead_bounds, per_key, max_log_bytes = 8 << 20, prices = None,
        providers = None))]
    fn new(
        json_log: bool,
        latency_bounds: Vec<f64>,
        overhead_bounds: Vec<f64>,
        per_key: bool,
        max_log_bytes: usize,
        prices: Option<&Bound<'_, PyDict>>,
        providers: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let inner = telemetry::Telemetry::new(json_log, &latency_bounds, &overhead_bounds, per_key, max_log_bytes)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let mut t =
            PyTelemetry { inner, catalog: Catalog::default(), slots: Box::default(), addresses: Default::default() };
        t.configure(prices, providers, None)?;
        Ok(t)
    }

    /// Replace the prices, providers and/or addresses `finish_request` and `trace_request` read
    /// (a reload keeps the object).
    #[pyo3(signature = (*, prices = None, providers = None, addresses = None))]
    fn configure(
        &mut self,
        prices: Option<&Bound<'_, PyDict>>,
        providers: Option<&Bound<'_, PyDict>>,
        addresses: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        // all read before any is set: a wrong table changes nothing
        let prices = prices.map(read_prices).transpose()?;
        let providers = providers.map(read_providers).transpose()?;
        let addresses = addresses.map(|a| read_providers(a).map_err(|_| {
            PyTypeError::new_err("addresses must map str (upstream) to str (host:port)")
        })).transpose()?;
        if let Some(addresses) = addresses {
            self.addresses =
                addresses.iter().map(|(u, a)| (Box::<str>::from(u.as_str()), trace::server_address(a))).collect();
        }
        if let Some(prices) = prices {
            self.catalog.set_prices(prices.iter().map(|(d, p)| (d.as_str(), *p)));
        }
        if let Some(providers) = providers {
            self.catalog.set_providers(providers.iter().map(|(u, p)| (u.as_str(), p.as_str())));
        }
        Ok(())
    }

    #[pyo3(signature = (ctx, run, ended, usage = None, *, now = None))]
    fn finish_request(
        &mut self,
        ctx: &Bound<'_, PyAny>,
        run: &Bound<'_, PyAny>,
        ended: f64,
        usage: Option<&Bound<'_, PyAny>>,
        now: Option<(i64, f64)>,
    ) -> PyResult<()> {
        let clock = now.unwrap_or_else(crate::telemetry::request::now);
        let mut r = read_request(&mut self.slots, &self.catalog, ctx, run, ended, usage, clock)?;
        match finish_read(&mut self.inner, &self.catalog, &r) {
            Ok(()) => Ok(()),
            Err(Fail::Err(e)) => Err(e),
            Err(Fail::Surrogate) => {
                r.clean()?;
                match finish_read(&mut self.inner, &self.catalog, &r) {
                    Ok(()) => Ok(()),
                    Err(Fail::Err(e)) => Err(e),
                    Err(Fail::Surrogate) => Err(PyValueError::new_err("finish_request: a str is not valid UTF-8")),
                }
            }
        }
    }

    /// The request's OTLP spans as `ScopeSpans.spans` entries (see `_core.pyi`): (count, bytes),
    /// or None when it has no sampled trace.
    #[pyo3(signature = (ctx, run, ended, usage = None, *, now = None))]
    fn trace_request<'py>(
        &mut self,
        ctx: &Bound<'py, PyAny>,
        run: &Bound<'py, PyAny>,
        ended: f64,
        usage: Option<&Bound<'py, PyAny>>,
        now: Option<(i64, f64)>,
    ) -> PyResult<Option<(usize, Bound<'py, PyBytes>)>> {
        let clock = now.unwrap_or_else(crate::telemetry::request::now);
        let got = trace::trace_request(&mut self.slots, &self.catalog, &self.addresses, ctx, run, ended, usage, clock)?;
        Ok(got.map(|(n, bytes)| (n, PyBytes::new(ctx.py(), &bytes))))
    }

    /// How many of finish_request's reads go straight to a slot (per read site and type).
    #[getter]
    fn slot_reads_known(&self) -> usize {
        self.slots.known()
    }

    #[getter]
    fn prices_count(&self) -> usize {
        self.catalog.prices_len()
    }

    #[getter]
    fn providers_count(&self) -> usize {
        self.catalog.providers_len()
    }

    fn finish(&mut self, rec: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = tuple_of(rec, FIELDS.len(), || "the finish record".into())?;
        match self.finish_tuple(r) {
            Ok(()) => Ok(()),
            Err(Fail::Err(e)) => Err(e),
            Err(Fail::Surrogate) => match self.finish_tuple(&clean(r)?) {
                Ok(()) => Ok(()),
                Err(Fail::Err(e)) => Err(e),
                Err(Fail::Surrogate) => Err(PyValueError::new_err("finish record: a str is not valid UTF-8")),
            },
        }
    }

    fn take_log<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let out = PyBytes::new(py, self.inner.log.pending());
        self.inner.log.clear();
        out
    }

    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let metrics = &self.inner.metrics;
        let counters = PyDict::new(py);
        for (name, float, series) in metrics.counter_families() {
            let list = PyList::empty(py);
            for s in series {
                let labels = PyList::new(py, s.labels.iter().map(|l| &**l))?;
                let value = if float {
                    s.value.float.into_pyobject(py)?.into_any()
                } else {
                    s.value.int.into_pyobject(py)?.into_any()
                };
                list.append(PyList::new(py, [labels.into_any(), value])?)?;
            }
            counters.set_item(name, list)?;
        }
        let histograms = PyDict::new(py);
        for (name, series) in metrics.histogram_families() {
            let list = PyList::empty(py);
            for s in series {
                let labels = PyList::new(py, s.labels.iter().map(|l| &**l))?;
                let values = PyList::new(py, s.value.counts.iter())?;
                values.append(s.value.sum)?;
                list.append(PyList::new(py, [labels.into_any(), values.into_any()])?)?;
            }
            histograms.set_item(name, list)?;
        }
        let out = PyDict::new(py);
        out.set_item("counters", counters)?;
        out.set_item("histograms", histograms)?;
        out.set_item("gauges", PyDict::new(py))?;
        Ok(out)
    }

    #[getter]
    fn log_dropped(&self) -> u64 {
        self.inner.log.dropped
    }

    #[getter]
    fn log_lines(&self) -> u64 {
        self.inner.log.lines
    }

    #[getter]
    fn log_pending(&self) -> usize {
        self.inner.log.pending().len()
    }

    #[getter]
    fn max_log_bytes(&self) -> usize {
        self.inner.log.max_bytes()
    }

    #[getter]
    fn json_log(&self) -> bool {
        self.inner.json_log
    }

    #[setter]
    fn set_json_log(&mut self, value: bool) {
        self.inner.json_log = value;
    }

    #[getter]
    fn per_key(&self) -> bool {
        self.inner.metrics.per_key
    }

    #[setter]
    fn set_per_key(&mut self, value: bool) {
        self.inner.metrics.per_key = value;
    }

    #[getter]
    fn series_count(&self) -> usize {
        self.inner.metrics.series_count()
    }

    fn __repr__(&self) -> String {
        let t = &self.inner;
        format!(
            "Telemetry(json_log={}, per_key={}) with {} series, {} log bytes pending",
            if t.json_log { "True" } else { "False" },
            if t.metrics.per_key { "True" } else { "False" },
            t.metrics.series_count(),
            t.log.pending().len()
        )
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTelemetry>()?;
    m.add("TELEMETRY_FIELDS", PyTuple::new(m.py(), FIELDS)?)?;
    m.add("TELEMETRY_ATTEMPT_FIELDS", PyTuple::new(m.py(), ATTEMPT_FIELDS)?)?;
    Ok(())
}
