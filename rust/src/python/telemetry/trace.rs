//! `Telemetry.trace_request`: a sampled request's OTLP spans, read from its own objects (as
//! `finish_request` reads them, through `read_request` and the same slots) and encoded at once as
//! `ScopeSpans.spans` entries. The spans are exactly `spans_of(Observability.record(ctx, outcome))`
//! (python/llmgw/observability/otlp.py, the reference the tests compare with byte for byte): the
//! same spans, ids, attributes in the same order, the same values and types.
//!
//! Why: the Python path built a FinishRecord on the request path (~7.3 µs), then spans_of (~4.1 µs)
//! and the encoder (~5 µs) per request in the export queue's flush (callgrind, in process: ~200k
//! instructions per request of 4 spans, the records' garbage collection included); here one call
//! reads and encodes them (~29k; ~3-4 µs in benches/bench_otlp.py), and the flush only frames the
//! bytes (~0.1 µs per request). Attributes are appended by `otlp::push_attribute`'s stack path
//! and names joined without format!: together ~12k instructions less than the first version.
//!
//! Attributes are written as they are read (`otlp::push_attribute`): nothing borrowed has to
//! outlive its read, so a str with a lone surrogate is cleaned (U+FFFD, as the Python encoder
//! does) where it is met. Anything of an unexpected type raises, and the caller falls back to the
//! Python path for that request.

use std::borrow::Cow;
use std::collections::HashMap;

use pyo3::types::{PyBool, PyFloat, PyInt};

use super::request::{
    clean_str, float, opt_text, read_request, text, wrong_type, CACHE, DEPLOYMENT, ERROR_CODE, GROUP, KEY_ID,
    KEY_NAME, KIND, METHOD, MODEL, REQUEST_ID, RESULT, ROUTE, TARGET, TEAM,
};
use super::*;
use crate::otlp::{self, push_attribute, push_span, push_str_array_attribute, AnyValue, Span, SpanKind, Status, StatusCode};

macro_rules! attr {
    ($slots:expr, $obj:expr, $at:ident, $name:literal) => {
        $slots.get(&$obj, At::$at, || intern!($obj.py(), $name))
    };
}

/// Span.flags (otlp.py's _FLAGS_REMOTE_PARENT, _FLAGS_LOCAL_PARENT).
const FLAGS_LOCAL: u32 = otlp::FLAG_SAMPLED | otlp::FLAG_HAS_IS_REMOTE;
const FLAGS_REMOTE: u32 = FLAGS_LOCAL | otlp::FLAG_IS_REMOTE;
/// The observability plugin's own stages are not spans (`Observability.record`).
const OWN_PLUGIN: &str = "observability";

/// upstream -> (server.address, server.port), from "host:port" (`otlp._server_address`).
pub(super) type Addresses = HashMap<Box<str>, (Option<Box<str>>, Option<i64>)>;

/// `_server_address`: "host:port", "[::1]:8000", "host" or "" (None, None).
pub(super) fn server_address(address: &str) -> (Option<Box<str>>, Option<i64>) {
    if address.is_empty() {
        return (None, None);
    }
    if let Some((host, port)) = address.rsplit_once(':') {
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') {
            if let Ok(port) = port.parse::<i64>() {
                return (Some(host.trim_matches(|c| c == '[' || c == ']').into()), Some(port));
            }
        }
    }
    (Some(address.into()), None)
}

/// `_provider_name`: the gen_ai.provider.name of an adapter ("" is None).
fn provider_name(provider: &str) -> Option<&str> {
    match provider {
        "" => None,
        "gemini" => Some("gcp.gemini"),
        "azure" => Some("azure.ai.openai"),
        p => Some(p),
    }
}

/// A str's UTF-8, a lone surrogate made U+FFFD (what the Python encoder sends).
fn txt<'a>(s: &'a Bound<'_, PyString>) -> PyResult<Cow<'a, str>> {
    match s.to_str() {
        Ok(t) => Ok(Cow::Borrowed(t)),
        Err(_) => Ok(Cow::Owned(clean_str(s)?.to_str()?.to_owned())),
    }
}

