"""Guardrail detectors: the Rust engine (llmgw._core, rust/src/guard/) against the same detectors
in pure Python `re` (llmgw.guardrails.detect.PyPiiDetector / PyInjectionDetector: same patterns,
same validators), side by side in one run.

    maturin develop --release   # or --profile dev-opt
    python benches/bench_guard_detect.py

Cases: (a) PII find on a realistic 2 KB prompt without PII (the common case), (b) the same prompt
with 3 PII items, (c) a streamed window of max_span + 20 chars (a 20-char chunk plus the held-back
tail), (d) the injection score of the 2 KB prompt. Each figure is the median over repeats of a
timed loop (µs per call); the ratio is Python / Rust.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from llmgw.guardrails.detect import InjectionDetector, PiiDetector, PyInjectionDetector, PyPiiDetector

PROMPT = (
    "You are helping me prepare the quarterly operations review for our logistics team. Below are "
    "my rough notes from the last three weeks; please turn them into a clear, well-structured "
    "summary with headings, and keep the tone neutral and factual.\n\n"
    "1. Warehouse throughput rose from 11,200 to 12,850 parcels per day after the second sorter "
    "line went live on the 14th. The night shift still reports jams on line B roughly twice a week; "
    "maintenance thinks the photo-eye alignment drifts when the building heats up in the afternoon.\n"
    "2. On-time delivery for the northern routes was 94.1% (target 96%). Most misses cluster on "
    "Mondays, when the weekend backlog meets reduced driver availability. Dispatch proposed moving "
    "two drivers from the Friday late shift to Monday early; HR needs four weeks' notice for that.\n"
    "3. Returns processing: the new self-service portal cut average handling time from 9 to 6 "
    "minutes, but about 7% of customers still call the hotline because the label printing step "
    "fails on some mobile browsers. The web team has a fix scheduled for release 4.2 next sprint.\n"
    "4. Fleet: three vans are due for their annual inspection, and the electric van pilot (two "
    "vehicles) averaged 182 km per charge in cold weather, enough for the urban routes only.\n"
    "5. Costs: fuel spend was 3% under budget, overtime 11% over, mostly from the sorter outage.\n\n"
    "For each section, add one sentence on the risk if nothing changes and one concrete next step. "
    "Finish with a short list of decisions we need from management, ordered by urgency, and a "
    "table comparing this quarter with the previous one for throughput, on-time rate and overtime. "
    "Please avoid jargon where a plain word works, and keep the whole summary under 600 words so "
    "it fits on two pages when printed. If any of my numbers look inconsistent, point it out "
    "instead of silently correcting it, and suggest which figure you think is more likely right. "
    "Thanks a lot, this review goes to the regional director on Thursday morning and I would like "
    "to send a draft to my team lead by Wednesday noon for a first round of comments."
)
assert 1900 <= len(PROMPT) <= 2200, len(PROMPT)
WITH_PII = PROMPT.replace("HR needs four weeks' notice", "HR (hr.ops@example.com) needs notice", 1).replace(
    "the regional director", "the regional director (+44 20 7946 0958, card 4111 1111 1111 1111)", 1
)


def per_call_us(fn: Callable[[], object], repeats: int = 7, min_time: float = 0.2) -> float:
    """Median over `repeats` of a loop sized to run ~min_time seconds, in µs per call."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= min_time / 4:
            break
        n *= 2
    n = max(1, int(n * min_time / max(time.perf_counter() - t0, 1e-9)))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    rust, py = PiiDetector(), PyPiiDetector()
    rust_i, py_i = InjectionDetector(), PyInjectionDetector()
    assert rust.find(PROMPT) == py.find(PROMPT) == []
    assert len(rust.find(WITH_PII)) == 3 and rust.find(WITH_PII) == py.find(WITH_PII)
    window = WITH_PII[-(rust.max_span + 20):]
    assert rust.find(window) == py.find(window)
    assert rust_i.score(PROMPT) == py_i.score(PROMPT)

    cases = [
        ("(a) PII find, 2 KB prompt, no PII", lambda: rust.find(PROMPT), lambda: py.find(PROMPT)),
        ("(b) PII find, 2 KB prompt, 3 items", lambda: rust.find(WITH_PII), lambda: py.find(WITH_PII)),
        (f"(c) PII find, stream window {len(window)} chars", lambda: rust.find(window), lambda: py.find(window)),
        ("(c') open_block on that window", lambda: rust.open_block(window), lambda: py.open_block(window)),
        ("(d) injection score, 2 KB prompt", lambda: rust_i.score(PROMPT), lambda: py_i.score(PROMPT)),
    ]
    print(f"{'case':44s} {'Rust µs':>9s} {'Python re µs':>13s} {'ratio':>7s}")
    for name, r, p in cases:
        tr, tp = per_call_us(r), per_call_us(p)
        print(f"{name:44s} {tr:9.2f} {tp:13.2f} {tp / tr:6.1f}x")


if __name__ == "__main__":
    main()
