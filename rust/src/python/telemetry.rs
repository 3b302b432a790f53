//! `llmgw._core.Telemetry` (see `llmgw/_core.pyi`): reads the finish tuple into a
//! `telemetry::Finish` that borrows the tuple's strs and bytes (no copies: `PyTuple::as_slice`
//! and `PyString::to_str`, which hands out CPython's own UTF-8 of an ASCII str), then
//! `telemetry::Telemetry` counts and logs. `snapshot` converts the tables to plain Python data.
//!
//! `finish_request` reads the same facts from the request's own objects (the RequestContext, the
//! RequestRunner and their attempts, usage, plan, trace) by attribute, with interned names, and
//! borrows their strs the same way: see the comment above `Request` for why and for what it costs.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::ffi;
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

// --- reading slots ----------------------------------------------------------------------------------

// Why: PyObject_GetAttr on a __slots__ object costs ~180 instructions with the PyO3 call around it
// (the type's attribute cache, the member descriptor's checks, the refcounts): the request's ~40
// attributes made reading 10.5k instructions of a 21k finish_request (callgrind); read here they
// cost ~30 each. CPython's own bytecode reads such an attribute (LOAD_ATTR_SLOT) by remembering
// the type, its version tag and the slot's offset; each read site here does the same: one type
// compare, one version compare, one load. Anything else — another type, a type changed since (its
// version tag moves: a class attribute set, a base changed), a custom __getattribute__, a
// property, an instance dict, an empty slot — goes through getattr, so the answer is always what
// getattr gives. (Reads happen with the GIL held and `&mut self`: nothing changes a slot meanwhile
// but code this call runs itself, and each value is taken with its own reference.)

/// A read site: where finish_request reads one attribute of one kind of object.
#[derive(Clone, Copy)]
#[repr(usize)]
enum At {
    CtxRequestId, CtxStarted, CtxKind, CtxModel, CtxPlan, CtxAttempts, CtxKeyId, CtxKeyName, CtxUser, CtxTeam,
    CtxUpstreamS, CtxFirstByte, CtxMetadata, CtxTrace, CtxUsage, CtxUsageEstimated, CtxPath,
    RunStatus, RunResult, RunError, RunStreamed, RunClientS, RunRoute, RunHttp,
    HttpResponded, HttpMethod, ErrorCode, RoutePattern,
    PlanGroup, PlanFallbacks, PlanPrimaries, StepDeployment, TraceId,
    UsagePrompt, UsageCompletion, UsageCached,
    AttemptDeployment, AttemptStatus, AttemptError, AttemptErrorCode, AttemptTotalS, AttemptRetry, AttemptHedge,
    AttemptCancelled, AttemptSent, AttemptTarget,
}

const SITES: usize = At::AttemptTarget as usize + 1;

/// A type seen at a site: its address, its version tag then, and the slot's offset (None: read
/// with getattr, e.g. a plain attribute in the instance's dict, or a property).
#[derive(Clone, Copy, Default)]
struct Seen {
    type_addr: usize,
    version: std::os::raw::c_uint,
    offset: Option<isize>,
}

/// Up to two types per site (an error is a GatewayError or an UpstreamFailure); a site that has
/// learned this many times stops learning (a site that sees many types reads with getattr).
#[derive(Clone, Copy, Default)]
struct Site {
    seen: [Seen; 2],
    learned: u16,
}

const MAX_LEARNED: u16 = 64;

struct Slots {
    sites: [Site; SITES],
}

impl Default for Slots {
    fn default() -> Self {
        Slots { sites: [Site::default(); SITES] }
    }
}

impl Slots {
    /// How many (site, type) pairs are read at a slot's offset.
    fn known(&self) -> usize {
        self.sites.iter().flat_map(|s| &s.seen).filter(|s| s.offset.is_some()).count()
    }