fn opt_txt<'a>(s: &'a Option<Bound<'_, PyString>>) -> PyResult<Option<Cow<'a, str>>> {
    s.as_ref().map(txt).transpose()
}

/// `f"{a} {b}"` (format! costs ~1k instructions more).
fn joined(a: &str, b: &str) -> String {
    let mut s = String::with_capacity(a.len() + 1 + b.len());
    s.push_str(a);
    s.push(' ');
    s.push_str(b);
    s
}

/// `x or None` of a str.
fn nonempty<'a>(s: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// One span's attributes, encoded as they come.
struct Attrs {
    buf: Vec<u8>,
}

impl Attrs {
    #[inline]
    fn put(&mut self, key: &str, value: AnyValue<'_>) {
        push_attribute(&mut self.buf, key, &value);
    }

    #[inline]
    fn str(&mut self, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.put(key, AnyValue::Str(v));
        }
    }

    #[inline]
    fn int(&mut self, key: &str, value: Option<i64>) {
        if let Some(v) = value {
            self.put(key, AnyValue::Int(v));
        }
    }

    #[inline]
    fn double(&mut self, key: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.put(key, AnyValue::Double(v));
        }
    }

    /// `True if x else None`.
    #[inline]
    fn flag(&mut self, key: &str, value: bool) {
        if value {
            self.put(key, AnyValue::Bool(true));
        }
    }

    /// A value passed as it is: what the encoder makes of a str, bool, int, float or None.
    fn py(&mut self, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if value.is_none() {
            return Ok(());
        }
        if let Ok(s) = value.cast::<PyString>() {
            let t = txt(s)?;
            self.put(key, AnyValue::Str(&t));
        } else if value.is_instance_of::<PyBool>() {
            self.put(key, AnyValue::Bool(value.is_truthy()?));
        } else if value.is_instance_of::<PyInt>() {
            let i = value
                .extract::<i64>()
                .map_err(|_| PyValueError::new_err(format!("attribute {key:?} has an int outside the int64 range")))?;
            self.put(key, AnyValue::Int(i));
        } else if value.is_instance_of::<PyFloat>() {
            self.put(key, AnyValue::Double(value.extract::<f64>()?));
        } else {
            return Err(wrong_type(key, value, "a str, bool, int, float or None"));
        }
        Ok(())
    }

    /// `[x] if x else None` of a str (finish_reasons).
    fn one_str_array(&mut self, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if !value.is_truthy()? {
            return Ok(());
        }
        let s = value.cast::<PyString>().map_err(|_| wrong_type(key, value, "a str or None"))?;
        push_str_array_attribute(&mut self.buf, key, &[&txt(s)?]);
        Ok(())
    }
}

