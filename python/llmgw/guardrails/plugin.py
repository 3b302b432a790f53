"""The guardrails plugin: loaded when the config has a `guardrails:` section (see
llmgw/config/guardrails.py for the settings, the README for what a client sees).

- `pre_request`, in this order: prompt limits (messages, tokens counted in Rust), the content
  blocklist, prompt-injection scoring of user and tool messages (signatures in Rust, plus an
  optional classifier), then PII in every message's text: block (400 `pii_detected`), redact,
  mask (the body is changed in place before it goes upstream) or log.
- `post_response` (non-streamed answers): PII in the answer with the same modes (block cuts the
  answer where the first value starts and sets `finish_reason: content_filter`); reversible
  placeholders restored; `response_format: json_schema` answers validated (retry once, or 502).
- `on_chunk` / `on_stream_end` (streamed answers): the same, through a rolling window per choice
  (guardrails/redact.py) that holds back only the text that could still become a match.

Every decision is counted (stats "guardrails") and written to the audit log (governance's, or
`audit_file`) with the types found and never the text.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Iterator

import orjson

from llmgw.config.guardrails import GuardrailPolicy, GuardrailsConfig, merge, parse_policy
from llmgw.config.reader import Doc
from llmgw.errors import GatewayError
from llmgw.exchange import ChatResponse
from llmgw.guardrails.detect import InjectionDetector, PiiDetector
from llmgw.guardrails.redact import Redactor, StreamWindow
from llmgw.plugins.api import Plugin
from llmgw.tokens import count_chat_tokens

if TYPE_CHECKING:
    from llmgw.exchange import ChatRequest, RequestContext
    from llmgw.services import Services

__all__ = ["Guardrails"]

log = logging.getLogger("llmgw.guardrails")

Chunk = dict[str, Any]
_INJECTION_ROLES = ("user", "tool", "function")


class _Active:
    """A policy made ready to run: detectors built, patterns compiled (one per distinct policy)."""

    __slots__ = ("policy", "pii", "pii_in", "pii_out", "allow", "injection", "classifier", "blocked", "exempt",
                 "noop", "streams")

    def __init__(self, policy: GuardrailPolicy, detectors: dict[Any, Any]) -> None:
        self.policy = policy
        pii = policy.pii
        on = pii.mode != "off"
        self.pii = detectors.setdefault(("pii", pii.types), PiiDetector(pii.types)) if on else None
        self.pii_in = on and pii.input
        self.pii_out = on and pii.output
        self.allow = re.compile("|".join(f"(?:{a})" for a in pii.allow)) if pii.allow else None
        inj = policy.injection
        self.injection = detectors.setdefault(("inj", inj.threshold), InjectionDetector(inj.threshold)) \
            if inj.mode != "off" else None
        self.classifier = None
        if inj.mode != "off" and inj.classifier:
            module, _, attr = inj.classifier.partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self.classifier = detectors.setdefault(("cls", inj.classifier), obj())
        con = policy.content
        self.blocked = tuple(t.lower() for t in con.block) if con.block else None
        self.exempt = tuple(t.lower() for t in con.allow)
        lim = policy.limits
        self.noop = not (self.pii or self.injection or self.blocked or lim.max_messages or lim.max_prompt_tokens
                         or policy.json_schema != "off")
        # Streams need the window only when the answer is scanned or placeholders come back.
        self.streams = self.pii_out or (self.pii_in and pii.reversible)


def _texts(messages: list[Any]) -> Iterator[tuple[str, Any, Any, str]]:
    """(role, container, key, text) for every piece of text in the messages, so it can be replaced
    in place: `container[key] = new`."""
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role") or ""
        content = msg.get("content")
        if isinstance(content, str):
            yield role, msg, "content", content
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    yield role, part, "text", part["text"]


class Guardrails(Plugin):
    name = "guardrails"

    def __init__(self, config: GuardrailsConfig) -> None:
        super().__init__()
        self.cfg = config
        self._detectors: dict[Any, Any] = {}
        self._global = _Active(config.policy, self._detectors)
        self._scoped = bool(config.models or config.teams or config.keys)
        self._cache: dict[tuple[str | None, str | None, str | None], _Active] = {}
        self.counts: Counter[str] = Counter()
        self.services: Services | None = None
        self._audit_file = None

    def same_config(self, config: GuardrailsConfig | None) -> bool:
        return config == self.cfg

    async def startup(self, services: Services) -> None:
        self.services = services
        services.add_stats("guardrails", lambda: dict(self.counts))
        if self.cfg.audit_file:
            path = self.cfg.audit_file

            def write(rows: list[bytes]) -> None:
                try:
                    with open(path, "ab") as f:
                        f.write(b"".join(rows))
                except OSError as exc:  # counted and logged; the requests are not held up by it
                    self.counts["audit_write_failed"] += len(rows)
                    log.error("guardrails: cannot write the audit file %s: %s", path, exc)

            self._audit_file = services.queue("guardrails.audit", write, batch=500, interval=0.5)

    # -- which policy -------------------------------------------------------------------------------
    def _policy(self, ctx: RequestContext) -> _Active:
        if not self._scoped:
            return self._global
        group = ctx.plan.group if ctx.plan is not None else ctx.model
        key = ctx.key_id if ctx.key_id in self.cfg.keys else ctx.key_name
        cache_key = (group, ctx.team, key)
        active = self._cache.get(cache_key)
        if active is None:
            raw = self.cfg.raw
            for scope, name in (("models", group), ("teams", ctx.team), ("keys", key)):
                override = getattr(self.cfg, scope).get(name) if name is not None else None
                if override:
                    raw = merge(raw, override)
            # Validated when the config loaded: parsing the merge again cannot fail now.
            active = _Active(parse_policy(Doc("guardrails", {}), raw, "guardrails"), self._detectors)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[cache_key] = active
        return active

    # -- decisions ----------------------------------------------------------------------------------
    def _decide(self, ctx: RequestContext, guard: str, action: str, detail: dict[str, Any]) -> None:
        """Count a decision and write it to the audit log: types, scores and counts, never text."""
        self.counts[f"{guard}.{action}"] += 1
        detail = {"request_id": ctx.request_id, "model": ctx.model, **detail}
        actor = ctx.key_id or ctx.key_name or "anonymous"
        services = self.services
        if services is not None and services.audit(actor, f"guardrail.{guard}.{action}", ctx.key_id, detail):
            return
        line = orjson.dumps({"time": time.time(), "actor": actor, "action": f"guardrail.{guard}.{action}", **detail})
        if self._audit_file is not None:
            self._audit_file.put(line + b"\n")
        else:
            log.info("guardrail decision %s", line.decode())

    # -- the request --------------------------------------------------------------------------------
    async def pre_request(self, ctx: RequestContext, request: ChatRequest) -> None:
        active = self._policy(ctx)
        if active.noop:
            return
        policy = active.policy
        body = request.body
        messages = body.get("messages") or []
        lim = policy.limits
        if lim.max_messages and len(messages) > lim.max_messages:
            self._decide(ctx, "limits", "blocked", {"messages": len(messages)})
            raise GatewayError(400, f"This request has {len(messages)} messages; the limit is {lim.max_messages}.",
                               code="too_many_messages", param="messages")
        if lim.max_prompt_tokens:
            tokens = int(count_chat_tokens(messages, request.model or "gpt-4o", body.get("tools")))
            if tokens > lim.max_prompt_tokens:
                self._decide(ctx, "limits", "blocked", {"prompt_tokens": tokens})
                raise GatewayError(400, f"This request's prompt has {tokens} tokens; the limit is "
                                        f"{lim.max_prompt_tokens}.", code="prompt_too_long", param="messages")
        ctx.metadata["guard"] = active
        ctx.metadata["guard.body"] = body
        if not (active.blocked or active.injection or active.pii_in):
            return
        redactor = Redactor(policy.pii.mode, active.allow, policy.pii.reversible) if active.pii else None
        worst = 0.0
        families: set[str] = set()
        for role, holder, key, text in list(_texts(messages)):
            if active.blocked is not None:
                hit = _blocked_term(text, active.blocked, active.exempt)
                if hit is not None:
                    self._decide(ctx, "content", "blocked", {"term": hit})
                    raise GatewayError(400, f"This request contains a blocked term ({hit!r}).",
                                       code="content_blocked", param="messages")
            if active.injection is not None and role in _INJECTION_ROLES:
                score, fams = active.injection.score(text)
                if active.classifier is not None:
                    extra = active.classifier.score(text)
                    if inspect.isawaitable(extra):
                        extra = await extra
                    if float(extra) > score:
                        score, fams = float(extra), [*fams, "classifier"]
                if score > worst:
                    worst = score
                if score >= policy.injection.threshold:
                    families.update(fams)
            if redactor is not None and active.pii_in:
                found = redactor.relevant(text, active.pii.find(text))
                if found and redactor.mode != "block":
                    holder[key] = redactor.apply(text, found)
        if families:
            detail = {"score": round(worst, 3), "families": sorted(families)}
            if policy.injection.mode == "block":
                self._decide(ctx, "injection", "blocked", detail)
                raise GatewayError(400, "This request looks like a prompt-injection attempt "
                                        f"({', '.join(sorted(families))}); it was not sent.",
                                   code="prompt_injection_detected", param="messages")
            self._decide(ctx, "injection", "logged", detail)
            ctx.response_headers.append(("x-llmgw-guardrails", f"injection-logged={','.join(sorted(families))}"))
        if redactor is not None and redactor.found:
            types = sorted(redactor.found)
            mode = redactor.mode
            action = {"block": "blocked", "redact": "redacted", "mask": "masked", "log": "logged"}[mode]
            self._decide(ctx, "pii", action, {"where": "input", "types": types})
            if mode == "block":
                raise GatewayError(400, f"This request contains personal data or secrets ({', '.join(types)}); "
                                        "it was not sent.", code="pii_detected", param="messages")
            ctx.response_headers.append(("x-llmgw-guardrails", f"pii-{action}={','.join(types)}"))
        if redactor is not None:
            ctx.metadata["guard.redactor"] = redactor

    # -- non-streamed answers -------------------------------------------------------------------------
    async def post_response(self, ctx: RequestContext, result: ChatResponse | GatewayError) -> Any:
        active: _Active | None = ctx.metadata.get("guard")
        if active is None or not isinstance(result, ChatResponse) or result.streamed:
            return None
        redactor: Redactor | None = ctx.metadata.get("guard.redactor")
        if active.pii_out or (redactor is not None and redactor.by_placeholder):
            self._answer_pii(ctx, active, result, redactor)
        if active.policy.json_schema != "off":
            return await self._validate(ctx, active, result, redactor)
        return None

    def _answer_pii(self, ctx: RequestContext, active: _Active, result: ChatResponse,
                    input_redactor: Redactor | None) -> None:
        pol = active.policy.pii
        out = Redactor(pol.mode, active.allow) if active.pii_out else None
        for choice in result.data.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                continue
            text = message["content"]
            if out is not None:
                found = out.relevant(text, active.pii.find(text))  # type: ignore[union-attr]
                if found and out.mode == "block":
                    text = text[:found[0][1]]
                    choice["finish_reason"] = "content_filter"
                else:
                    text = out.apply(text, found)
            if input_redactor is not None:
                text = input_redactor.restore(text)
            message["content"] = text
        if out is not None and out.found:
            self._output_decision(ctx, out)

    def _output_decision(self, ctx: RequestContext, red: Redactor) -> None:
        types = sorted(red.found)
        action = {"block": "blocked", "redact": "redacted", "mask": "masked", "log": "logged"}[red.mode]
        self._decide(ctx, "pii", action, {"where": "output", "types": types})

    async def _validate(self, ctx: RequestContext, active: _Active, result: ChatResponse,
                        redactor: Redactor | None) -> Any:
        schema = _schema_of(ctx)
        if schema is None:
            return None
        problem = _schema_problem(result, schema)
        if problem is None:
            return None
        if active.policy.json_schema == "retry" and ctx.redo is not None:
            self._decide(ctx, "json_schema", "retried", {"problem": problem[:200]})
            again = await ctx.redo()
            if isinstance(again, GatewayError):
                return again
            if active.pii_out or (redactor is not None and redactor.by_placeholder):
                self._answer_pii(ctx, active, again, redactor)
            problem = _schema_problem(again, schema)
            if problem is None:
                return again
        self._decide(ctx, "json_schema", "failed", {"problem": problem[:200]})
        return GatewayError(502, f"The model's answer does not match the requested JSON schema: {problem}",
                            type="server_error", code="invalid_response_format")

    # -- streamed answers ---------------------------------------------------------------------------
    def _windows(self, ctx: RequestContext, active: _Active) -> dict[int, StreamWindow]:
        windows = ctx.metadata.get("guard.windows")
        if windows is None:
            windows = ctx.metadata["guard.windows"] = {}
            ctx.metadata["guard.out"] = Redactor(active.policy.pii.mode, active.allow)
        return windows  # type: ignore[no-any-return]

    def _window(self, ctx: RequestContext, active: _Active, index: int) -> StreamWindow:
        windows = self._windows(ctx, active)
        window = windows.get(index)
        if window is None:
            out: Redactor = ctx.metadata["guard.out"]
            restore_from: Redactor | None = ctx.metadata.get("guard.redactor")
            if restore_from is not None:  # the answer's placeholders come back through this redactor
                out.by_placeholder = restore_from.by_placeholder
            pii = active.pii
            window = windows[index] = StreamWindow(
                pii.find if pii is not None else (lambda t: []),
                pii.open_block if pii is not None else (lambda t: None),
                pii.max_span if pii is not None else 64, out, active.pii_out)
        return window

    def on_chunk(self, ctx: RequestContext, chunk: Chunk) -> Chunk | None:
        active: _Active | None = ctx.metadata.get("guard")
        if active is None:
            return chunk
        if active.policy.json_schema != "off" and _schema_of(ctx) is not None:
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if isinstance(delta.get("content"), str):
                    ctx.metadata.setdefault("guard.text", {}).setdefault(choice.get("index", 0), []).append(
                        delta["content"])
        if not active.streams:
            return chunk
        if "guard.head" not in ctx.metadata:
            ctx.metadata["guard.head"] = {k: chunk[k] for k in ("id", "created", "model") if k in chunk}
        choices = chunk.get("choices")
        if not choices:
            return chunk  # usage, or a chunk with nothing to scan
        for choice in choices:
            window = self._window(ctx, active, choice.get("index", 0))
            delta = choice.get("delta")
            if window.blocked:  # block mode stopped this choice: drop what follows
                if isinstance(delta, dict):
                    delta.pop("content", None)
                choice["finish_reason"] = None
                continue
            if not isinstance(delta, dict):
                continue
            text = delta.get("content")
            if isinstance(text, str):
                delta["content"] = window.feed(text)
            if choice.get("finish_reason") is not None or window.blocked:
                rest = window.flush()
                if rest:
                    delta["content"] = (delta.get("content") or "") + rest
                if window.blocked:
                    choice["finish_reason"] = "content_filter"
                    window.blocked = True
        if all(_empty(c) for c in choices) and not chunk.get("usage"):
            return None
        return chunk

    def on_stream_end(self, ctx: RequestContext) -> list[Chunk] | None:
        active: _Active | None = ctx.metadata.get("guard")
        if active is None:
            return None
        out: list[Chunk] = []
        windows: dict[int, StreamWindow] = ctx.metadata.get("guard.windows") or {}
        for index, window in windows.items():
            rest = window.flush()
            if rest:
                out.append({**ctx.metadata.get("guard.head", {}), "object": "chat.completion.chunk", "choices": [
                    {"index": index, "delta": {"content": rest}, "finish_reason": None}]})
        red: Redactor | None = ctx.metadata.get("guard.out")
        if red is not None and red.found:
            self._output_decision(ctx, red)
        texts = ctx.metadata.get("guard.text")
        if texts is not None:
            schema = _schema_of(ctx)
            for pieces in texts.values():
                problem = _text_problem("".join(pieces), schema)
                if problem is not None:
                    self._decide(ctx, "json_schema", "failed", {"problem": problem[:200]})
                    raise GatewayError(502, "The model's answer does not match the requested JSON schema: "
                                            f"{problem}", type="server_error", code="invalid_response_format")
        return out or None


def _blocked_term(text: str, terms: tuple[str, ...], exempt: tuple[str, ...]) -> str | None:
    """The first blocked term in `text` as a whole word (case-insensitive), once the exempt
    phrases are taken out. Plain `str.find` per term: a regex alternation with IGNORECASE and
    word boundaries cost ~60 µs on a 2 KB prompt, this ~2 µs."""
    low = text.lower()
    for phrase in exempt:
        if phrase in low:
            low = low.replace(phrase, " " * len(phrase))
    for term in terms:
        i = low.find(term)
        while i >= 0:
            end = i + len(term)
            if (i == 0 or not _word(low[i - 1])) and (end == len(low) or not _word(low[end])):
                return term
            i = low.find(term, i + 1)
    return None


def _word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _empty(choice: dict[str, Any]) -> bool:
    delta = choice.get("delta") or {}
    return not delta.get("content") and choice.get("finish_reason") is None and len(delta) <= 1 \
        and not delta.get("tool_calls") and "role" not in delta


def _schema_of(ctx: RequestContext) -> dict[str, Any] | None:
    """The JSON schema the client asked the answer to follow (response_format json_schema)."""
    cached = ctx.metadata.get("guard.schema", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    schema = None
    body = ctx.metadata.get("guard.body")
    if isinstance(body, dict):
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
                schema = spec["schema"]
    ctx.metadata["guard.schema"] = schema
    return schema


def _schema_problem(result: ChatResponse, schema: dict[str, Any]) -> str | None:
    for choice in result.data.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if message is not None and message.get("refusal"):
            continue  # a refusal is the model's answer, not a malformed one
        problem = _text_problem(content if isinstance(content, str) else "", schema)
        if problem is not None:
            return problem
    return None


def _text_problem(text: str, schema: dict[str, Any] | None) -> str | None:
    """Why `text` is not a JSON document following `schema` (None when it is)."""
    if schema is None:
        return None
    import jsonschema

    try:
        doc = json.loads(text)
    except ValueError as exc:
        return f"not valid JSON ({exc.msg} at character {exc.pos})"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message[:200]}"
