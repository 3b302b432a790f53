"""embed (Rust) vs the same hashed n-gram embedding in Python + numpy, side by side in one run.

    maturin develop --release && pytest benches/bench_embed.py --benchmark-group-by=group
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from llmgw._core import embed, embed_batch

PROMPT_200 = (
    "You are a helpful assistant. Summarize the following support ticket in two sentences and "
    "please classify its urgency as low, medium or high: The customer cannot log in since Tuesday's app update."
)
assert 190 <= len(PROMPT_200) <= 210

_WORD = re.compile(r"[^\W_]+")


def python_embed(text: str, dim: int = 384) -> np.ndarray:
    """The fastest plain-Python equivalent: regex words, str slicing for n-grams, the built-in
    (C) str hash, and one numpy bincount for the signed scatter."""
    words = _WORD.findall(text.replace("'", "").replace("\u2019", "").lower())
    features: list[str] = []
    weights: list[float] = []
    for word in words:
        padded = f"<{word}>"
        for n in (3, 4, 5):
            features.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
        weights.extend([1.0] * (len(features) - len(weights)))
        features.append("w " + word)
        weights.append(2.0)
    features.extend(f"b {a} {b}" for a, b in zip(words, words[1:]))
    weights.extend([1.0] * (len(features) - len(weights)))
    hashes = np.fromiter((hash(f) for f in features), dtype=np.int64, count=len(features)).view(np.uint64)
    index = ((hashes >> np.uint64(32)) * np.uint64(dim)) >> np.uint64(32)
    signed = np.where(hashes & np.uint64(1), -1.0, 1.0) * np.asarray(weights)
    vector = np.bincount(index.astype(np.intp), weights=signed, minlength=dim).astype(np.float32)
    norm = np.linalg.norm(vector)
    return vector / norm if norm else vector


def test_python_baseline_behaves_like_the_rust_embedder() -> None:
    a, b = PROMPT_200, PROMPT_200.upper().replace(",", "")
    assert float(python_embed(a) @ python_embed(b)) > 0.99
    assert float(embed(a) @ embed(b)) > 0.99


@pytest.mark.benchmark(group="embed: one 200-char prompt, dim 384")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_embed_200_char_prompt(benchmark, impl: str) -> None:
    fn = embed if impl == "rust" else python_embed
    vector = benchmark(fn, PROMPT_200)
    assert vector.shape == (384,)


@pytest.mark.benchmark(group="embed: batch of 256 prompts, dim 384")
@pytest.mark.parametrize("impl", ["rust", "python"])
def test_embed_batch_256(benchmark, impl: str) -> None:
    texts = [f"{i}: {PROMPT_200}" for i in range(256)]
    if impl == "rust":
        result = benchmark(embed_batch, texts)
    else:
        result = benchmark(lambda: np.stack([python_embed(t) for t in texts]))
    assert result.shape == (256, 384)
