"""Behaviour knobs of the mock upstream: CLI defaults plus per-request header overrides.

Every knob is a field of :class:`MockOptions`. The server holds one instance built from the
command line (or from ``MockUpstream(**options)``); each request may override any field with an
``x-mock-*`` header, and the header wins. That lets one mock process play a healthy and a failing
deployment side by side: the gateway is configured with static per-upstream headers.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

HANG_MODES = ("before", "mid")
MALFORMED_MODES = ("body", "sse")


class OptionError(ValueError):
    """A knob has an invalid value (bad CLI flag, bad ``x-mock-*`` header)."""


@dataclass(frozen=True, slots=True)
class MockOptions:
    """How the mock answers. Defaults give an instant, healthy upstream.

    Text and usage rules (documented here because tests and translators rely on them):

    * The answer is ``"Echo:"`` followed by the words of the last user message (``"Echo: ..."``);
      with ``words`` set it is cut or cyclically extended to exactly that many words.
    * completion tokens = number of space-separated words generated (answer text, plus the JSON
      arguments of a tool call split on spaces). A stream carries ``chunk_words`` words per chunk.
    * prompt tokens = ceil(characters of all request text / 4), at least 1.
    """

    latency_ms: float = 0.0
    """Delay before the status line is written."""
    tokens_per_s: float = 0.0
    """Streaming pace in words per second; 0 streams as fast as possible."""
    chunk_words: int = 1
    """Words per streamed content chunk."""
    words: int | None = None
    """Answer length in words; None keeps the natural echo length."""
    status: int | None = None
    """Answer with this HTTP error status (provider's error body) with probability fail_rate."""
    fail_rate: float = 1.0
    """Probability that ``status`` is returned (only used when ``status`` is set)."""
    retry_after: float | None = None
    """Retry-After seconds sent with 429/503/529 errors."""
    hang: str | None = None
    """``"before"``: hang before the status line; ``"mid"``: hang after hang_after_chunks chunks."""
    hang_ms: float = 0.0
    """How long a hang lasts; 0 hangs until the client goes away."""
    hang_after_chunks: int = 1
    """Content chunks sent before a mid-stream hang."""
    cut_after_chunks: int | None = None
    """Close the connection after this many content chunks, with no terminator."""
    error_after_chunks: int | None = None
    """Send the provider's in-stream error event after this many content chunks, then end."""
    malformed: str | None = None
    """``"body"``: non-JSON body; ``"sse"``: an event whose data is not JSON (see faults.py)."""
    context_exceeded: bool = False
    """Answer with the provider's context-length-exceeded error."""
    context_tokens: int = 0
    """If > 0, prompts estimated above this many tokens get the context-length error."""
    embedding_dims: int = 1536
    """Embedding size when the request does not set ``dimensions``."""
    require_auth: bool = True
    """Reject requests without the provider's API key header (401/403 in its shape)."""
    api_key: str | None = None
    """If set, only this key is accepted; otherwise any non-empty key is."""
    seed: int | None = None
    """Seed for the fail_rate dice, for reproducible runs."""

    def with_overrides(self, headers: Mapping[str, str]) -> MockOptions:
        """Return a copy with every ``x-mock-*`` header applied (lower-case header names)."""
        changes: dict[str, Any] = {}
        for header, (field, parse) in HEADER_FIELDS.items():
            raw = headers.get(header)
            if raw is None:
                continue
            try:
                changes[field] = parse(raw.strip())
            except (ValueError, OptionError) as exc:
                raise OptionError(f"header {header}: {exc}") from None
        if not changes:
            return self
        return dataclasses.replace(self, **changes)


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if value < 0:
        raise OptionError(f"must be >= 0, got {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise OptionError(f"must be >= 1, got {raw!r}")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise OptionError(f"must be >= 0, got {raw!r}")
    return value


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse_or_none(raw: str) -> Any:
        return None if raw.lower() in ("", "none", "off") else parse(raw)

    return parse_or_none


def _status(raw: str) -> int:
    value = int(raw)
    if not 400 <= value <= 599:
        raise OptionError(f"must be an HTTP error status 400-599, got {raw!r}")
    return value


def _probability(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise OptionError(f"must be a probability 0..1, got {raw!r}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise OptionError(f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return parse


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise OptionError(f"must be true/false, got {raw!r}")


# header name -> (MockOptions field, parser). Auth, key, seed and embedding size are process-wide.
HEADER_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "x-mock-latency-ms": ("latency_ms", _non_negative_float),
    "x-mock-tokens-per-s": ("tokens_per_s", _non_negative_float),
    "x-mock-chunk-words": ("chunk_words", _positive_int),
    "x-mock-words": ("words", _optional(_positive_int)),
    "x-mock-status": ("status", _optional(_status)),
    "x-mock-fail-rate": ("fail_rate", _probability),
    "x-mock-retry-after": ("retry_after", _optional(_non_negative_float)),
    "x-mock-hang": ("hang", _optional(_choice(HANG_MODES))),
    "x-mock-hang-ms": ("hang_ms", _non_negative_float),
    "x-mock-hang-after-chunks": ("hang_after_chunks", _non_negative_int),
    "x-mock-cut-after-chunks": ("cut_after_chunks", _optional(_non_negative_int)),
    "x-mock-error-after-chunks": ("error_after_chunks", _optional(_non_negative_int)),
    "x-mock-malformed": ("malformed", _optional(_choice(MALFORMED_MODES))),
    "x-mock-context-exceeded": ("context_exceeded", _flag),
    "x-mock-context-tokens": ("context_tokens", _non_negative_int),
}


def _arg_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return parse(raw)
        except (ValueError, OptionError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the mock's flags (``--port``, ``--latency-ms``, ...) to an argparse parser."""
    defaults = MockOptions()
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="TCP port (0 picks a free one)")
    group = parser.add_argument_group(
        "behaviour (each flag is the default; an x-mock-<flag> request header overrides it)"
    )
    for header, (field, parse) in HEADER_FIELDS.items():
        flag = "--" + header.removeprefix("x-mock-")
        doc = MockOptions.__dataclass_fields__[field]
        if field == "context_exceeded":
            group.add_argument(flag, dest=field, action="store_true", help=_field_doc(field))
            continue
        group.add_argument(
            flag, dest=field, type=_arg_type(parse), default=doc.default, help=_field_doc(field)
        )
    group.add_argument("--embedding-dims", type=_arg_type(_positive_int),
                       default=defaults.embedding_dims, help=_field_doc("embedding_dims"))
    group.add_argument("--no-auth", dest="require_auth", action="store_false",
                       help="accept requests without any API key header")
    group.add_argument("--api-key", default=None, help=_field_doc("api_key"))
    group.add_argument("--seed", type=int, default=None, help=_field_doc("seed"))


_FIELD_DOCS = {
    "latency_ms": "delay before the status line, ms",
    "tokens_per_s": "streaming pace, words per second (0 = unpaced)",
    "chunk_words": "words per streamed chunk",
    "words": "answer length in words (default: echo of the last user message)",
    "status": "answer with this HTTP error status (provider's error body)",
    "fail_rate": "probability of returning --status (default 1)",
    "retry_after": "Retry-After seconds on 429/503/529",
    "hang": "hang 'before' headers or 'mid' stream",
    "hang_ms": "hang duration in ms (0 = until the client disconnects)",
    "hang_after_chunks": "content chunks sent before a mid-stream hang",
    "cut_after_chunks": "close the connection after K content chunks, no terminator",
    "error_after_chunks": "send the provider's in-stream error event after K chunks, then end",
    "malformed": "'body': invalid JSON body; 'sse': an event with invalid JSON data",
    "context_exceeded": "answer with the provider's context-length-exceeded error",
    "context_tokens": "context window: prompts estimated above it get that error (0 = off)",
    "embedding_dims": "embedding size when the request has no 'dimensions'",
    "api_key": "accept only this API key (default: any non-empty key)",
    "seed": "seed for --fail-rate dice",
}


def _field_doc(field: str) -> str:
    return _FIELD_DOCS[field]


def options_from_args(args: argparse.Namespace) -> MockOptions:
    """Build MockOptions from a namespace produced by a parser given :func:`add_arguments`."""
    names = {f.name for f in dataclasses.fields(MockOptions)}
    return MockOptions(**{k: v for k, v in vars(args).items() if k in names})
