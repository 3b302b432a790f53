"""SSE micro-benchmarks: llmgw._core's SseParser / StreamTap against the best pure-Python
equivalents (written below as the baseline), on a recorded-shape OpenAI stream.

Run (release build first: `maturin develop --release`):
    pytest benches/bench_sse.py -s --benchmark-only

Prints, per case, GB/s for both implementations (median and best round), the Rust/Python speed
ratio and the cost of one feed() call; the raw figures go to bench-results/sse.json.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from llmgw._core import SseParser, StreamTap

# --- the recorded stream ---------------------------------------------------------------------

HEAD = (
    '"id":"chatcmpl-AbC123XyZ789","object":"chat.completion.chunk","created":1732000000,'
    '"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_0ba0d124f1"'
)
TOKENS = (
    "The", " gateway", " forwards", " each", " event", " as", " it", " arrives", ",", " and",
    " counts", " tokens", " on", " the", " way", ".", " 你好", "世界", " 🚀", "\n\n", " `code`",
    ' "quoted"', " über", "-", "fast", " streaming",
)


def recorded_stream(events: int = 200, seed: int = 7) -> bytes:
    """~200 chat.completion.chunk events as OpenAI sends them with include_usage: role chunk,
    content deltas (`"usage":null` on each), finish chunk, usage chunk, [DONE]."""
    rng = random.Random(seed)
    out: list[bytes] = []

    def add(delta: str, finish: str = "null") -> None:
        out.append(
            f'data: {{{HEAD},"choices":[{{"index":0,"delta":{delta},"logprobs":null,'
            f'"finish_reason":{finish}}}],"usage":null}}\n\n'.encode()
        )

    add('{"role":"assistant","content":"","refusal":null}')
    for _ in range(events - 4):
        add('{"content":%s}' % json.dumps(rng.choice(TOKENS), ensure_ascii=False))
    add("{}", '"stop"')
    usage = (
        '{"prompt_tokens":1117,"completion_tokens":196,"total_tokens":1313,'
        '"prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},'
        '"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,'
        '"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}'
    )
    out.append(f'data: {{{HEAD},"choices":[],"usage":{usage}}}\n\n'.encode())
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


def network_chunks(stream: bytes, seed: int = 11) -> list[bytes]:
    """Cut the stream like socket reads do: 100-300 bytes, blind to event boundaries."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(stream):
        step = rng.randint(100, 300)
        chunks.append(stream[pos : pos + step])
        pos += step
    return chunks


