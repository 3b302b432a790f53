"""Detection engine for the guardrails: PII and secrets, prompt-injection scoring.

`PiiDetector` and `InjectionDetector` are the Rust implementations (`llmgw._core`, rust/src/guard/):
one `RegexSet` pass over the text, then only the candidate patterns that occur are run and their
candidates validated (Luhn, IBAN mod-97 and country length, SSN area/group/serial, IPv4/IPv6).
Construct once and share: they are immutable and thread-safe; scans of 32 KB and more release the GIL.

`PyPiiDetector` and `PyInjectionDetector` are the same detectors in pure Python `re` — the same
pattern and signature tables (read from the extension, so they cannot drift), the same validators
and normalisation rewritten in Python. They are the reference the agreement test and
benches/bench_guard_detect.py measure the Rust engine against, not something to deploy.

    PiiDetector(types=None).find(text) -> [(type, start, end)]   # str indices, sorted, non-overlapping
    PiiDetector.max_span / .open_block(text)                     # for stream scanners
    InjectionDetector(threshold=0.5).score(text) -> (score, families); .is_attack(text)
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from llmgw._core import InjectionDetector, PiiDetector

__all__ = [
    "PII_TYPES",
    "INJECTION_FAMILIES",
    "PiiDetector",
    "InjectionDetector",
    "PyPiiDetector",
    "PyInjectionDetector",
]

PII_TYPES = ("email", "phone", "card", "iban", "ssn", "ip", "secret")
INJECTION_FAMILIES = (
    "instruction_override", "role_play_system", "delimiter_escape", "encoded_payload",
    "prompt_leak", "tool_hijack", "multilingual",
)

# --- pure-Python reference: PII -----------------------------------------------------------------

_PRIORITY = {"secret": 0, "iban": 1, "card": 2, "email": 3, "ssn": 4, "phone": 5, "ip": 6}
_IBAN_LEN = dict(
    AD=24, AE=23, AL=28, AT=20, AZ=28, BA=20, BE=16, BG=22, BH=22, BR=29, BY=28, CH=21, CR=22, CY=28,
    CZ=24, DE=22, DK=18, DO=28, EE=20, EG=29, ES=24, FI=18, FO=18, FR=27, GB=22, GE=22, GI=23, GL=18,
    GR=27, GT=28, HR=21, HU=28, IE=22, IL=23, IQ=23, IS=26, IT=27, JO=30, KW=30, KZ=20, LB=28, LC=32,
    LI=21, LT=20, LU=20, LV=21, MC=27, MD=24, ME=22, MK=19, MR=27, MT=31, MU=30, NL=18, NO=15, PK=24,
    PL=28, PS=29, PT=25, QA=29, RO=24, RS=22, SA=24, SC=31, SE=24, SI=19, SK=24, SM=27, ST=25, SV=28,
    TL=23, TN=24, TR=26, UA=29, VA=22, VG=24, XK=20,
)
_NET_WORDS = ("ip", "dns", "address", "host", "ping", "server", "route", "gateway", "resolver", "subnet")
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
_PEM_BEGIN = "-----BEGIN "
_TOKEN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:+")


def luhn(digits: str) -> bool:
    total, double = 0, False
    for c in reversed(digits):
        if c not in _DIGITS:
            continue
        n = ord(c) - 48
        if double:
            n *= 2
            if n > 9:
                n -= 9
        total += n
        double = not double
    return total % 10 == 0


def iban_valid(s: str) -> bool:
    s = s.replace(" ", "")
    if len(s) < 5 or _IBAN_LEN.get(s[:2]) != len(s):
        return False
    rem = 0
    for c in s[4:] + s[:4]:
        if "0" <= c <= "9":
            rem = (rem * 10 + ord(c) - 48) % 97
        elif "A" <= c <= "Z":
            rem = (rem * 100 + ord(c) - 55) % 97
        else:
            return False
    return rem == 1


def ssn_valid(s: str) -> bool:
    if len(s) != 11 or s[3] != "-" or s[6] != "-":
        return False
    area, group, serial = s[:3], s[4:6], s[7:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def ipv4_valid(s: str) -> bool:
    parts = s.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p or len(p) > 3 or any(c not in _DIGITS for c in p) or (len(p) > 1 and p[0] == "0") or int(p) > 255:
            return False
    return True


def ipv6_valid(s: str) -> bool:
    head, need = s, 8
    if "." in s:
        colon = s.rfind(":")
        if colon < 0 or not ipv4_valid(s[colon + 1:]):
            return False
        head = s[:colon + 1]
        if head.endswith(":") and not head.endswith("::"):
            head = head[:-1]
        need = 6

    def ok(g: str) -> bool:
        return 1 <= len(g) <= 4 and all(c in _HEX for c in g)

    double = sum(1 for k in range(len(head) - 1) if head[k:k + 2] == "::")
    if double == 0:
        groups = head.split(":") if head else []
        return len(groups) == need and all(ok(g) for g in groups)
    if double == 1:
        h, t = head.split("::")
        groups = (h.split(":") if h else []) + (t.split(":") if t else [])
        return len(groups) < need and all(ok(g) for g in groups)
    return False


def _at(t: str, i: int) -> str:
    return t[i] if 0 <= i < len(t) else ""


def _num_bounds_ok(t: str, i: int, j: int) -> bool:
    b, a = _at(t, i - 1), _at(t, j)
    if b and (b in _WORD or b == "+"):
        return False
    if b in ("-", ".", "/") and b and _at(t, i - 2) in _DIGITS and _at(t, i - 2):
        return False
    if a and a in _WORD:
        return False
    if a in ("-", ".", "/") and a and _at(t, j + 1) in _DIGITS and _at(t, j + 1):
        return False
    return True


def _space_after_digit(t: str, i: int) -> bool:
    d = _at(t, i - 2)
    return _at(t, i - 1) == " " and d != "" and d in _DIGITS


def _check(name: str, t: str, i: int, j: int) -> tuple[int, int] | None:  # noqa: C901 - one branch per pattern, as in pii.rs
    s = t[i:j]
    if name == "email":
        local, _, dom = s.partition("@")
        while local.startswith("."):
            local, i = local[1:], i + 1
        if _at(t, i - 1) == ":":
            ws = max(t.rfind(c, 0, i) for c in " \t\n\r")
            if "://" in t[ws + 1:i]:
                return None
        if _at(t, j) == ":" and _at(t, j + 1) not in ("", " ", "\n"):
            return None
        if not local or len(local) > 64 or local.endswith(".") or ".." in local:
            return None
        if any(not lab or lab[0] == "-" or lab[-1] == "-" for lab in dom.split(".")):
            return None
        return None if j - i > 254 else (i, j)
    if name == "phone_intl":
        if not _num_bounds_ok(t, i, j) or j - i > 32:
            return None
        return (i, j) if 8 <= sum(c in _DIGITS for c in s) <= 15 else None
    if name in ("phone_nanp", "phone_trunk"):
        if not _num_bounds_ok(t, i, j) or _space_after_digit(t, i):
            return None
        if _at(t, j) == " " and _at(t, j + 1) and _at(t, j + 1) in _DIGITS:
            return None
        if name == "phone_trunk":
            if not 9 <= sum(c in _DIGITS for c in s) <= 11:
                return None
            if s[0] != "(" and s.count(" ") < 1 and s.count("-") < 2:
                return None
        return (i, j)
    if name == "card":
        if not _num_bounds_ok(t, i, j) or _space_after_digit(t, i):
            return None
        n = sum(c in _DIGITS for c in s)
        return (i, j) if 13 <= n <= 19 and s[0] != "0" and luhn(s) else None
    if name == "iban":
        if _at(t, i - 1) and _at(t, i - 1) in _WORD:
            return None
        length = _IBAN_LEN.get(s[:2])
        if length is None:
            return None
        k, cut = 0, None
        for x, c in enumerate(s):
            if c != " ":
                k += 1
                if k == length:
                    cut = x + 1
                    break
        if cut is None or (cut < len(s) and s[cut] != " "):
            return None
        j = i + cut
        if _at(t, j) and _at(t, j) in _WORD:
            return None
        return (i, j) if iban_valid(t[i:j]) else None
    if name == "ssn":
        return (i, j) if _num_bounds_ok(t, i, j) and ssn_valid(s) else None
    if name == "ipv4":
        b, a = _at(t, i - 1), _at(t, j)
        if b and (b in _WORD or b == "."):
            return None
        if a and a in _WORD:
            return None
        if a == "." and _at(t, j + 1) and _at(t, j + 1) in _DIGITS:
            return None
        octets = [int(p) for p in s.split(".")]
        if octets[0] < 10 and max(octets) < 32 and len(set(octets)) > 1:
            window = t[max(0, i - 40):i].lower()
            if not any(w in window for w in _NET_WORDS):
                return None
        return (i, j)
    if name == "ipv6":
        b = _at(t, i - 1)
        if b and (b in _WORD or b in ":."):
            return None
        while j > i and t[j - 1] == ".":
            j -= 1
        s = t[i:j]
        if _at(t, j) and _at(t, j) in _WORD:
            return None
        if not any(c in _DIGITS for c in s) or j - i > 45:
            return None
        if ipv6_valid(s):
            return (i, j)
        if s.endswith(":") and not s.endswith("::") and ipv6_valid(s[:-1]):
            return (i, j - 1)
        return None
    if name == "aws_secret":
        return (i, j)
    b, a = _at(t, i - 1), _at(t, j)
    if b and (b in _WORD or b == "-"):
        return None
    if name != "pem" and a and (a in _WORD or a == "-"):
        return None
    if name in ("openai", "anthropic"):
        body = s[3:]
    elif name == "stripe":
        body = s[8:]
    else:
        return (i, j)
    mixed = (any(c in _DIGITS for c in body) and any("A" <= c <= "Z" for c in body)
             and any("a" <= c <= "z" for c in body))
    return (i, j) if mixed else None


class PyPiiDetector:
    """PII detection in pure Python `re`: the reference for `PiiDetector` (same interface)."""

    def __init__(self, types: Iterable[str] | None = None) -> None:
        if types is None:
            selected = list(PII_TYPES)
        else:
            if isinstance(types, str):
                raise TypeError("types must be an iterable of type names, not a str")
            selected = []
            for name in types:
                if name not in PII_TYPES:
                    raise ValueError(f"unknown PII type {name!r}; known types: {', '.join(PII_TYPES)}")
                if name not in selected:
                    selected.append(name)
        self.types = [t for t in PII_TYPES if t in selected]
        self._patterns = []
        bounded = []
        for ty, name, rx, max_len in PiiDetector.patterns():
            if ty in selected:
                compiled = re.compile(rx, re.ASCII)
                self._patterns.append((ty, name, compiled, "v" in compiled.groupindex))
                if max_len is not None:
                    bounded.append(max_len)
        self._prefixes, marker = PiiDetector.open_prefixes()
        self._secrets = "secret" in selected
        self.max_span = max(bounded + ([marker] if self._secrets else []), default=0)

    def find(self, text: str) -> list[tuple[str, int, int]]:
        cands = []
        for ty, name, rx, has_v in self._patterns:
            for m in rx.finditer(text):
                span = _check(name, text, *m.span("v" if has_v else 0))
                if span is not None:
                    cands.append((ty, span[0], span[1]))
        cands.sort(key=lambda c: (c[1] - c[2], _PRIORITY[c[0]], c[1]))
        out: list[tuple[str, int, int]] = []
        for c in cands:
            if all(c[2] <= o[1] or c[1] >= o[2] for o in out):
                out.append(c)
        out.sort(key=lambda c: c[1])
        return out

    def open_block(self, text: str) -> int | None:
        if not self._secrets:
            return None
        best = None
        b = text.rfind(_PEM_BEGIN)
        if b >= 0:
            rest = text[b:]
            h = rest.find("PRIVATE KEY")
            if h >= 0:
                if "-----END " not in rest[h:]:
                    best = b
            elif len(rest.encode()) < PiiDetector.open_prefixes()[1]:
                best = b
        i = len(text)
        while i > 0 and text[i - 1] in _TOKEN:
            i -= 1
        if i < len(text):
            run = text[i:]
            for p in self._prefixes:
                start = 0
                while (k := run.find(p, start)) >= 0:
                    pos = i + k
                    if pos == 0 or text[pos - 1] not in _WORD:
                        best = pos if best is None else min(best, pos)
                        break
                    start = k + 1
        return best


# --- pure-Python reference: injection -----------------------------------------------------------

_ZERO_WIDTH = dict.fromkeys([*range(0x200B, 0x2010), 0x2060, 0xFEFF, 0x00AD, 0x180E])
_FULLWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_HOMOGLYPHS = str.maketrans({"а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x",
                             "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "ɡ": "g", "ӏ": "l",
                             '"': None, "\u201c": None, "\u201d": None, "\u00ab": None, "\u00bb": None,
                             "\u201e": None})
_SPELLED = re.compile(r"\b[a-z](?:[-.][a-z]){3,}\b", re.ASCII)
_BLANKS = re.compile(r"[ \t\r\f\v]+")
_LEET = str.maketrans("013457", "oieast")
_LEET_CHARS = frozenset("013457")
_LEET_TOKEN = re.compile(r"[a-z0-9]+")
_ROT13 = str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                       "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM")


def _normalize(text: str) -> str:
    t = text.translate(_ZERO_WIDTH).translate(_FULLWIDTH).lower().translate(_HOMOGLYPHS)
    t = _SPELLED.sub(lambda m: m.group(0).replace("-", "").replace(".", ""), t)
    return _BLANKS.sub(" ", t)


def _strong_leet(w: str) -> bool:
    for k, c in enumerate(w):
        if c in _LEET_CHARS and k + 1 < len(w) and "a" <= w[k + 1] <= "z" and (k == 0 or "a" <= w[k - 1] <= "z"):
            return True
    return False


def _leet_variant(n: str) -> tuple[str | None, int]:
    strong = sum(1 for m in _LEET_TOKEN.finditer(n) if _strong_leet(m.group(0)))
    if strong < 2:
        return None, strong

    def sub(m: re.Match[str]) -> str:
        w = m.group(0)
        return w.translate(_LEET) if any("a" <= c <= "z" for c in w) else w

    return _LEET_TOKEN.sub(sub, n), strong


def _printable(b: bytes) -> str | None:
    try:
        s = b.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not s:
        return None
    good = sum(1 for c in s if c.isalpha() or c in " .,'\"!?:-")
    return s if good * 5 >= len(s) * 4 else None


class PyInjectionDetector:
    """Injection scoring in pure Python `re`: the reference for `InjectionDetector`."""

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be within [0, 1], got {threshold}")
        self.threshold = threshold
        self._sigs = [(f, w, re.compile(rx, re.ASCII)) for f, w, rx in InjectionDetector.signatures()]
        patterns, self._leet_weight, self._decoded_weight = InjectionDetector.decoder_config()
        self._b64, self._hex, self._bin, self._ent, self._uesc, self._qp = (re.compile(p) for p in patterns)

    def _decoded(self, text: str, depth: int = 0) -> list[str]:
        out: list[str] = []
        for m in self._b64.finditer(text):
            s = m.group(0)
            s += "=" * (-len(s) % 4)
            try:
                raw = base64.b64decode(s, validate=True)
            except (binascii.Error, ValueError):
                continue
            p = _printable(raw)
            if p is not None:
                out.append(p)
                if depth < 1:
                    out.extend(self._decoded(p, depth + 1))
        for m in self._hex.finditer(text):
            p = _printable(bytes.fromhex(m.group(0)))
            if p is not None:
                out.append(p)
        for m in self._bin.finditer(text):
            bits = m.group(0).replace(" ", "")
            p = _printable(bytes(int(bits[k:k + 8], 2) for k in range(0, len(bits) - 7, 8)))
            if p is not None:
                out.append(p)
        for m in self._ent.finditer(text):
            out.append("".join(chr(int(x)) for x in re.findall(r"[0-9]+", m.group(0))))
        for m in self._uesc.finditer(text):
            out.append("".join(chr(int(x, 16)) for x in m.group(0).split("\\u") if x))
        for m in self._qp.finditer(text):
            out.append(m.group(0).replace("=20", " "))
        return out

    def score(self, text: str) -> tuple[float, list[str]]:
        sigs = self._sigs
        hits: dict[int, None] = {}

        def scan(s: str) -> bool:
            found = False
            for k, (_, _, rx) in enumerate(sigs):
                if rx.search(s):
                    found = True
                    hits.setdefault(k)
            return found

        n = _normalize(text)
        scan(n)
        extra: list[float] = []
        encoded = False
        leet, strong = _leet_variant(n)
        if leet is not None:
            scan(leet)
            if strong >= 3:
                extra.append(self._leet_weight)
                encoded = True
        if "rot13" in n or "rot-13" in n:
            scan(n.translate(_ROT13))
        decoded_hit = False
        for d in self._decoded(text):
            if scan(_normalize(d)):
                encoded = True
                if not decoded_hit:
                    decoded_hit = True
                    extra.append(self._decoded_weight)
        p, damp, fams = 1.0, 1.0, set()
        for k in hits:
            family, w, _ = sigs[k]
            if w < 0:
                damp *= 1.0 + w
            else:
                p *= 1.0 - w
                fams.add(family)
        for w in extra:
            p *= 1.0 - w
        if encoded:
            fams.add("encoded_payload")
        return (1.0 - p) * damp, sorted(fams)

    def is_attack(self, text: str) -> bool:
        return self.score(text)[0] >= self.threshold
