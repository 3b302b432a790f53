//! Reading `__slots__` attributes the way CPython's LOAD_ATTR_SLOT does (see below): the fast
//! path of `Telemetry.finish_request`.

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyString;

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
pub(super) enum At {
    CtxRequestId, CtxStarted, CtxKind, CtxModel, CtxPlan, CtxAttempts, CtxKeyId, CtxKeyName, CtxUser, CtxTeam,
    CtxUpstreamS, CtxFirstByte, CtxMetadata, CtxTrace, CtxUsage, CtxUsageEstimated, CtxPath,
    RunStatus, RunResult, RunError, RunStreamed, RunClientS, RunRoute, RunHttp,
    HttpResponded, HttpMethod, ErrorCode, RoutePattern,
    PlanGroup, PlanFallbacks, PlanPrimaries, StepDeployment, TraceId,
    UsagePrompt, UsageCompletion, UsageCached,
    AttemptDeployment, AttemptStatus, AttemptError, AttemptErrorCode, AttemptTotalS, AttemptRetry, AttemptHedge,
    AttemptCancelled, AttemptSent, AttemptTarget,
    // trace_request's
    CtxDialect, CtxStages, TraceSpanId, TraceParent, TraceSampled, RunReq, ReqBody, RunPump, ErrorType,
    ErrorMessage, AttemptModel, AttemptStarted, AttemptTtfb, AttemptSpanId, PumpFinishReason,
}

const SITES: usize = At::PumpFinishReason as usize + 1;

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

pub(super) struct Slots {
    sites: [Site; SITES],
}

impl Default for Slots {
    fn default() -> Self {
        Slots { sites: [Site::default(); SITES] }
    }
}

impl Slots {
    /// How many (site, type) pairs are read at a slot's offset.
    pub(super) fn known(&self) -> usize {
        self.sites.iter().flat_map(|s| &s.seen).filter(|s| s.offset.is_some()).count()
    }

    /// `getattr(obj, name)`, at the slot's offset when this site knows obj's type.
    #[inline]
    pub(super) fn get<'py, 'n>(
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
    pub(super) fn learn<'py>(
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
