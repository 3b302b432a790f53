"""What the PII guardrail does to text: redact, mask or placeholder (reversibly) what the detector
found, and the rolling window that does the same to a streamed answer without holding it up.

The stream window holds back only the end of the text that could still grow into a match: the
trailing run of characters a PII value can contain (letters, digits, `._%+@:/=~-()[]`, and spaces
next to a digit or ending the text, as in card numbers, IBANs and phone numbers), capped at the
detector's `max_span`, plus an unterminated PEM private-key block. Everything before that is
final: a match that will ever end in text still to come must start inside the held tail, so the
released text can be scanned and redacted now. In ordinary prose the tail is the last word, so a
token is held until the next separator arrives.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

__all__ = ["Redactor", "StreamWindow", "mask"]

Match = tuple[str, int, int]  # (type, start, end)

_MEMBER = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+@:/=~-()[]")
_CONTEXT = 16  # released characters kept as the scanner's left context (word boundaries)
_PLACEHOLDER = re.compile(r"\[(EMAIL|PHONE|CARD|IBAN|SSN|IP|SECRET)_(\d+)\]")


def mask(kind: str, value: str) -> str:
    """Keep the shape, hide the value: e-mail `m***@example.com`, IP `***.***.***.12`, anything
    else every letter and digit but the last four as `*` (`**** **** **** 1111`)."""
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if kind == "ip":
        sep = ":" if ":" in value else "."
        head, _, last = value.rpartition(sep)
        return re.sub(r"[0-9A-Fa-f]", "*", head) + sep + last
    keep = 4
    out = []
    for ch in reversed(value):
        if ch.isalnum():
            out.append(ch if keep > 0 else "*")
            keep -= 1
        else:
            out.append(ch)
    return "".join(reversed(out))


class Redactor:
    """One request's PII actions: the mode, values allowed through, and (reversible) the
    placeholders sent upstream with the values they stand for."""

    __slots__ = ("mode", "allow", "reversible", "by_value", "by_placeholder", "found")

    def __init__(self, mode: str, allow: re.Pattern[str] | None = None, reversible: bool = False) -> None:
        self.mode = mode  # redact | mask | block | log
        self.allow = allow
        self.reversible = reversible
        self.by_value: dict[str, str] = {}
        self.by_placeholder: dict[str, str] = {}
        self.found: set[str] = set()  # types seen (for headers, metrics and the audit log)

    def relevant(self, text: str, matches: Iterable[Match]) -> list[Match]:
        """The matches not exempted by `allow`; their types are recorded."""
        allow = self.allow
        out = [m for m in matches if allow is None or not allow.search(text[m[1]:m[2]])]
        self.found.update(m[0] for m in out)
        return out

    def replacement(self, kind: str, value: str) -> str:
        if self.mode == "mask":
            return mask(kind, value)
        if not self.reversible:
            return f"[{kind.upper()}]"
        held = self.by_value.get(value)
        if held is None:
            held = f"[{kind.upper()}_{len(self.by_value) + 1}]"
            self.by_value[value] = held
            self.by_placeholder[held] = value
        return held

    def apply(self, text: str, matches: list[Match]) -> str:
        """`text` with each match replaced (redact/mask); unchanged for log and block."""
        if not matches or self.mode in ("log", "block"):
            return text
        parts, last = [], 0
        for kind, start, end in matches:
            parts.append(text[last:start])
            parts.append(self.replacement(kind, text[start:end]))
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def restore(self, text: str) -> str:
        """Placeholders this request sent upstream, back to their values (reversible redaction)."""
        if not self.by_placeholder or "[" not in text:
            return text
        table = self.by_placeholder
        return _PLACEHOLDER.sub(lambda m: table.get(m.group(0), m.group(0)), text)


def held_tail(text: str, max_span: int) -> int:
    """How many characters at the end of `text` could still be the start of a match."""
    n = len(text)
    i = n
    floor = max(0, n - max_span)
    while i > floor:
        c = text[i - 1]
        if c in _MEMBER or (c > "\x7f" and c.isalnum()):
            i -= 1
        elif c == " " and i >= 2 and _group_space(text, i, n):
            i -= 1
        else:
            break
    return n - i


_END_LINE = re.compile(r"-----END [A-Z0-9 ]*-----")
_PARTIAL_MARKER = re.compile(r"-{1,5}(?:B(?:E(?:G(?:I(?:N)?)?)?)?)?\Z")


def _marker_in_making(buf: str) -> int | None:
    """Where a PEM "-----BEGIN ... PRIVATE KEY-----" line that has not fully arrived may start:
    until it is whole the detector cannot know a key block is opening."""
    idx = buf.rfind("-----BEGIN")
    if idx >= 0 and _END_LINE.search(buf, idx) is None:
        return idx  # a block (or its BEGIN line) whose END line has not arrived
    m = _PARTIAL_MARKER.search(buf, max(0, len(buf) - 10))
    return m.start() if m is not None else None


def _group_space(text: str, i: int, n: int) -> bool:
    """Whether the space at text[i - 1] may sit inside a value made of groups: card and phone
    digits ("4111 1111", "(503) 555"), IBAN groups ("GB29 NWBK 6016"). A space between two
    ordinary words is not (so prose is held back one word at a time)."""
    if i < n and not (text[i].isalnum() or text[i] == "("):
        return False
    prev = text[i - 2]
    if prev in ")+":
        return True
    if not prev.isalnum():
        return False
    if i < n and text[i].isdigit():
        return True
    j = i - 2
    while j > 0 and text[j - 1].isalnum() and i - j < 8:
        j -= 1
    group = text[j:i - 1]
    return any(ch.isdigit() for ch in group) or (len(group) <= 4 and group.isupper())


class StreamWindow:
    """The rolling window over one streamed choice: `feed` each piece of text, get back what can
    be released now (scanned, acted on, placeholders restored); `flush` at the end."""

    __slots__ = ("find", "open_block", "max_span", "redactor", "output", "pending", "context", "blocked")

    def __init__(self, find: Callable[[str], list[Match]], open_block: Callable[[str], int | None],
                 max_span: int, redactor: Redactor, output: bool) -> None:
        self.find = find
        self.open_block = open_block
        self.max_span = max_span
        self.redactor = redactor
        self.output = output  # scan the answer (else only restore placeholders)
        self.pending = ""
        self.context = ""
        self.blocked = False  # block mode found PII: nothing more is released

    def feed(self, text: str) -> str:
        if self.blocked:
            return ""
        self.pending += text
        return self._release(final=False)

    def flush(self) -> str:
        return "" if self.blocked else self._release(final=True)

    def _release(self, final: bool) -> str:
        ctx_len = len(self.context)
        buf = self.context + self.pending
        matches = self.find(buf) if self.output else []
        cut = len(buf)
        if not final:
            cut -= held_tail(buf, self.max_span)
            if self.output:
                for opened in (self.open_block(buf), _marker_in_making(buf)):
                    if opened is not None:
                        cut = min(cut, opened)
            for _, start, end in matches:  # a match reaching into the held tail is held whole
                if end > cut:
                    cut = min(cut, start)
        cut = max(cut, ctx_len)
        inside = [m for m in matches if m[1] >= ctx_len and m[2] <= cut]
        red = self.redactor
        inside = red.relevant(buf, inside)
        if inside and red.mode == "block":
            cut = inside[0][1]
            self.blocked = True
            inside = []
        out = red.apply(buf[:cut], inside)[ctx_len:] if inside else buf[ctx_len:cut]
        self.pending = buf[cut:]
        self.context = buf[max(0, cut - _CONTEXT):cut]
        return red.restore(out)