    /// `getattr(obj, name)`, at the slot's offset when this site knows obj's type.
    #[inline]
    fn get<'py, 'n>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        at: At,
        name: impl FnOnce() -> &'n Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>>
    where
        'py: 'n,
    {
        let ptr = obj.as_ptr();
        // SAFETY: `ptr` is a live object (we hold a reference), so is its type.
        let tp = unsafe { ffi::Py_TYPE(ptr) };
        let version = unsafe { (*tp).tp_version_tag };
        for seen in &self.sites[at as usize].seen {
            if seen.type_addr == tp as usize && seen.version == version && version != 0 {
                let Some(offset) = seen.offset else {
                    return obj.getattr(name());
                };
                // SAFETY: learned from this very type (same version tag: not modified since) as a
                // T_OBJECT_EX member at `offset`: a PyObject* inside the object, NULL when unset.
                let value = unsafe { *ptr.cast::<u8>().offset(offset).cast::<*mut ffi::PyObject>() };
                if value.is_null() {
                    break; // unset: getattr raises the AttributeError
                }
                // SAFETY: a live object the slot holds a reference to; we take our own.
                return Ok(unsafe { Bound::from_borrowed_ptr(obj.py(), value) });
            }
        }
        self.learn(obj, at, name())
    }

    #[cold]
    #[inline(never)]
    fn learn<'py>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        at: At,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let value = obj.getattr(name)?; // also gives the type a version tag if it had none
        let site = &mut self.sites[at as usize];
        if site.learned >= MAX_LEARNED {
            return Ok(value);
        }
        site.learned += 1;
        // SAFETY: as in `get`.
        let tp = unsafe { ffi::Py_TYPE(obj.as_ptr()) };
        let version = unsafe { (*tp).tp_version_tag };
        if version == 0 {
            return Ok(value); // no tag (ran out): nothing to check a cache against
        }
        let seen = Seen { type_addr: tp as usize, version, offset: slot_offset(obj, name) };
        // the entry of this type (an older version), else the older of the two
        let older = usize::from(site.learned.is_multiple_of(2));
        let i = site.seen.iter().position(|s| s.type_addr == tp as usize).unwrap_or(older);
        site.seen[i] = seen;
        Ok(value)
    }
}

/// The offset of `name`'s slot in objects of obj's type, when getattr reads it there: the type
/// keeps the generic attribute lookup, and the first class of its MRO that names `name` holds a
/// member descriptor of type T_OBJECT_EX (what `__slots__` makes) without audit hooks. A data
/// descriptor wins over the instance's `__dict__`, so nothing else can answer first.
fn slot_offset(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> Option<isize> {
    let tp = obj.get_type();
    // SAFETY: reading a field of a live type object.
    let getattro = unsafe { (*tp.as_type_ptr()).tp_getattro }?;
    if !std::ptr::fn_addr_eq(getattro, ffi::PyObject_GenericGetAttr as ffi::getattrofunc) {
        return None;
    }
    let mro = tp.mro();
    let descr = mro.iter().find_map(|base| base.getattr(intern!(obj.py(), "__dict__")).ok()?.get_item(name).ok())?;
    let descr_ptr = descr.as_ptr();
    // SAFETY: comparing type addresses; the member descriptor's layout is CPython's
    // PyMemberDescrObject (d_member: the PyMemberDef it was made from) in every version since 3.0.
    unsafe {
        if ffi::Py_TYPE(descr_ptr) != std::ptr::addr_of_mut!(ffi::PyMemberDescr_Type) {
            return None;
        }
        let member = (*descr_ptr.cast::<ffi::PyMemberDescrObject>()).d_member.cast::<ffi::PyMemberDef>();
        if member.is_null() || (*member).type_code != ffi::Py_T_OBJECT_EX || (*member).flags & ffi::Py_AUDIT_READ != 0 {
            return None;
        }
        let offset = (*member).offset;
        (offset >= std::mem::size_of::<ffi::PyObject>() as isize).then_some(offset)
    }
}

// --- finish_request: the request's own objects ------------------------------------------------------

// Why: `Observability.on_finish` built the 31-item tuple in Python (Outcome.facts(), two clock
// calls, the attempts loop, PriceBook.request_cost) for 25.5k instructions per request, and
// `finish` read every item back (callgrind, benches/bench_telemetry.py --instructions: 38.6k per
// request with the JSON line, 31.1k without). Here the same facts are read from the objects at
// their slots (`Slots`) and the strs borrowed in place: 15.7k with the line, 8.8k without, of
// which the counting itself is 2.8k and the line 6.9k.

/// `getattr(obj, "name")` read at site `At::$at` (see `Slots`), the name interned once per process.
macro_rules! attr {
    ($slots:expr, $obj:expr, $at:ident, $name:literal) => {
        $slots.get(&$obj, At::$at, || intern!($obj.py(), $name))
    };
}

/// The texts a request's Finish borrows, by index: each read as a str (or None) and kept alive here.
const REQUEST_ID: usize = 0;
const KIND: usize = 1;
const METHOD: usize = 2;
const ROUTE: usize = 3;
const RESULT: usize = 4;
const MODEL: usize = 5;
const GROUP: usize = 6;
const DEPLOYMENT: usize = 7;
const ERROR_CODE: usize = 8;
const KEY_ID: usize = 9;
const KEY_NAME: usize = 10;
const USER: usize = 11;
const TEAM: usize = 12;
const CACHE: usize = 13;
/// The served attempt's upstream (looked up in the providers table).
const TARGET: usize = 14;
const TEXTS: usize = 15;

/// Where each text comes from, for error messages.
const TEXT_NAMES: [&str; TEXTS] = [
    "ctx.request_id", "ctx.kind", "run.http.method", "the route (run.route[0].pattern or ctx.path)", "run.result",
    "ctx.model", "ctx.plan.group", "the deployment (an attempt's, or metadata['gov.cost'][2])", "run.error.code",
    "ctx.key_id", "ctx.key_name", "ctx.user", "ctx.team", "ctx.metadata['cache']", "the served attempt's target",
];

#[cold]
fn wrong_type(what: &str, obj: &Bound<'_, PyAny>, want: &str) -> PyErr {
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!("Telemetry.finish_request: {what} must be {want}, not {type_name}"))
}

