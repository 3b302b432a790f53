"""Test and benchmark texts for token counting, built offline from the standard library.

English prose comes from the standard library's docstrings, code from its sources; CJK, emoji
and mixed-script samples are written here; the rest is generated (runs, random text).
"""

from __future__ import annotations

import importlib
import inspect
import random
import warnings
from pathlib import Path

CJK = (
    "自然语言处理是人工智能的一个重要分支，它研究如何让计算机理解和生成人类语言。"
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。ひらがなとカタカナも使います。"
    "한국어는 한글로 표기하며, 세종대왕이 1443년에 창제하였습니다. 서울은 대한민국의 수도입니다."
)
EMOJI = (
    "Great job! 🎉🎉 Family: 👩‍👩‍👧‍👦 skin tones 👍🏽👍🏿 flags 🇫🇷🇯🇵🇧🇷 keycap 1️⃣ "
    "heart ❤️‍🔥 text-style ☺︎ and 😀😃😄😁😆😅🤣😂🙂🙃 in a row."
)
MIXED_SCRIPTS = (
    "English, Ελληνικά (ΑΒΓ αβγ), Русский ТЕКСТ и текст, العربية ١٢٣ مرحبا، עברית שלום, "
    "हिन्दी में नमस्ते, ภาษาไทยสวัสดี, Tiếng Việt có dấu, ǅemal ǈubljana, café naïve "
    "Zoë Ⅻ ½ ² ſ 'ſ 'S 'RE 'Ll, combining: e\u0301 a\u0300\u0316 \u0301start, "
    "spaces:\u00a0\u2003\u3000|tabs\t\t|CRLF\r\n\r\n|ls\u2028ps\u2029|zwsp\u200b|bom\ufeff."
)
WHITESPACE_MIX = "a \n \n\n  b\t\n\tc   \r\n   d\n\n\n    e  \n  "


def stdlib_docstrings(limit_chars: int) -> list[str]:
    """English prose: docstrings of standard-library modules, classes and functions."""
    names = (
        "collections argparse subprocess pathlib threading json textwrap functools dataclasses "
        "logging shutil tarfile zipfile asyncio.events asyncio.tasks asyncio.streams email.message "
        "http.client http.server urllib.request unittest.case configparser csv difflib enum heapq "
        "inspect optparse pydoc random statistics string tempfile datetime decimal fractions "
        "ipaddress locale mailbox pickle pprint sched selectors smtplib socket socketserver ssl "
        "xml.dom.minidom xml.etree.ElementTree zoneinfo imaplib ftplib"
    ).split()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = [importlib.import_module(name) for name in names]
    docs: list[str] = []
    seen: set[str] = set()
    total = 0
    for module in modules:
        for obj in [module, *vars(module).values()]:
            if not (inspect.isclass(obj) or inspect.isfunction(obj) or obj is module):
                continue
            doc = inspect.getdoc(obj)
            if doc and len(doc) > 80 and doc not in seen:
                seen.add(doc)
                docs.append(doc)
                total += len(doc)
                if total >= limit_chars:
                    return docs
    return docs


def stdlib_source(limit_chars: int) -> str:
    """Code: concatenated standard-library sources, cut at `limit_chars`."""
    lib = Path(inspect.getfile(inspect)).parent
    parts: list[str] = []
    total = 0
    for path in sorted(lib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        total += len(text)
        if total >= limit_chars:
            break
    return "".join(parts)[:limit_chars]


def random_latin1(n: int, seed: int = 7) -> str:
    """Random bytes read as Latin-1: controls, symbols, letters and digits in any order."""
    return random.Random(seed).randbytes(n).decode("latin-1")


def short_prompts(count: int = 300, size: int = 1024) -> list[str]:
    """Distinct English chat prompts of about `size` characters (all <= 2 KB)."""
    prompts: list[str] = []
    for doc in stdlib_docstrings(count * size * 2):
        for start in range(0, len(doc), size):
            chunk = doc[start : start + size]
            if len(chunk) >= size // 2:
                prompts.append(chunk)
            if len(prompts) == count:
                return prompts
    return prompts


def corpus() -> dict[str, str]:
    """Named texts covering scripts, code, runs and sizes from 1 byte to 1 MB."""
    english = "\n\n".join(stdlib_docstrings(200_000))
    code = stdlib_source(1_000_000)
    texts = {
        "one-byte": "a",
        "empty": "",
        "english-1k": english[:1000],
        "english-200k": english[:200_000],
        "code-10k": code[:10_000],
        "code-1m": code,
        "cjk": CJK * 3,
        "emoji": EMOJI * 3,
        "mixed-scripts": MIXED_SCRIPTS * 2,
        "whitespace-mix": WHITESPACE_MIX * 20,
        "json": '{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi\\nthere"}], "n": 1}',
        "run-a-5k": "a" * 5000,
        "run-A-5k": "A" * 5000,
        "run-digits-5k": "7" * 5000,
        "run-spaces-5k": " " * 5000,
        "run-spaces-then-word": " " * 3000 + "word",
        "run-newlines-5k": "\n" * 5000,
        "run-crlf-2k": "\r\n" * 2000,
        "run-tabs-newlines": "\t\n " * 1500,
        "run-emoji-2k": "😀" * 2000,
        "run-cjk-3k": "中" * 3000,
        "run-combining": "e" + "\u0301" * 3000,
        "run-punct-3k": "!" * 3000,
        "run-apostrophes": "'s" * 2000,
        "run-slashes": "/\n" * 2000,
        "random-latin1-50k": random_latin1(50_000),
        # Pieces either side of the 256-byte switch from the scan merge to the bucketed one.
        "pieces-near-256-bytes": " ".join(
            ["a" * n for n in (255, 256, 257)]
            + ["".join(random.Random(n).choices("abcdefghijklmnopqrstuvwxyz", k=n)) for n in (200, 255, 256, 400)]
            + ["é" * n for n in (127, 128, 129)]
        ),
        "utf8-size-mix": ("aé中😀" * 250_000)[:1_000_000],
    }
    return texts
