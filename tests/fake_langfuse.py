"""A fake Langfuse ingestion endpoint on 127.0.0.1 that checks what the real one checks.

    with FakeLangfuse(public_key="pk-lf-test", secret_key="sk-lf-test") as lf:
        exporter = LangfuseExporter(lf.url, "pk-lf-test", "sk-lf-test")
        ...
        lf.wait_for(2)            # events, for tests against a running gateway
        lf.events("generation-create")

Like Langfuse (web/src/pages/api/public/ingestion.ts and packages/shared/src/server/ingestion/
types.ts in langfuse/langfuse): only `POST /api/public/ingestion`; HTTP basic auth with the
project's public:secret key, else 401; a body over 4.5 MB is 413; a body that is not JSON or has
no `batch` list is 400; each event is validated on its own and an invalid one is listed in the
207's `errors` (status 400) while the others are taken (`successes`, status 201).

Stricter than Langfuse, on purpose (the real one silently drops or rewrites these, so a mistake
would only show as missing data in the UI): unknown keys in an event or a body; usageDetails or
costDetails values that are not non-negative integers / numbers; an environment Langfuse would
rewrite to "default"; times without milliseconds; an observation whose traceId names no trace
sent in this batch or an earlier one, or whose parentObservationId names no observation sent;
an endTime before its startTime.

`fail_next(n, status)` answers the next n requests with that status (500, 503, 429, 401, ...)
before looking at them. Accepted batches land in `.batches` (valid events only in `.events()`).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLangfuse", "parse_time", "validate_event"]

INGESTION_PATH = "/api/public/ingestion"
BODY_LIMIT = 4_500_000  # the server's bodyParser sizeLimit "4.5mb"

_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3,9}(Z|[+-]\d{2}:\d{2})")
_ENVIRONMENT = re.compile(r"[a-z0-9_-]{1,40}")
_LEVELS = {"DEBUG", "DEFAULT", "WARNING", "ERROR"}

_OBSERVATION_KEYS = {"id", "traceId", "environment", "name", "startTime", "metadata", "input", "output",
                     "level", "statusMessage", "parentObservationId", "version"}
_SPAN_KEYS = _OBSERVATION_KEYS | {"endTime"}
_GENERATION_KEYS = _SPAN_KEYS | {"completionStartTime", "model", "modelParameters", "usage", "usageDetails",
                                 "costDetails", "promptName", "promptVersion"}
_TRACE_KEYS = {"id", "timestamp", "name", "externalId", "input", "output", "sessionId", "userId", "environment",
               "metadata", "release", "version", "public", "tags"}
_SCORE_KEYS = {"id", "name", "traceId", "sessionId", "datasetRunId", "environment", "observationId", "comment",
               "metadata", "source", "queueId", "value", "dataType", "configId"}

# type -> (allowed body keys, is an observation, creates (not updates))
_TYPES: dict[str, tuple[set[str], bool, bool]] = {
    "trace-create": (_TRACE_KEYS, False, True),
    "span-create": (_SPAN_KEYS, True, True),
    "span-update": (_SPAN_KEYS, True, False),
    "generation-create": (_GENERATION_KEYS, True, True),
    "generation-update": (_GENERATION_KEYS, True, False),
    "event-create": (_OBSERVATION_KEYS, True, True),
    **{f"{kind}-create": (_GENERATION_KEYS, True, True)
       for kind in ("agent", "tool", "chain", "retriever", "evaluator", "embedding", "guardrail")},
    "score-create": (_SCORE_KEYS, False, True),
    "sdk-log": ({"log", "id"}, False, True),
}


def _is_time(value: Any) -> bool:
    if not isinstance(value, str) or not _ISO.fullmatch(value):
        return False
    try:
        datetime.fromisoformat(value[:19])  # the calendar part: no month 13, no Feb 30
    except ValueError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_id(value: Any, what: str, problems: list[str]) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= 800 or "\r" in value:
        problems.append(f"{what}: a string of 1-800 characters expected, got {value!r:.80}")


def _map_value_ok(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool)) or _is_number(value):
        return True
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    if isinstance(value, dict):
        return all(isinstance(v, str) for v in value.values())
    return False


def _check_observation(body: dict, keys: set[str], problems: list[str]) -> None:
    _check_id(body.get("id"), "body.id", problems)
    for field in ("startTime", "endTime", "completionStartTime"):
        if body.get(field) is not None and not _is_time(body[field]):
            problems.append(f"body.{field}: ISO 8601 with milliseconds and an offset expected, got {body[field]!r}")
    if body.get("level") is not None and body["level"] not in _LEVELS:
        problems.append(f"body.level: one of {sorted(_LEVELS)} expected, got {body['level']!r}")
    for field in ("name", "statusMessage", "parentObservationId", "version", "model", "promptName"):
        if body.get(field) is not None and not isinstance(body[field], str):
            problems.append(f"body.{field}: a string expected, got {type(body[field]).__name__}")
    if "modelParameters" in keys and body.get("modelParameters") is not None:
        params = body["modelParameters"]
        if not isinstance(params, dict) or not all(_map_value_ok(v) for v in params.values()):
            problems.append(f"body.modelParameters: a map of string/number/boolean/string list expected, "
                            f"got {params!r:.120}")
    usage = body.get("usageDetails")
    if usage is not None and not (isinstance(usage, dict) and usage
                                  and all(_is_int(v) and v >= 0 for v in usage.values())):
        problems.append(f"body.usageDetails: a map of non-negative integers expected, got {usage!r:.120}")
    cost = body.get("costDetails")
    if cost is not None and not (isinstance(cost, dict) and cost
                                 and all(_is_number(v) and v >= 0 for v in cost.values())):
        problems.append(f"body.costDetails: a map of non-negative numbers expected, got {cost!r:.120}")
    if body.get("promptVersion") is not None and not _is_int(body["promptVersion"]):
        problems.append("body.promptVersion: an integer expected")
    if bool(body.get("promptName")) != bool(body.get("promptVersion")):
        problems.append("body: promptName and promptVersion go together")
    start, end = body.get("startTime"), body.get("endTime")
    if _is_time(start) and _is_time(end) and parse_time(end) < parse_time(start):
        problems.append(f"body.endTime {end} is before body.startTime {start}")


def parse_time(value: str) -> datetime:
    """An ISO time as an aware datetime (Python 3.11 wants at most 6 fraction digits and no Z)."""
    head, frac_zone = value[:19], value[20:]
    zone_at = next(i for i, c in enumerate(frac_zone) if not c.isdigit())
    fraction = frac_zone[:zone_at][:6].ljust(6, "0")
    return datetime.fromisoformat(f"{head}.{fraction}{frac_zone[zone_at:].replace('Z', '+00:00')}")


def validate_event(event: Any, traces: set[str], observations: set[str]) -> list[str]:
    """What is wrong with one ingestion event ([] when nothing); `traces` / `observations` are the
    ids already taken (this batch's earlier events and earlier batches)."""
    if not isinstance(event, dict):
        return ["an event must be an object"]
    problems: list[str] = []
    _check_id(event.get("id"), "id", problems)
    if not _is_time(event.get("timestamp")):
        problems.append(f"timestamp: ISO 8601 with milliseconds and an offset expected, "
                        f"got {event.get('timestamp')!r}")
    kind = event.get("type")
    if kind not in _TYPES:
        return problems + [f"type: one of {sorted(_TYPES)} expected, got {kind!r}"]
    extra = set(event) - {"id", "timestamp", "type", "body", "metadata"}
    if extra:
        problems.append(f"unknown event keys {sorted(extra)}")
    body = event.get("body")
    if not isinstance(body, dict):
        return problems + ["body: an object expected"]
    keys, is_observation, _ = _TYPES[kind]
    unknown = set(body) - keys
    if unknown:
        problems.append(f"unknown body keys for {kind}: {sorted(unknown)}")
    env = body.get("environment")
    if env is not None and (not isinstance(env, str) or not _ENVIRONMENT.fullmatch(env) or env.startswith("langfuse")):
        problems.append(f"body.environment: Langfuse would store {env!r} as 'default'")
    if kind == "trace-create":
        if body.get("id") is not None:
            _check_id(body["id"], "body.id", problems)
        if body.get("timestamp") is not None and not _is_time(body["timestamp"]):
            problems.append(f"body.timestamp: ISO 8601 with milliseconds expected, got {body['timestamp']!r}")
        if body.get("name") is not None and (not isinstance(body["name"], str) or len(body["name"]) > 1000):
            problems.append("body.name: a string of at most 1000 characters expected")
        for field in ("userId", "sessionId", "release", "version", "externalId"):
            if body.get(field) is not None and not isinstance(body[field], str):
                problems.append(f"body.{field}: a string expected")
        tags = body.get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            problems.append("body.tags: a list of strings expected")
        if body.get("public") is not None and not isinstance(body["public"], bool):
            problems.append("body.public: a boolean expected")
    elif is_observation:
        _check_observation(body, keys, problems)
        trace_id = body.get("traceId")
        if trace_id is None or trace_id not in traces:
            problems.append(f"body.traceId {trace_id!r} names no trace sent before")
        parent = body.get("parentObservationId")
        if parent is not None and parent not in observations:
            problems.append(f"body.parentObservationId {parent!r} names no observation sent before")
    elif kind == "score-create":
        if not isinstance(body.get("name"), str) or not body["name"]:
            problems.append("body.name: a non-empty string expected")
        if not (isinstance(body.get("value"), str) or _is_number(body.get("value"))):
            problems.append("body.value: a number or a string expected")
    elif kind == "sdk-log" and "log" not in body:
        problems.append("body.log is required")
    return problems


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # a client that hangs up is not a test failure
        pass


class FakeLangfuse:
    """A Langfuse project's ingestion endpoint; `url` is the host to configure (no path)."""

    def __init__(self, public_key: str = "pk-lf-test", secret_key: str = "sk-lf-test") -> None:
        self.public_key = public_key
        self.secret_key = secret_key
        self.batches: list[list[dict]] = []  # each accepted request's valid events, in order
        self.requests: list[dict] = []  # every request: status, headers (no Authorization), size
        self.errors: list[dict] = []  # the per-event errors answered in 207s
        self.traces: set[str] = set()
        self.observations: set[str] = set()
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length <= BODY_LIMIT else None
                status, payload = outer._answer(self.path, dict(self.headers.items()), raw, length)
                self._send(status, payload)

            def do_GET(self) -> None:
                self._send(405, {"error": "MethodNotAllowedError", "message": "Method not allowed"})

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status == 413:
                    self.send_header("connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-langfuse",
                                       daemon=True)
        self.thread.start()

    # -- what the test controls and reads

    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """Answer the next `count` requests with `status`, without taking their events."""
        with self._lock:
            self._failures += [status] * count

    def events(self, type: str | None = None) -> list[dict]:
        """Every valid event taken so far, in order; only those of `type` when given."""
        with self._lock:
            return [e for batch in self.batches for e in batch if type is None or e["type"] == type]

    def bodies(self, type: str) -> list[dict]:
        return [e["body"] for e in self.events(type)]

    def wait_for(self, count: int, type: str | None = None, timeout: float = 10.0) -> list[dict]:
        """Block until at least `count` events (of `type`) were taken; they are returned.
        For tests against a running gateway, whose export happens in the background."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [e for batch in self.batches for e in batch if type is None or e["type"] == type]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fake Langfuse: {len(found)} of {count} {type or ''} events after "
                                       f"{timeout}s; requests: {[r['status'] for r in self.requests]}; "
                                       f"errors: {self.errors[:3]}")
                self._changed.wait(left)

    def close(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.thread.join(timeout=5)
        self.server.server_close()

    def __enter__(self) -> FakeLangfuse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- what the server does

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return user == self.public_key and password == self.secret_key

    def _answer(self, path: str, headers: dict[str, str], raw: bytes | None, length: int) -> tuple[int, dict]:
        lower = {k.lower(): v for k, v in headers.items()}
        seen = {k: v for k, v in lower.items() if k != "authorization"}
        with self._changed:
            status, payload = self._decide(path, lower, raw)
            self.requests.append({"path": path, "status": status, "headers": seen, "bytes": length})
            self._changed.notify_all()
        return status, payload

    def _decide(self, path: str, headers: dict[str, str], raw: bytes | None) -> tuple[int, dict]:
        if path.split("?")[0] != INGESTION_PATH:
            return 404, {"message": "Not found"}
        if self._failures:
            status = self._failures.pop(0)
            name = {401: "UnauthorizedError", 403: "ForbiddenError", 429: "TooManyRequests"}.get(status, "Error")
            return status, {"error": name, "message": "injected by the test"}
        if not self._authorized(headers.get("authorization")):
            return 401, {"error": "UnauthorizedError", "message": "Invalid credentials. Confirm that you've "
                                                                  "configured the correct host."}
        if raw is None:
            return 413, {"message": "Body exceeded 4.5mb limit"}
        if not headers.get("content-type", "").startswith("application/json"):
            return 400, {"message": "Invalid request data", "errors": ["content-type must be application/json"]}
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return 400, {"message": "Invalid request data", "errors": [str(exc)]}
        if not isinstance(body, dict) or not isinstance(body.get("batch"), list):
            return 400, {"message": "Invalid request data", "errors": ["batch: a list expected"]}
        successes, errors, taken = [], [], []
        for event in body["batch"]:
            problems = validate_event(event, self.traces, self.observations)
            event_id = event.get("id") if isinstance(event, dict) and isinstance(event.get("id"), str) else "unknown"
            if problems:
                errors.append({"id": event_id, "status": 400, "message": "Invalid request data",
                               "error": "; ".join(problems)})
                continue
            successes.append({"id": event_id, "status": 201})
            taken.append(event)
            kind, event_body = event["type"], event["body"]
            if kind == "trace-create" and event_body.get("id"):
                self.traces.add(event_body["id"])
            elif _TYPES[kind][1]:
                self.observations.add(event_body["id"])
        self.batches.append(taken)
        self.errors += errors
        return 207, {"successes": successes, "errors": errors}