/// `obj` as a str, None as None; anything else is a TypeError naming `what`.
#[inline]
fn opt_text<'py>(obj: Bound<'py, PyAny>, what: &str) -> PyResult<Option<Bound<'py, PyString>>> {
    if obj.is_none() {
        return Ok(None);
    }
    match obj.cast_into::<PyString>() {
        Ok(s) => Ok(Some(s)),
        Err(e) => Err(wrong_type(what, &e.into_inner(), "a str or None")),
    }
}

#[inline]
fn text<'py>(obj: Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyString>> {
    match obj.cast_into::<PyString>() {
        Ok(s) => Ok(s),
        Err(e) => Err(wrong_type(what, &e.into_inner(), "a str")),
    }
}

#[inline]
fn float(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    obj.extract::<f64>().map_err(|_| wrong_type(what, obj, "a float"))
}

#[inline]
fn opt_float(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    if obj.is_none() {
        return Ok(None);
    }
    float(obj, what).map(Some)
}

#[inline]
fn int(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    obj.extract::<i64>().map_err(|_| wrong_type(what, obj, "an int in the int64 range"))
}

/// A str with its lone surrogates replaced by U+FFFD (see `clean`).
#[cold]
fn clean_str<'py>(s: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass"))?;
    Ok(utf16.call_method1("decode", ("utf-16", "replace"))?.cast_into::<PyString>()?)
}

#[cold]
fn clean_opt<'py>(s: &mut Option<Bound<'py, PyString>>) -> PyResult<()> {
    if let Some(text) = s {
        if text.to_str().is_err() {
            *text = clean_str(text)?;
        }
    }
    Ok(())
}

#[inline]
fn borrow<'a>(s: &'a Option<Bound<'_, PyString>>) -> Read<Option<&'a str>> {
    match s {
        None => Ok(None),
        Some(text) => text.to_str().map(Some).map_err(|_| Fail::Surrogate),
    }
}

/// One attempt as read: its strs kept alive, the rest as values.
#[derive(Default)]
struct AttemptObjs<'py> {
    deployment: Option<Bound<'py, PyString>>,
    error_code: Option<Bound<'py, PyString>>,
    status: Option<i64>,
    seconds: f64,
    via: &'static str,
    retry: bool,
    hedge: bool,
    cancelled: bool,
}