/// `plugin._PARAMS` in order, as otlp._params writes them.
fn params(slots: &mut Slots, run: &Bound<'_, PyAny>, out: &mut Attrs) -> PyResult<()> {
    let py = run.py();
    let req = attr!(slots, run, RunReq, "req")?;
    if req.is_none() {
        return Ok(());
    }
    let body = attr!(slots, req, ReqBody, "body")?;
    let Ok(body) = body.cast::<PyDict>() else { return Ok(()) };
    if body.is_empty() {
        return Ok(());
    }
    // (key, attribute, 0 int / 1 float / 2 stop / 3 n)
    let keys: [(&Bound<'_, PyString>, &str, u8); 9] = [
        (intern!(py, "temperature"), "gen_ai.request.temperature", 1),
        (intern!(py, "max_tokens"), "gen_ai.request.max_tokens", 0),
        (intern!(py, "max_completion_tokens"), "gen_ai.request.max_tokens", 0),
        (intern!(py, "top_p"), "gen_ai.request.top_p", 1),
        (intern!(py, "frequency_penalty"), "gen_ai.request.frequency_penalty", 1),
        (intern!(py, "presence_penalty"), "gen_ai.request.presence_penalty", 1),
        (intern!(py, "seed"), "gen_ai.request.seed", 0),
        (intern!(py, "stop"), "gen_ai.request.stop_sequences", 2),
        (intern!(py, "n"), "gen_ai.request.choice.count", 3),
    ];
    for (key, attr, how) in keys {
        let Some(value) = body.get_item(key)? else { continue };
        match how {
            0 | 1 if value.is_none() || value.is_instance_of::<PyBool>() => {}
            0 => {
                if value.is_exact_instance_of::<PyInt>() {
                    if let Ok(i) = value.extract::<i64>() {
                        out.put(attr, AnyValue::Int(i));
                    }
                }
            }
            1 => {
                if value.is_instance_of::<PyInt>() || value.is_instance_of::<PyFloat>() {
                    out.put(attr, AnyValue::Double(value.extract::<f64>()?));
                }
            }
            2 => {
                if let Ok(s) = value.cast::<PyString>() {
                    push_str_array_attribute(&mut out.buf, attr, &[&txt(s)?]);
                } else if let Ok(list) = value.cast::<PyList>() {
                    let items = list.to_tuple();
                    if !items.is_empty() && items.iter().all(|v| v.is_instance_of::<PyString>()) {
                        let texts = items
                            .as_slice()
                            .iter()
                            .map(|v| v.cast::<PyString>().map_err(PyErr::from).and_then(|s| txt(s).map(Cow::into_owned)))
                            .collect::<PyResult<Vec<String>>>()?;
                        out.put(attr, AnyValue::Array(texts.iter().map(|t| AnyValue::Str(t)).collect()));
                    }
                }
            }
            _ => {
                if value.is_exact_instance_of::<PyInt>() {
                    if let Ok(n) = value.extract::<i64>() {
                        if n != 1 && n >= 0 {
                            out.put(attr, AnyValue::Int(n));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// `now_ns - int((now - t) * 1e9)`, as Unix ns (the encoder refuses a negative time).
#[inline]
fn wall(clock: (i64, f64), t: f64) -> PyResult<u64> {
    let ns = clock.0.wrapping_sub(((clock.1 - t) * 1e9) as i64);
    u64::try_from(ns).map_err(|_| PyValueError::new_err("a span time is before 1970"))
}

fn id_error(e: otlp::OtlpError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn bytes_of<'a>(obj: &'a Bound<'_, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    obj.cast::<PyBytes>().map(|b| b.as_bytes()).map_err(|_| wrong_type(what, obj, "bytes"))
}

/// The request's spans as `ScopeSpans.spans` entries and their count; None when the request has
/// no sampled trace.
#[allow(clippy::too_many_arguments)]
pub(super) fn trace_request<'py>(
    slots: &mut Slots,
    catalog: &Catalog,
    addresses: &Addresses,
    ctx: &Bound<'py, PyAny>,
    run: &Bound<'py, PyAny>,
    ended: f64,
    usage: Option<&Bound<'py, PyAny>>,
    clock: (i64, f64),
) -> PyResult<Option<(usize, Vec<u8>)>> {
    let trace = attr!(slots, ctx, CtxTrace, "trace")?;
    if trace.is_none() || !attr!(slots, trace, TraceSampled, "sampled")?.is_truthy()? {
        return Ok(None);
    }
    let trace_obj = attr!(slots, trace, TraceId, "trace_id")?;
    if !trace_obj.is_truthy()? {
        return Ok(None);
    }
    let trace_id = otlp::trace_id(bytes_of(&trace_obj, "ctx.trace.trace_id")?).map_err(id_error)?;
    let root_obj = attr!(slots, trace, TraceSpanId, "span_id")?;
    let root_id = otlp::span_id(bytes_of(&root_obj, "ctx.trace.span_id")?).map_err(id_error)?;
    let parent_obj = attr!(slots, trace, TraceParent, "parent_span_id")?;
    let parent = bytes_of(&parent_obj, "ctx.trace.parent_span_id")?;
    let parent_id = otlp::parent_span_id(parent).map_err(id_error)?;

    let r = read_request(slots, catalog, ctx, run, ended, usage, clock)?;
    let t = &r.texts;
    let kind = opt_txt(&t[KIND])?.unwrap_or(Cow::Borrowed(""));
    let operation = match &*kind {
        "chat" => Some("chat"),
        "embeddings" => Some("embeddings"),
        _ => None,
    };
    let result = opt_txt(&t[RESULT])?.unwrap_or(Cow::Borrowed(""));
    let failed = result != "ok";
    let status = r.status;
    let stream = r.stream;
    let method = opt_txt(&t[METHOD])?.unwrap_or(Cow::Borrowed(""));
    let path = opt_txt(&t[ROUTE])?.unwrap_or(Cow::Borrowed(""));
    let model = opt_txt(&t[MODEL])?;
    let error_code = opt_txt(&t[ERROR_CODE])?;

    let mut scratch = Attrs { buf: Vec::new() };
    params(slots, run, &mut scratch)?;
    let params = std::mem::replace(&mut scratch.buf, Vec::with_capacity(2048));

    // the attempts: the plugin's served one (response model, provider), the spans' served one
    let attempts = attr!(slots, ctx, CtxAttempts, "attempts")?;
    let attempts = attempts.cast::<PyList>().map_err(|_| wrong_type("ctx.attempts", &attempts, "a list"))?.to_tuple();
    let objs = r.attempts();
    if attempts.len() != objs.len() {
        return Err(PyValueError::new_err("ctx.attempts changed while read"));
    }
    let span_served = objs
        .iter()
        .rposition(|a| a.error_code.is_none() && !a.cancelled && a.status.is_some_and(|s| s < 300));
    let response_model = match r.served_at {
        Some(j) => {
            let served = attempts.get_item(j)?;
            Some(attr!(slots, served, AttemptModel, "model")?)
        }
        None => None,
    };
    let finish_reason = {
        let pump = attr!(slots, run, RunPump, "pump")?;
        if pump.is_none() {
            None
        } else {
            let fr = attr!(slots, pump, PumpFinishReason, "finish_reason");
            match fr {
                Ok(v) => Some(v),
                Err(e) if e.is_instance_of::<pyo3::exceptions::PyAttributeError>(run.py()) => None,
                Err(e) => return Err(e),
            }
        }
    };
    let write_usage = |a: &mut Attrs| {
        a.int("gen_ai.usage.input_tokens", Some(r.prompt_tokens));
        a.int("gen_ai.usage.output_tokens", Some(r.completion_tokens));
        a.int("gen_ai.usage.cache_read.input_tokens", Some(r.cached_tokens).filter(|&c| c != 0));
        a.flag("llmgw.usage_estimated", r.usage_estimated);
    };

    let mut out = Vec::with_capacity(2048);
    let mut count = 0usize;

    // the root (SERVER) span
    let a = &mut scratch;
    let name: Cow<'_, str> = if let Some(op) = operation {
        let model = nonempty(&model);
        let provider = if r.served {
            provider_name(catalog.provider(&opt_txt(&t[TARGET])?.unwrap_or(Cow::Borrowed(""))))
                .map(str::to_owned)
        } else {
            None
        };
        a.str("gen_ai.operation.name", Some(op));
        a.str("gen_ai.request.model", model);
        a.str("gen_ai.provider.name", provider.as_deref());
        a.str("gen_ai.system", provider.as_deref());
        if let Some(m) = &response_model {
            if m.is_truthy()? {
                a.py("gen_ai.response.model", m)?;
            }
        }
        if let Some(fr) = &finish_reason {
            a.one_str_array("gen_ai.response.finish_reasons", fr)?;
        }
        a.flag("gen_ai.request.stream", stream);
        a.buf.extend_from_slice(&params);
        if span_served.is_none() && !failed {
            write_usage(a);
        }
        match model {
            Some(m) => Cow::Owned(joined(op, m)),
            None => Cow::Borrowed(op),
        }
    } else {
        Cow::Owned(joined(&method, &path))
    };
    let error: Option<Cow<'_, str>> = if failed {
        Some(match nonempty(&error_code) {
            Some(code) => Cow::Borrowed(code),
            None if status >= 400 => Cow::Owned(status.to_string()),
            None => Cow::Borrowed(&*result),
        })
    } else {
        None
    };
    let run_error = attr!(slots, run, RunError, "error")?;
    let has_error = !run_error.is_none();
    a.str("http.request.method", Some(&method));
    a.str("url.path", Some(&path));
    a.str("http.route", matches!(&*kind, "chat" | "embeddings" | "models").then_some(&*path));
    a.int("http.response.status_code", Some(status));
    a.str("error.type", error.as_deref());
    if failed && has_error {
        a.py("llmgw.error_type", &attr!(slots, run_error, ErrorType, "type")?)?;
    }
    a.str("llmgw.request_id", opt_txt(&t[REQUEST_ID])?.as_deref());
    let dialect = text(attr!(slots, ctx, CtxDialect, "dialect")?, "ctx.dialect")?;
    a.str("llmgw.dialect", Some(&txt(&dialect)?));
    a.str("llmgw.result", Some(&result));
    a.str("llmgw.group", nonempty(&opt_txt(&t[GROUP])?));
    a.str("llmgw.deployment", nonempty(&opt_txt(&t[DEPLOYMENT])?));
    a.str("llmgw.cache", nonempty(&opt_txt(&t[CACHE])?));
    a.double("llmgw.cost_usd", match r.micro {
        Some(micro) if operation.is_some() => Some(micro / 1e6),
        _ => None,
    });
    a.str("llmgw.key_id", nonempty(&opt_txt(&t[KEY_ID])?));
    a.str("llmgw.key_name", nonempty(&opt_txt(&t[KEY_NAME])?));
    a.str("llmgw.team", nonempty(&opt_txt(&t[TEAM])?));
    let fallbacks = objs.iter().filter(|o| o.via == "fallback").count() as i64;
    let retries = objs.iter().filter(|o| o.retry).count() as i64;
    a.int("llmgw.attempts", Some(objs.len() as i64).filter(|&n| n != 0));
    a.int("llmgw.fallbacks", Some(fallbacks).filter(|&n| n != 0));
    a.int("llmgw.retries", Some(retries).filter(|&n| n != 0));
    a.double("llmgw.ttfb_s", r.ttfb_s);
    a.double("llmgw.overhead_s", Some(r.overhead_s));
    a.double("llmgw.upstream_s", Some(r.upstream_s));
    let message_obj;
    let status_span = if failed && (status >= 500 || result == "stream_error") {
        let message = if has_error {
            message_obj = opt_text(attr!(slots, run_error, ErrorMessage, "message")?, "run.error.message")?;
            opt_txt(&message_obj)?.filter(|m| !m.is_empty())
        } else {
            None
        };
        let message = match message {
            Some(m) => m.into_owned(),
            None => error.as_deref().filter(|e| !e.is_empty()).unwrap_or(&result).to_owned(),
        };
        (StatusCode::Error, message)
    } else {
        (StatusCode::Unset, String::new())
    };
    let start_ns = u64::try_from(r.start_ns).map_err(|_| PyValueError::new_err("a span time is before 1970"))?;
    let root = Span {
        trace_id,
        span_id: root_id,
        parent_span_id: parent_id,
        flags: if parent.is_empty() { FLAGS_LOCAL } else { FLAGS_REMOTE },
        name: &name,
        kind: SpanKind::Server,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: wall(clock, ended)?,
        attributes: &[],
        status: Status { code: status_span.0, message: &status_span.1 },
    };
    push_span(&mut out, &root, &a.buf);
    a.buf.clear();
    count += 1;

    let base = u64::from_be_bytes(root_id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let derived = |n: u64| -> [u8; 8] {
        let v = base.wrapping_add(n);
        (if v == 0 { 1 } else { v }).to_be_bytes()
    };

    // the stages (INTERNAL)
    let stages = attr!(slots, ctx, CtxStages, "stages")?;
    if stages.is_truthy()? {
        let mut i = 0u64;
        for stage in stages.try_iter()? {
            let stage = stage?;
            let stage = stage.cast::<PyTuple>().map_err(|_| wrong_type("a ctx.stages item", &stage, "a tuple"))?;
            if stage.len() != 4 {
                return Err(PyValueError::new_err("ctx.stages items must be (plugin, hook, t0, t1)"));
            }
            let plugin = text(stage.get_item(0)?, "a stage's plugin")?;
            let plugin = txt(&plugin)?;
            if plugin == OWN_PLUGIN {
                continue;
            }
            i += 1;
            let hook = text(stage.get_item(1)?, "a stage's hook")?;
            let name = joined(&plugin, &txt(&hook)?);
            let t0 = float(&stage.get_item(2)?, "a stage's start")?;
            let t1 = float(&stage.get_item(3)?, "a stage's end")?;
            a.str("llmgw.plugin", Some(&plugin));
            let span = Span {
                trace_id,
                span_id: derived(i),
                parent_span_id: Some(root_id),
                flags: FLAGS_LOCAL,
                name: &name,
                kind: SpanKind::Internal,
                start_time_unix_nano: wall(clock, t0)?,
                end_time_unix_nano: wall(clock, t1)?,
                attributes: &[],
                status: Status::UNSET,
            };
            push_span(&mut out, &span, &a.buf);
            a.buf.clear();
            count += 1;
        }
    }

    // the attempts (CLIENT)
    let op: &str = operation.unwrap_or(&kind);
    for (i, (obj, o)) in attempts.iter().zip(objs).enumerate() {
        let target = text(attr!(slots, obj, AttemptTarget, "target")?, "attempt.target")?;
        let target = txt(&target)?;
        let provider = provider_name(catalog.provider(&target));
        let (address, port) = addresses.get(&*target).map_or((None, None), |(h, p)| (h.as_deref(), *p));
        let model_obj = attr!(slots, obj, AttemptModel, "model")?;
        let model = opt_text(model_obj.clone(), "attempt.model")?;
        let model = opt_txt(&model)?;
        let started = float(&attr!(slots, obj, AttemptStarted, "started")?, "attempt.started")?;
        let status = o.status;
        let error: Option<Cow<'_, str>> = match opt_txt(&o.error_code)?.filter(|c| !c.is_empty()) {
            Some(code) => Some(code),
            None => status.filter(|&s| s >= 400).map(|s| Cow::Owned(s.to_string())),
        };
        a.str("gen_ai.operation.name", Some(op));
        a.str("gen_ai.provider.name", provider);
        a.str("gen_ai.system", provider);
        a.str("gen_ai.request.model", model.as_deref());
        a.flag("gen_ai.request.stream", stream);
        if stream {
            a.py("gen_ai.response.time_to_first_chunk", &attr!(slots, obj, AttemptTtfb, "ttfb_s")?)?;
        }
        a.str("server.address", address);
        a.int("server.port", port);
        a.int("http.response.status_code", status);
        a.str("error.type", error.as_deref());
        if error.is_some() {
            a.py("llmgw.error_class", &obj.getattr(intern!(run.py(), "error_class"))?)?;
        }
        let deployment = opt_txt(&o.deployment)?;
        a.str("llmgw.deployment", Some(deployment.as_deref().unwrap_or("")));
        a.str("llmgw.upstream", Some(&target));
        a.str("llmgw.attempt.via", Some(o.via));
        a.flag("llmgw.attempt.retry", o.retry);
        a.flag("llmgw.attempt.hedge", o.hedge);
        a.flag("llmgw.attempt.cancelled", o.cancelled);
        a.buf.extend_from_slice(&params);
        if span_served == Some(i) {
            if let Some(m) = &response_model {
                a.py("gen_ai.response.model", m)?;
            }
            if let Some(fr) = &finish_reason {
                a.one_str_array("gen_ai.response.finish_reasons", fr)?;
            }
            write_usage(a);
        }
        let id_obj = attr!(slots, obj, AttemptSpanId, "span_id")?;
        let id = bytes_of(&id_obj, "attempt.span_id")?;
        let span_id = if id.len() == 8 { otlp::span_id(id).map_err(id_error)? } else { derived(1000 + i as u64) };
        let name: Cow<'_, str> = match nonempty(&model) {
            Some(m) => Cow::Owned(joined(op, m)),
            None => Cow::Borrowed(op),
        };
        let span = Span {
            trace_id,
            span_id,
            parent_span_id: Some(root_id),
            flags: FLAGS_LOCAL,
            name: &name,
            kind: SpanKind::Client,
            start_time_unix_nano: wall(clock, started)?,
            end_time_unix_nano: wall(clock, started + o.seconds)?,
            attributes: &[],
            status: match &error {
                None => Status::UNSET,
                Some(e) => Status { code: StatusCode::Error, message: e },
            },
        };
        push_span(&mut out, &span, &a.buf);
        a.buf.clear();
        count += 1;
    }
    Ok(Some((count, out)))
}
