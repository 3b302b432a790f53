//! `Telemetry.finish_request`: the request's facts read from its own objects (the RequestContext,
//! the RequestRunner, their attempts, usage, plan and trace).

use super::*;

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
pub(super) const REQUEST_ID: usize = 0;
pub(super) const KIND: usize = 1;
pub(super) const METHOD: usize = 2;
pub(super) const ROUTE: usize = 3;
pub(super) const RESULT: usize = 4;
pub(super) const MODEL: usize = 5;
pub(super) const GROUP: usize = 6;
pub(super) const DEPLOYMENT: usize = 7;
pub(super) const ERROR_CODE: usize = 8;
pub(super) const KEY_ID: usize = 9;
pub(super) const KEY_NAME: usize = 10;
pub(super) const USER: usize = 11;
pub(super) const TEAM: usize = 12;
pub(super) const CACHE: usize = 13;
/// The served attempt's upstream (looked up in the providers table).
pub(super) const TARGET: usize = 14;
const TEXTS: usize = 15;

/// Where each text comes from, for error messages.
const TEXT_NAMES: [&str; TEXTS] = [
    "ctx.request_id", "ctx.kind", "run.http.method", "the route (run.route[0].pattern or ctx.path)", "run.result",
    "ctx.model", "ctx.plan.group", "the deployment (an attempt's, or metadata['gov.cost'][2])", "run.error.code",
    "ctx.key_id", "ctx.key_name", "ctx.user", "ctx.team", "ctx.metadata['cache']", "the served attempt's target",
];

#[cold]
pub(super) fn wrong_type(what: &str, obj: &Bound<'_, PyAny>, want: &str) -> PyErr {
    let type_name = obj.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
    PyTypeError::new_err(format!("Telemetry.finish_request: {what} must be {want}, not {type_name}"))
}

/// `obj` as a str, None as None; anything else is a TypeError naming `what`.
#[inline]
pub(super) fn opt_text<'py>(obj: Bound<'py, PyAny>, what: &str) -> PyResult<Option<Bound<'py, PyString>>> {
    if obj.is_none() {
        return Ok(None);
    }
    match obj.cast_into::<PyString>() {
        Ok(s) => Ok(Some(s)),
        Err(e) => Err(wrong_type(what, &e.into_inner(), "a str or None")),
    }
}

#[inline]
pub(super) fn text<'py>(obj: Bound<'py, PyAny>, what: &str) -> PyResult<Bound<'py, PyString>> {
    match obj.cast_into::<PyString>() {
        Ok(s) => Ok(s),
        Err(e) => Err(wrong_type(what, &e.into_inner(), "a str")),
    }
}

#[inline]
pub(super) fn float(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    obj.extract::<f64>().map_err(|_| wrong_type(what, obj, "a float"))
}

#[inline]
pub(super) fn opt_float(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<f64>> {
    if obj.is_none() {
        return Ok(None);
    }
    float(obj, what).map(Some)
}

#[inline]
pub(super) fn int(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    obj.extract::<i64>().map_err(|_| wrong_type(what, obj, "an int in the int64 range"))
}

/// A str with its lone surrogates replaced by U+FFFD (see `clean`).
#[cold]
pub(super) fn clean_str<'py>(s: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyString>> {
    let utf16 = s.call_method1("encode", ("utf-16", "surrogatepass"))?;
    Ok(utf16.call_method1("decode", ("utf-16", "replace"))?.cast_into::<PyString>()?)
}

#[cold]
pub(super) fn clean_opt<'py>(s: &mut Option<Bound<'py, PyString>>) -> PyResult<()> {
    if let Some(text) = s {
        if text.to_str().is_err() {
            *text = clean_str(text)?;
        }
    }
    Ok(())
}

#[inline]
pub(super) fn borrow<'a>(s: &'a Option<Bound<'_, PyString>>) -> Read<Option<&'a str>> {
    match s {
        None => Ok(None),
        Some(text) => text.to_str().map(Some).map_err(|_| Fail::Surrogate),
    }
}

/// One attempt as read: its strs kept alive, the rest as values.
#[derive(Default)]
pub(super) struct AttemptObjs<'py> {
    pub(super) deployment: Option<Bound<'py, PyString>>,
    pub(super) error_code: Option<Bound<'py, PyString>>,
    pub(super) status: Option<i64>,
    pub(super) seconds: f64,
    pub(super) via: &'static str,
    pub(super) retry: bool,
    pub(super) hedge: bool,
    pub(super) cancelled: bool,
}

/// The trace id as read: raw bytes or hex text.
pub(super) enum TraceObj<'py> {
    Raw(Bound<'py, PyBytes>),
    Hex(Option<Bound<'py, PyString>>),
}

/// Everything one request's Finish is made of, read from its objects (phase one); `finish` then
/// borrows the strs (phase two), after cleaning them if one holds a lone surrogate.
pub(super) struct Request<'py> {
    pub(super) texts: [Option<Bound<'py, PyString>>; TEXTS],
    pub(super) trace: Option<TraceObj<'py>>,
    pub(super) inline: [AttemptObjs<'py>; INLINE_ATTEMPTS],
    /// Attempts past INLINE_ATTEMPTS: all of them go here instead (rare: retries, fallbacks, hedges).
    pub(super) spilled: Vec<AttemptObjs<'py>>,
    pub(super) n_attempts: usize,
    pub(super) served: bool,
    /// The served attempt's index in ctx.attempts (the plugin's `_served`).
    pub(super) served_at: Option<usize>,
    pub(super) start_ns: i64,
    pub(super) duration_s: f64,
    pub(super) ttfb_s: Option<f64>,
    pub(super) upstream_s: f64,
    pub(super) overhead_s: f64,
    pub(super) status: i64,
    pub(super) prompt_tokens: i64,
    pub(super) completion_tokens: i64,
    pub(super) cached_tokens: i64,
    pub(super) usage_estimated: bool,
    pub(super) stream: bool,
    /// Micro-dollars (None: unpriced), before the kind decides whether cost_usd is written.
    pub(super) micro: Option<f64>,
}

impl<'py> Request<'py> {
    pub(super) fn attempts(&self) -> &[AttemptObjs<'py>] {
        if self.n_attempts <= INLINE_ATTEMPTS {
            &self.inline[..self.n_attempts]
        } else {
            &self.spilled
        }
    }

    #[cold]
    pub(super) fn clean(&mut self) -> PyResult<()> {
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
pub(super) fn is_fallback(
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
pub(super) fn steps<'py>(obj: Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
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
pub(super) fn read_request<'py>(
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
        served_at: None,
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
        r.served_at = Some(j);
    }
    r.texts[DEPLOYMENT] = deployment;
    r.micro = micro;
    Ok(r)
}

/// Phase two: the Finish that borrows `r`'s strs (and the catalog's provider name), counted and logged.
pub(super) fn finish_read(inner: &mut telemetry::Telemetry, catalog: &Catalog, r: &Request<'_>) -> Read<()> {
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