STREAM = recorded_stream()
CHUNKS = network_chunks(STREAM)
ONE_MB = STREAM * (1_048_576 // len(STREAM) + 1)

# --- the pure-Python baselines -----------------------------------------------------------------


class PySseParser:
    """The fastest pure-Python WHATWG SSE parser we could write: one buffer join per chunk,
    rfind for the last line end, C-level bytes.splitlines (which splits on exactly CR, LF and
    CRLF), per-line partition, decode once per event. Events are plain tuples
    (event, data, id, retry): cheaper than any class, so the baseline gets every advantage."""

    __slots__ = ("_tail", "_after_cr", "_bom_done", "_data", "_event", "_id", "_retry")

    def __init__(self) -> None:
        self._tail = b""
        self._after_cr = False
        self._bom_done = False
        self._data: list[bytes] = []
        self._event = b""
        self._id: bytes | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[tuple[str | None, str, str | None, int | None]]:
        buf = self._tail + chunk if self._tail else chunk
        if self._after_cr and buf:
            self._after_cr = False
            if buf[0] == 10:
                buf = buf[1:]
        if not self._bom_done:
            if len(buf) < 3 and b"\xef\xbb\xbf".startswith(buf):
                self._tail = buf
                return []
            self._bom_done = True
            if buf.startswith(b"\xef\xbb\xbf"):
                buf = buf[3:]
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
        if cut == 0:
            self._tail = buf
            return []
        self._tail = buf[cut:]
        self._after_cr = buf[cut - 1] == 13 and cut == len(buf)
        out = []
        data = self._data
        for line in buf[:cut].splitlines():
            if not line:
                if data:
                    event = self._event.decode("utf-8", "replace") if self._event else None
                    ident = self._id.decode("utf-8", "replace") if self._id is not None else None
                    out.append((event, b"\n".join(data).decode("utf-8", "replace"), ident, self._retry))
                    data.clear()
                self._event = b""
                self._retry = None
                continue
            if line[0] == 58:  # ":" comment
                continue
            name, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                self._event = value
            elif name == b"id":
                if b"\x00" not in value:
                    self._id = value
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
        return out


class PyStreamTap:
    """Pure-Python StreamTap: same line rules, tracks the last event boundary via
    splitlines(keepends=True) lengths, and orjson-parses only events whose bytes show a
    non-null finish_reason/usage/error (compact-JSON checks) or the first model."""

    __slots__ = ("_pending", "_scanned", "_after_cr", "_data", "_idle", "collect_text", "events", "done",
                 "usage", "finish_reason", "model", "text", "error")

    def __init__(self, collect_text: bool = False) -> None:
        self._pending = b""
        self._scanned = 0
        self._after_cr = False
        self._data: list[bytes] = []
        self._idle = True
        self.collect_text = collect_text
        self.events = 0
        self.done = False
        self.usage: tuple[int, int, int, int | None] | None = None
        self.finish_reason: str | None = None
        self.model: str | None = None
        self.text = ""
        self.error: str | None = None

    def feed(self, chunk: bytes) -> bytes:
        buf = self._pending + chunk if self._pending else chunk
        start = self._scanned  # bytes of _pending already split into lines
        if self._after_cr and start < len(buf):
            self._after_cr = False
            if buf[start] == 10:
                start += 1
        cut = max(buf.rfind(b"\n"), buf.rfind(b"\r")) + 1
        if cut <= start:
            self._pending, self._scanned = buf, start
            return b""
        self._after_cr = buf[cut - 1] == 13 and cut == len(buf)
        boundary = -1
        pos = start
        data = self._data
        for raw in buf[start:cut].splitlines(keepends=True):
            pos += len(raw)
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    self._observe(b"\n".join(data))
                    data.clear()
                self._idle = True
                boundary = pos
            elif line[0] == 58:
                if self._idle:
                    boundary = pos
            else:
                self._idle = False
                if line.startswith(b"data:"):
                    value = line[5:]
                    data.append(value[1:] if value[:1] == b" " else value)
                elif line == b"data":
                    data.append(b"")
        if boundary < 0:
            self._pending, self._scanned = buf, cut
            return b""
        self._pending, self._scanned = buf[boundary:], cut - boundary
        return buf[:boundary]

    def _observe(self, data: bytes) -> None:
        self.events += 1
        if data == b"[DONE]":
            self.done = True
            return
        if not (
            self.collect_text
            or (self.model is None and b'"model"' in data)
            or b'"finish_reason":"' in data
            or b'"usage":{' in data
            or b'"error":{' in data
        ):
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if self.model is None and isinstance(obj.get("model"), str):
            self.model = obj["model"]
        usage = obj.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details") or {}
            self.usage = (
                usage.get("prompt_tokens", 0),
                usage.get("completion_tokens", 0),
                usage.get("total_tokens", 0),
                details.get("cached_tokens"),
            )
        for choice in obj.get("choices") or ():
            if choice.get("finish_reason") is not None:
                self.finish_reason = choice["finish_reason"]
            if self.collect_text and choice.get("index", 0) == 0:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    self.text += content
        if obj.get("error") is not None:
            self.error = data.decode("utf-8", "replace")


# --- correctness of the comparison (not timed) -----------------------------------------------


def test_baselines_agree_with_rust() -> None:
    parser = SseParser()
    rust = [(e.event, e.data, e.id, e.retry) for c in CHUNKS for e in parser.feed(c)]
    python_parser = PySseParser()
    python = [e for c in CHUNKS for e in python_parser.feed(c)]
    assert rust == python and len(rust) == 200
    for collect_text in (False, True):
        tap, py_tap = StreamTap(collect_text), PyStreamTap(collect_text)
        out = [tap.feed(c) for c in CHUNKS]
        py_out = [py_tap.feed(c) for c in CHUNKS]
        assert out == py_out
        facts = ("events", "done", "usage", "finish_reason", "model", "text", "error")
        assert [getattr(tap, f) for f in facts] == [getattr(py_tap, f) for f in facts]
        assert tap.usage == (1117, 196, 1313, 1024)


# --- timed cases -----------------------------------------------------------------------------

RESULTS: dict[str, dict[str, float]] = {}


def parse_chunks(make: Callable[[], SseParser | PySseParser], chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        parser = make()
        for chunk in chunks:
            parser.feed(chunk)

    return run


def tap_chunks(make: Callable[[], StreamTap | PyStreamTap], chunks: list[bytes]) -> Callable[[], None]:
    def run() -> None:
        tap = make()
        for chunk in chunks:
            tap.feed(chunk)

    return run


CASES: dict[str, tuple[Callable[..., Callable[[], None]], dict[str, Callable[[], object]], list[bytes]]] = {
    "parser/chunks": (parse_chunks, {"rust": SseParser, "python": PySseParser}, CHUNKS),
    "parser/1MB": (parse_chunks, {"rust": SseParser, "python": PySseParser}, [ONE_MB]),
    "tap/chunks": (tap_chunks, {"rust": StreamTap, "python": PyStreamTap}, CHUNKS),
    "tap/1MB": (tap_chunks, {"rust": StreamTap, "python": PyStreamTap}, [ONE_MB]),
    "tap+text/chunks": (
        tap_chunks,
        {"rust": lambda: StreamTap(collect_text=True), "python": lambda: PyStreamTap(collect_text=True)},
        CHUNKS,
    ),
}


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """After the timed cases, print GB/s (from the median round, and from the best round: this
    2-core machine is shared, so the median carries other processes' load) and the ratio."""
    yield
    if not RESULTS:
        return
    head = f"\n{'case':<17}{'impl':<8}{'GB/s med':>9}{'GB/s best':>10}{'µs/feed med':>12}{'rust/py med':>12}{'rust/py best':>13}"
    lines = [head]
    for key in CASES:
        row = RESULTS.get(key, {})
        if "rust_median" not in row or "python_median" not in row:
            continue
        for impl in ("rust", "python"):
            median, best = row[f"{impl}_median"], row[f"{impl}_min"]
            ratios = (
                f"{row['python_median'] / row['rust_median']:>11.1f}x{row['python_min'] / row['rust_min']:>12.1f}x"
                if impl == "rust"
                else ""
            )
            lines.append(
                f"{key:<17}{impl:<8}{row['bytes'] / median / 1e9:>9.3f}{row['bytes'] / best / 1e9:>10.3f}"
                f"{median / row['feeds'] * 1e6:>12.2f}{ratios}"
            )
    print("\n".join(lines))
    out = Path("bench-results")
    out.mkdir(exist_ok=True)
    (out / "sse.json").write_text(json.dumps(RESULTS, indent=2))


@pytest.mark.parametrize("impl", ["rust", "python"])
@pytest.mark.parametrize("case", list(CASES))
def test_throughput(benchmark, case: str, impl: str) -> None:  # type: ignore[no-untyped-def]
    build, makers, chunks = CASES[case]
    benchmark.extra_info["bytes"] = sum(map(len, chunks))
    benchmark(build(makers[impl], chunks))
    if benchmark.stats is not None:
        row = RESULTS.setdefault(case, {"bytes": sum(map(len, chunks)), "feeds": len(chunks)})
        row[f"{impl}_median"] = benchmark.stats.stats.median
        row[f"{impl}_min"] = benchmark.stats.stats.min