/// The trace id as read: raw bytes or hex text.
enum TraceObj<'py> {
    Raw(Bound<'py, PyBytes>),
    Hex(Option<Bound<'py, PyString>>),
}

/// Everything one request's Finish is made of, read from its objects (phase one); `finish` then
/// borrows the strs (phase two), after cleaning them if one holds a lone surrogate.
struct Request<'py> {
    texts: [Option<Bound<'py, PyString>>; TEXTS],
    trace: Option<TraceObj<'py>>,
    inline: [AttemptObjs<'py>; INLINE_ATTEMPTS],
    /// Attempts past INLINE_ATTEMPTS: all of them go here instead (rare: retries, fallbacks, hedges).
    spilled: Vec<AttemptObjs<'py>>,
    n_attempts: usize,
    served: bool,
    start_ns: i64,
    duration_s: f64,
    ttfb_s: Option<f64>,
    upstream_s: f64,
    overhead_s: f64,
    status: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    cached_tokens: i64,
    usage_estimated: bool,
    stream: bool,
    /// Micro-dollars (None: unpriced), before the kind decides whether cost_usd is written.
    micro: Option<f64>,
}

impl<'py> Request<'py> {
    fn attempts(&self) -> &[AttemptObjs<'py>] {
        if self.n_attempts <= INLINE_ATTEMPTS {
            &self.inline[..self.n_attempts]
        } else {
            &self.spilled
        }
    }

    #[cold]
    fn clean(&mut self) -> PyResult<()> {
        for t in self.texts.iter_mut() {
            clean_opt(t)?;
        }
        if let Some(TraceObj::Hex(t)) = &mut self.trace {
            clean_opt(t)?;
        }
        let attempts = if self.n_attempts <= INLINE_ATTEMPTS { &mut self.inline[..] } else { &mut self.spilled[..] };
        for a in attempts {
            clean_opt(&mut a.deployment)?;
            clean_opt(&mut a.error_code)?;
        }
        Ok(())
    }
}

/// Whether the attempt's deployment is reached only as one of the plan's fallbacks
/// (`Observability._via`): str equality as Python's `==` (identity first: they are usually the
/// config's own str objects).
fn is_fallback(
    slots: &mut Slots,
    deployment: &Bound<'_, PyString>,
    fallbacks: &[Bound<'_, PyAny>],
    primaries: &[Bound<'_, PyAny>],
) -> PyResult<bool> {
    let mut same = |step: &Bound<'_, PyAny>| -> PyResult<bool> {
        let d = attr!(slots, step, StepDeployment, "deployment")?;
        Ok(d.is(deployment) || d.eq(deployment)?)
    };
    for step in fallbacks {
        if same(step)? {
            for p in primaries {
                if same(p)? {
                    return Ok(false);
                }
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// A tuple of the plan's steps (RoutePlan's are tuples already).
fn steps<'py>(obj: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    match obj.cast_into::<PyTuple>() {
        Ok(t) => Ok(t),
        Err(e) => {
            let obj = e.into_inner();
            PyTuple::new(obj.py(), obj.try_iter()?.collect::<PyResult<Vec<_>>>()?)
        }
    }
}

/// Phase one: what `Observability.on_finish` (without log bodies) puts in the finish tuple, read
/// from `ctx` (RequestContext) and `run` (RequestRunner). `usage`: `(usage, estimated)` when the
/// caller has it (Outcome caches it), else ctx.usage or `run.final_usage()`.
fn read_request<'py>(
    slots: &mut Slots,
    catalog: &Catalog,
    ctx: &Bound<'py, PyAny>,
    run: &Bound<'py, PyAny>,
    ended: f64,
    usage: Option<&Bound<'py, PyAny>>,
    clock: (i64, f64),
) -> PyResult<Request<'py>> {
    let py = ctx.py();
    // Outcome.facts(): usage first (final_usage may count tokens), then the rest.
    let (usage, estimated) = match usage {
        Some(pair) if !pair.is_none() => (pair.get_item(0)?, pair.get_item(1)?),
        _ => {
            let reported = attr!(slots, ctx, CtxUsage, "usage")?;
            if reported.is_none() {
                let pair = run.call_method0(intern!(py, "final_usage"))?;
                (pair.get_item(0)?, pair.get_item(1)?)
            } else {
                (reported, attr!(slots, ctx, CtxUsageEstimated, "usage_estimated")?)
            }
        }
    };
    let mut texts: [Option<Bound<'py, PyString>>; TEXTS] = Default::default();
    let http = attr!(slots, run, RunHttp, "http")?;
    let status = if attr!(slots, http, HttpResponded, "responded")?.is_truthy()? {
        int(&attr!(slots, run, RunStatus, "status")?, "run.status")?
    } else {
        499
    };
    texts[RESULT] = Some(text(attr!(slots, run, RunResult, "result")?, TEXT_NAMES[RESULT])?);
    let error = attr!(slots, run, RunError, "error")?;
    if !error.is_none() {
        texts[ERROR_CODE] = opt_text(attr!(slots, error, ErrorCode, "code")?, TEXT_NAMES[ERROR_CODE])?;
    }
    let stream = attr!(slots, run, RunStreamed, "streamed")?.is_truthy()?;
    let started = float(&attr!(slots, ctx, CtxStarted, "started")?, "ctx.started")?;
    let upstream_s = float(&attr!(slots, ctx, CtxUpstreamS, "upstream_s")?, "ctx.upstream_s")?;
    let first_byte = opt_float(&attr!(slots, ctx, CtxFirstByte, "first_byte_at")?, "ctx.first_byte_at")?;
    let ttfb_s = first_byte.map(|first| first - started);
    let client_s = float(&attr!(slots, run, RunClientS, "client_s")?, "run.client_s")?;
    let overhead_s = overhead(ended, started, upstream_s, client_s);
    texts[METHOD] = Some(text(attr!(slots, http, HttpMethod, "method")?, TEXT_NAMES[METHOD])?);
    let route = attr!(slots, run, RunRoute, "route")?;
    let route = if route.is_none() {
        attr!(slots, ctx, CtxPath, "path")?
    } else {
        let handler = route.get_item(0)?;
        attr!(slots, handler, RoutePattern, "pattern")?
    };
    texts[ROUTE] = Some(text(route, TEXT_NAMES[ROUTE])?);

    texts[REQUEST_ID] = Some(text(attr!(slots, ctx, CtxRequestId, "request_id")?, TEXT_NAMES[REQUEST_ID])?);
    texts[KIND] = Some(text(attr!(slots, ctx, CtxKind, "kind")?, TEXT_NAMES[KIND])?);
    texts[MODEL] = opt_text(attr!(slots, ctx, CtxModel, "model")?, TEXT_NAMES[MODEL])?;
    texts[KEY_ID] = opt_text(attr!(slots, ctx, CtxKeyId, "key_id")?, TEXT_NAMES[KEY_ID])?;
    texts[KEY_NAME] = opt_text(attr!(slots, ctx, CtxKeyName, "key_name")?, TEXT_NAMES[KEY_NAME])?;
    texts[USER] = opt_text(attr!(slots, ctx, CtxUser, "user")?, TEXT_NAMES[USER])?;
    texts[TEAM] = opt_text(attr!(slots, ctx, CtxTeam, "team")?, TEXT_NAMES[TEAM])?;
    let plan = attr!(slots, ctx, CtxPlan, "plan")?;
    if !plan.is_none() {
        texts[GROUP] = opt_text(attr!(slots, plan, PlanGroup, "group")?, TEXT_NAMES[GROUP])?;
    }
    let meta = attr!(slots, ctx, CtxMetadata, "metadata")?;
    let meta = meta.cast::<PyDict>().map_err(|_| wrong_type("ctx.metadata", &meta, "a dict"))?;
    if let Some(cache) = meta.get_item(intern!(py, "cache"))? {
        texts[CACHE] = opt_text(cache, TEXT_NAMES[CACHE])?;
    }
    let trace = attr!(slots, ctx, CtxTrace, "trace")?;
    let trace = if trace.is_none() {
        None
    } else {
        let id = attr!(slots, trace, TraceId, "trace_id")?;
        if id.is_none() {
            None
        } else {
            match id.cast_into::<PyBytes>() {
                Ok(raw) => Some(TraceObj::Raw(raw)),
                Err(e) => match e.into_inner().cast_into::<PyString>() {
                    Ok(hex) => Some(TraceObj::Hex(Some(hex))),
                    Err(e) => {
                        return Err(wrong_type("ctx.trace.trace_id", &e.into_inner(), "bytes, a str (hex) or None"))
                    }
                },
            }
        }
    };

    let (prompt_tokens, completion_tokens, cached_tokens) = if usage.is_none() {
        (0, 0, 0)
    } else {
        let cached = attr!(slots, usage, UsageCached, "cached_tokens")?;
        let cached = if cached.is_truthy()? { int(&cached, "usage.cached_tokens")? } else { 0 };
        (int(&attr!(slots, usage, UsagePrompt, "prompt_tokens")?, "usage.prompt_tokens")?,
         int(&attr!(slots, usage, UsageCompletion, "completion_tokens")?, "usage.completion_tokens")?, cached)
    };

    let mut r = Request {
        texts,
        trace,
        inline: Default::default(),
        spilled: Vec::new(),
        n_attempts: 0,
        served: false,
        start_ns: wall_start_ns(clock.0, clock.1, started),
        duration_s: ended - started,
        ttfb_s,
        upstream_s,
        overhead_s,
        status,
        prompt_tokens,
        completion_tokens,
        cached_tokens,
        usage_estimated: estimated.is_truthy()?,
        stream,
        micro: Some(0.0),
    };
    // The attempts: their rows, the served one, the billed one (PriceBook.request_cost).
    let attempts = attr!(slots, ctx, CtxAttempts, "attempts")?;
    let attempts = attempts.cast::<PyList>().map_err(|_| wrong_type("ctx.attempts", &attempts, "a list"))?;
    let n = attempts.len();
    if n == 0 {
        return Ok(r);
    }
    let fallbacks = if plan.is_none() { None } else { Some(steps(attr!(slots, plan, PlanFallbacks, "fallbacks")?)?) };
    let (fallbacks, primaries) = match fallbacks {
        Some(f) if !f.is_empty() => (Some(f), Some(steps(attr!(slots, plan, PlanPrimaries, "primaries")?)?)),
        _ => (None, None),
    };
    r.n_attempts = n;
    if n > INLINE_ATTEMPTS {
        r.spilled.resize_with(n, AttemptObjs::default);
    }
    let mut served: Option<(usize, Bound<'py, PyAny>)> = None;
    let mut billed: Option<usize> = None;
    for (j, a) in attempts.iter().enumerate() {
        let slot = if n <= INLINE_ATTEMPTS { &mut r.inline[j] } else { &mut r.spilled[j] };
        let deployment = text(attr!(slots, a, AttemptDeployment, "deployment")?, "attempt.deployment")?;
        let status = attr!(slots, a, AttemptStatus, "status")?;
        slot.status = if status.is_none() { None } else { Some(int(&status, "attempt.status")?) };
        let error = attr!(slots, a, AttemptError, "error")?;
        let failed = !error.is_none();
        if failed {
            slot.error_code = opt_text(attr!(slots, error, AttemptErrorCode, "code")?, "attempt.error.code")?;
        }
        slot.seconds = {
            let total = attr!(slots, a, AttemptTotalS, "total_s")?;
            if total.is_truthy()? { float(&total, "attempt.total_s")? } else { 0.0 }
        };
        slot.via = match (&fallbacks, &primaries) {
            (Some(f), Some(p)) if is_fallback(slots, &deployment, f.as_slice(), p.as_slice())? => "fallback",
            _ => "primary",
        };
        slot.retry = attr!(slots, a, AttemptRetry, "retry")?.is_truthy()?;
        slot.hedge = attr!(slots, a, AttemptHedge, "hedge")?.is_truthy()?;
        slot.cancelled = attr!(slots, a, AttemptCancelled, "cancelled")?.is_truthy()?;
        if !failed && slot.status.is_some_and(|s| s < 300) && !slot.cancelled {
            served = Some((j, a.clone()));
        }
        if !slot.cancelled && attr!(slots, a, AttemptSent, "sent")?.is_truthy()? {
            billed = Some(j);
        }
        slot.deployment = Some(deployment);
    }
    let deployment_of = |j: usize| -> Option<Bound<'py, PyString>> {
        let list = if n <= INLINE_ATTEMPTS { &r.inline[..] } else { &r.spilled[..] };
        list[j].deployment.clone()
    };
    // Governance priced the answer already when its usage is this one (its on_finish ran first).
    let known = meta.get_item(intern!(py, "gov.cost"))?.filter(|k| k.get_item(0).is_ok_and(|u| u.is(&usage)));
    let (micro, mut deployment) = match known {
        Some(known) => {
            let micro = known.get_item(1)?;
            let micro = if micro.is_none() { None } else { Some(float(&micro, "metadata['gov.cost'][1]")?) };
            (micro, opt_text(known.get_item(2)?, TEXT_NAMES[DEPLOYMENT])?)
        }
        None => match billed {
            None => (Some(0.0), None),
            Some(j) => {
                let d = deployment_of(j);
                let micro = if usage.is_none() {
                    Some(0.0)
                } else {
                    // a deployment no Python str of the config can name (a lone surrogate) has no price
                    d.as_ref().and_then(|d| d.to_str().ok()).and_then(|d| {
                        catalog.micro(d, prompt_tokens, completion_tokens, cached_tokens)
                    })
                };
                (micro, d)
            }
        },
    };
    if let Some((j, a)) = served {
        deployment = deployment_of(j);
        r.texts[TARGET] = Some(text(attr!(slots, a, AttemptTarget, "target")?, TEXT_NAMES[TARGET])?);
        r.served = true;
    }
    r.texts[DEPLOYMENT] = deployment;
    r.micro = micro;
    Ok(r)
}

/// Phase two: the Finish that borrows `r`'s strs (and the catalog's provider name), counted and logged.
fn finish_read(inner: &mut telemetry::Telemetry, catalog: &Catalog, r: &Request<'_>) -> Read<()> {
    let objs = r.attempts();
    let mut inline = [Attempt::default(); INLINE_ATTEMPTS];
    let mut spilled = Vec::new();
    let attempts: &mut [Attempt<'_>] = if objs.len() <= INLINE_ATTEMPTS {
        &mut inline[..objs.len()]
    } else {
        spilled.resize(objs.len(), Attempt::default());
        &mut spilled
    };
    for (slot, a) in attempts.iter_mut().zip(objs) {
        *slot = Attempt {
            deployment: borrow(&a.deployment)?.unwrap_or(""),
            status: a.status,
            error_code: borrow(&a.error_code)?,
            seconds: a.seconds,
            via: a.via,
            retry: a.retry,
            hedge: a.hedge,
            cancelled: a.cancelled,
        };
    }
    let t = &r.texts;
    let kind = borrow(&t[KIND])?.unwrap_or("");
    let provider = if r.served { Some(catalog.provider(borrow(&t[TARGET])?.unwrap_or(""))) } else { None };
    let trace_id = match &r.trace {
        None => None,
        Some(TraceObj::Raw(b)) => Some(TraceId::Raw(b.as_bytes())),
        Some(TraceObj::Hex(h)) => borrow(h)?.map(TraceId::Hex),
    };
    let rec = Finish {
        request_id: borrow(&t[REQUEST_ID])?.unwrap_or(""),
        start_ns: r.start_ns,
        duration_s: r.duration_s,
        ttfb_s: r.ttfb_s,
        upstream_s: r.upstream_s,
        overhead_s: r.overhead_s,
        kind,
        method: borrow(&t[METHOD])?.unwrap_or(""),
        path: borrow(&t[ROUTE])?.unwrap_or(""),
        status: r.status,
        result: borrow(&t[RESULT])?.unwrap_or(""),
        model: borrow(&t[MODEL])?,
        group: borrow(&t[GROUP])?,
        deployment: borrow(&t[DEPLOYMENT])?,
        provider,
        error_code: borrow(&t[ERROR_CODE])?,
        key_id: borrow(&t[KEY_ID])?,
        key_name: borrow(&t[KEY_NAME])?,
        user: borrow(&t[USER])?,
        team: borrow(&t[TEAM])?,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        cached_tokens: r.cached_tokens,
        usage_estimated: r.usage_estimated,
        // `micro / 1_000_000 if micro is not None and kind in ("chat", "embeddings") else None`
        cost_usd: match r.micro {
            Some(micro) if kind == "chat" || kind == "embeddings" => Some(micro / 1e6),
            _ => None,
        },
        cache: borrow(&t[CACHE])?,
        stream: r.stream,
        trace_id,
        attempts,
        input_json: None,
        output: None,
    };
    inner.finish(&rec);
    Ok(())
}

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
        let mut t = PyTelemetry { inner, catalog: Catalog::default(), slots: Box::default() };
        t.configure(prices, providers)?;
        Ok(t)
    }

    /// Replace the prices and/or the providers `finish_request` reads (a reload keeps the object).
    #[pyo3(signature = (*, prices = None, providers = None))]
    fn configure(&mut self, prices: Option<&Bound<'_, PyDict>>, providers: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        // both read before either is set: a wrong table changes nothing
        let prices = prices.map(read_prices).transpose()?;
        let providers = providers.map(read_providers).transpose()?;
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
