"""llmgw._core.embed / embed_batch: what the semantic cache relies on."""

from __future__ import annotations

import numpy as np
import pytest

from llmgw._core import EMBED_DEFAULT_DIM, embed, embed_batch

NEAR_DUPLICATES = [
    ("What is the capital of France? Please answer in one sentence.", "what is the capital of france please answer in one sentence"),
    ("Write a Python function that checks whether a string is a palindrome.", "Write a python function that checks whether a string is a palindrom"),
    ("Translate to German: I would like to book a table for two at seven tonight.", "Translate to German: I would like to book a table for two tonight at seven."),
    ("Explain the difference between TCP and UDP for a beginner, with examples.", "explain the difference between tcp and udp for a beginner with examples please"),
    ("How do I reverse a linked list in Java without using extra memory?", "How do I   reverse a linked-list in Java\nwithout using any extra memory?"),
    ("Give me 3 tips for better sleep; keep it short.", "Give me three tips for better sleep, keep it short"),
    ("Can you summarise this email for me: Hi team, the release is moved to Friday because QA found two blocking bugs.", "can you summarize this email for me: hi team, the release is moved to friday because QA found 2 blocking bugs"),
]

UNRELATED = [
    ("What is the capital of France? Please answer in one sentence.", "Write a Python function that checks whether a string is a palindrome."),
    ("Explain the difference between TCP and UDP for a beginner, with examples.", "List five fruits that are high in vitamin C."),
    ("Write a haiku about autumn leaves falling in the park.", "What is the time complexity of quicksort in the worst case and why?"),
    ("Give me a recipe for vegan chocolate chip cookies.", "Give me a summary of the French revolution."),
    ("Draft a polite reply declining the meeting invitation for Monday.", "Convert this SQL query to use a LEFT JOIN instead of a subquery."),
]


def cosine(a: str, b: str) -> float:
    return float(embed(a) @ embed(b))


@pytest.mark.parametrize(("a", "b"), NEAR_DUPLICATES)
def test_near_duplicate_prompts_land_above_0_9(a: str, b: str) -> None:
    assert cosine(a, b) >= 0.9


@pytest.mark.parametrize(("a", "b"), UNRELATED)
def test_unrelated_prompts_land_below_0_4(a: str, b: str) -> None:
    assert cosine(a, b) < 0.4


def test_a_semantic_cache_threshold_separates_the_two_groups() -> None:
    worst_near = min(cosine(a, b) for a, b in NEAR_DUPLICATES)
    best_far = max(cosine(a, b) for a, b in UNRELATED)
    assert worst_near - best_far > 0.4


def test_synonyms_and_translation_are_not_recognised() -> None:
    assert cosine("Buy a new car", "Purchase a brand-new automobile") < 0.5
    assert cosine("What is the weather like today?", "Quel temps fait-il aujourd'hui ?") < 0.3


def test_vector_is_float32_unit_length_with_default_dim() -> None:
    vector = embed("Hello there, how are you?")
    assert EMBED_DEFAULT_DIM == 384
    assert vector.dtype == np.float32
    assert vector.shape == (384,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_case_punctuation_whitespace_and_unicode_case_do_not_matter() -> None:
    np.testing.assert_array_equal(embed("Hello, World!"), embed("  hello   world "))
    np.testing.assert_array_equal(embed("ÉCOLE Straße"), embed("école straße"))


def test_text_without_words_embeds_to_zeros() -> None:
    for text in ["", "   ", "?!?! ... ---"]:
        assert not embed(text).any()


def test_output_is_deterministic_and_pinned() -> None:
    # same golden values as the cargo test: stored cache vectors stay valid across versions
    expected = [-298, 447, -447, -149, 149, 0, -149, -447, 0, -149, 0, 0, 447, 0, 149, 0]
    assert np.round(embed("The quick brown fox", dim=16) * 1000).astype(int).tolist() == expected


def test_dim_is_configurable_and_validated() -> None:
    assert embed("some text", dim=1024).shape == (1024,)
    for bad in (0, 65537):
        with pytest.raises(ValueError, match="dim"):
            embed("x", dim=bad)
    with pytest.raises(OverflowError):
        embed("x", dim=-1)


def test_batch_rows_equal_single_embeddings() -> None:
    texts = [a for a, _ in NEAR_DUPLICATES] + [""]
    batch = embed_batch(texts, dim=128)
    assert batch.shape == (len(texts), 128)
    assert batch.dtype == np.float32
    for text, row in zip(texts, batch):
        np.testing.assert_array_equal(row, embed(text, dim=128))
    assert embed_batch([]).shape == (0, 384)


def test_large_batch_that_releases_the_gil_matches_single_embeddings() -> None:
    texts = [f"prompt number {i}: " + "lorem ipsum dolor sit amet " * 20 for i in range(200)]
    batch = embed_batch(texts)
    for i in (0, 77, 199):
        np.testing.assert_array_equal(batch[i], embed(texts[i]))


def test_batch_rejects_non_strings() -> None:
    with pytest.raises(TypeError):
        embed_batch(["ok", 3])  # type: ignore[list-item]
