"""`guardrails:` — PII, prompt injection, prompt limits, a content filter and answer validation.

    guardrails:
      pii: {mode: redact, types: [email, phone, card, iban, ssn, ip, secret], input: true, output: true,
            reversible: false, allow: ['@example\\.com$']}     # block | redact | mask | log | off
      injection: {mode: block, threshold: 0.5, classifier: mymodule:Detector}   # block | log | off
      limits: {max_prompt_tokens: 16000, max_messages: 100}
      content: {block: [forbidden phrase], allow: [phrase exempt from the blocklist]}
      json_schema: retry                # answers to response_format json_schema: retry | error | off
      on_error: closed                  # a guardrail that crashes: closed (500) | open (logged, counted, skipped)
      audit_file: ./guardrails-audit.jsonl   # decisions, when governance (and its audit log) is off
      models: {support-bot: {pii: {mode: mask}}}          # per model group: merged over the above
      teams: {research: {injection: {mode: log}}}         # per team
      keys: {alice: {pii: {mode: off}}}                   # per key (auth.keys name or governance key id)

Overrides merge section by section (a key's `pii` changes only the fields it names); the most
specific wins: key, then team, then model group, then the global settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmgw.config.reader import Doc, get, positive, take

__all__ = ["GuardrailPolicy", "GuardrailsConfig", "PII_TYPES", "parse_guardrails", "parse_policy"]

PII_TYPES = ("email", "phone", "card", "iban", "ssn", "ip", "secret")
PII_MODES = ("block", "redact", "mask", "log", "off")
SECTIONS = ("pii", "injection", "limits", "content", "json_schema")


@dataclass(frozen=True, slots=True)
class PiiSettings:
    mode: str = "off"
    types: tuple[str, ...] = PII_TYPES
    input: bool = True
    output: bool = True
    reversible: bool = False
    allow: tuple[str, ...] = ()  # regexes: a found value matching one is left alone


@dataclass(frozen=True, slots=True)
class InjectionSettings:
    mode: str = "off"
    threshold: float = 0.5
    classifier: str | None = None  # "module:Class" with score(text) -> float (plain or async)


@dataclass(frozen=True, slots=True)
class PromptLimits:
    max_prompt_tokens: int | None = None
    max_messages: int | None = None


@dataclass(frozen=True, slots=True)
class ContentFilter:
    block: tuple[str, ...] = ()  # terms (case-insensitive, whole words) that refuse a request
    allow: tuple[str, ...] = ()  # phrases exempt from the blocklist ("kill -9" with "kill" blocked)


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    pii: PiiSettings = field(default_factory=PiiSettings)
    injection: InjectionSettings = field(default_factory=InjectionSettings)
    limits: PromptLimits = field(default_factory=PromptLimits)
    content: ContentFilter = field(default_factory=ContentFilter)
    json_schema: str = "off"


@dataclass(frozen=True, slots=True)
class GuardrailsConfig:
    raw: dict[str, Any]  # the global sections as written, what overrides are merged over
    policy: GuardrailPolicy
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    teams: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    on_error: str = "closed"
    audit_file: str | None = None

    def __hash__(self) -> int:  # the raw dicts are not hashable; the parsed policy is
        return hash(self.policy)


def _terms(doc: Doc, data: dict[str, Any], path: str, key: str) -> tuple[str, ...]:
    items = get(doc, data, path, key, list, [])
    if not all(isinstance(t, str) and t.strip() for t in items):
        doc.error(f"{path}.{key}", "expected a list of non-empty strings", "Write [term, another term]")
        return ()
    return tuple(items)


def _regexes(doc: Doc, data: dict[str, Any], path: str, key: str) -> tuple[str, ...]:
    out = _terms(doc, data, path, key)
    for pattern in out:
        try:
            re.compile(pattern)
        except re.error as exc:
            doc.error(f"{path}.{key}", f"{pattern!r} is not a valid regex: {exc}", "Fix or quote the pattern")
            return ()
    return out


def parse_policy(doc: Doc, data: dict[str, Any], path: str) -> GuardrailPolicy:
    """One set of sections (global, or global merged with an override) as a policy."""
    p = GuardrailPolicy()
    pii = data.get("pii") or {}
    inj = data.get("injection") or {}
    lim = data.get("limits") or {}
    con = data.get("content") or {}
    for name, section in (("pii", pii), ("injection", inj), ("limits", lim), ("content", con)):
        if not isinstance(section, dict):
            doc.error(f"{path}.{name}", "expected a mapping", "See the README's guardrails section")
    pii = pii if isinstance(pii, dict) else {}
    inj = inj if isinstance(inj, dict) else {}
    lim = lim if isinstance(lim, dict) else {}
    con = con if isinstance(con, dict) else {}
    take(doc, pii, f"{path}.pii", {k: "" for k in PiiSettings.__dataclass_fields__})
    take(doc, inj, f"{path}.injection", {k: "" for k in InjectionSettings.__dataclass_fields__})
    take(doc, lim, f"{path}.limits", {k: "" for k in PromptLimits.__dataclass_fields__})
    take(doc, con, f"{path}.content", {k: "" for k in ContentFilter.__dataclass_fields__})
    types = get(doc, pii, f"{path}.pii", "types", list, list(PII_TYPES))
    unknown = [t for t in types if t not in PII_TYPES]
    if unknown:
        doc.error(f"{path}.pii.types", f"unknown PII type(s) {unknown}", f"Use some of: {', '.join(PII_TYPES)}")
        types = [t for t in types if t in PII_TYPES]
    mode_of = lambda modes: lambda v: None if v in modes else f"must be one of {', '.join(modes)}"  # noqa: E731
    pii_s = PiiSettings(
        mode=get(doc, pii, f"{path}.pii", "mode", str, p.pii.mode, mode_of(PII_MODES)),
        types=tuple(types),
        input=get(doc, pii, f"{path}.pii", "input", bool, True),
        output=get(doc, pii, f"{path}.pii", "output", bool, True),
        reversible=get(doc, pii, f"{path}.pii", "reversible", bool, False),
        allow=_regexes(doc, pii, f"{path}.pii", "allow"),
    )
    if pii_s.reversible and pii_s.mode != "redact":
        doc.error(f"{path}.pii.reversible", "needs mode: redact", "Set pii.mode: redact, or drop reversible")
    classifier = get(doc, inj, f"{path}.injection", "classifier", str, None)
    if classifier is not None and not re.fullmatch(r"[\w.]+:[\w.]+", classifier):
        doc.error(f"{path}.injection.classifier", f"{classifier!r} is not 'module:Class'",
                  "Write the import path as package.module:ClassName")
    inj_s = InjectionSettings(
        mode=get(doc, inj, f"{path}.injection", "mode", str, "off", mode_of(("block", "log", "off"))),
        threshold=get(doc, inj, f"{path}.injection", "threshold", float, 0.5,
                      lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
        classifier=classifier,
    )
    lim_s = PromptLimits(get(doc, lim, f"{path}.limits", "max_prompt_tokens", int, None, positive),
                         get(doc, lim, f"{path}.limits", "max_messages", int, None, positive))
    con_s = ContentFilter(_terms(doc, con, f"{path}.content", "block"), _terms(doc, con, f"{path}.content", "allow"))
    schema = get(doc, data, path, "json_schema", str, "off", mode_of(("retry", "error", "off")))
    return GuardrailPolicy(pii_s, inj_s, lim_s, con_s, schema)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Sections of `override` over `base`, field by field."""
    out = dict(base)
    for name, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(name), dict):
            out[name] = {**out[name], **value}
        else:
            out[name] = value
    return out


def parse_guardrails(doc: Doc, data: Any) -> GuardrailsConfig | None:
    if data is None:
        return None
    path = "guardrails"
    if not isinstance(data, dict):
        doc.error(path, "expected a mapping", "See the README's guardrails section")
        return None
    take(doc, data, path, {k: "" for k in (*SECTIONS, "on_error", "audit_file", "models", "teams", "keys")})
    raw = {k: data[k] for k in SECTIONS if k in data}
    policy = parse_policy(doc, raw, path)
    scoped: dict[str, dict[str, dict[str, Any]]] = {}
    for scope in ("models", "teams", "keys"):
        entries = get(doc, data, path, scope, dict, {})
        scoped[scope] = {}
        for name, override in entries.items():
            sub = f"{path}.{scope}.{name}"
            if not isinstance(override, dict):
                doc.error(sub, "expected a mapping of guardrail sections", "Write {pii: {mode: mask}}")
                continue
            take(doc, override, sub, {k: "" for k in SECTIONS})
            parse_policy(doc, merge(raw, override), sub)  # report its mistakes now, at load
            scoped[scope][str(name)] = override
    return GuardrailsConfig(
        raw=raw, policy=policy, models=scoped["models"], teams=scoped["teams"], keys=scoped["keys"],
        on_error=get(doc, data, path, "on_error", str, "closed",
                     lambda v: None if v in ("closed", "open") else "must be closed or open"),
        audit_file=get(doc, data, path, "audit_file", str, None),
    )
