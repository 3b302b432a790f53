"""llmgw.cache.nearmiss: each guard on hand-written pairs (none from the labelled set), the
paraphrases they must let through, and the figures benches/cache_quality.py reports on the
labelled set's heldout split, so that a regression fails here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgw._core import embed_batch
from llmgw.cache import defaults
from llmgw.cache.nearmiss import REASONS, SOFT_REASONS, NearMissGuard, analyse

PAIRS = Path(__file__).parent / "data" / "cache_pairs.jsonl"

guard = NearMissGuard()


def check(a: str, b: str) -> str | None:
    """The guard's verdict, asserted to be the same both ways round."""
    forward, backward = guard.check(a, b), guard.check(b, a)
    assert (forward is None) == (backward is None), (forward, backward)
    return forward


NEAR_MISSES = {
    "negation differs": [
        ("Is it safe to give dogs grapes?", "Is it not safe to give dogs grapes?"),
        ("Which countries require a visa for Americans?", "Which countries don't require a visa for Americans?"),
        ("Write a story where the hero wins.", "Write a story where the hero never wins."),
        ("List fruits that are acidic.", "List fruits that are non-acidic."),
        ("Is this a legal move in chess?", "Is this an illegal move in chess?"),
        ("Can I bring a power bank on a plane?", "Can't I bring a power bank on a plane?"),
        ("Welche Pilze sind essbar?", "Welche Pilze sind nicht essbar?"),
        ("Pourquoi le ciel est bleu ?", "Pourquoi le ciel n'est pas bleu ?"),
        ("¿Qué alimentos tienen gluten?", "¿Qué alimentos no tienen gluten?"),
        ("How do I zip a folder on Linux?", "How do I unzip a folder on Linux?"),  # un- undoes
    ],
    "numbers differ": [
        ("Split a bill of 120 euros between 4 people.", "Split a bill of 120 euros between 5 people."),
        ("Plan a trip to Rome for one week.", "Plan a trip to Rome for 2 weeks."),
        ("Recommend three books about sailing.", "Recommend 4 books about sailing."),
        ("What changed in HTML 4?", "What changed in HTML 5?"),
        ("Is 1,000 grams a kilogram?", "Is 100 grams a kilogram?"),
        ("What was the tallest building in 1930?", "What was the tallest building in 1931?"),
        ("Gib mir drei Ideen für ein Picknick.", "Gib mir fünf Ideen für ein Picknick."),
    ],
    "unit differs": [
        ("How many cups are in a liter?", "How many pints are in a liter?"),
        ("Convert 10 miles to kilometres.", "Convert 10 miles to metres."),
        ("How much is 50 euros in yen?", "How much is 50 euros in dollars?"),
        ("What is 90 kph in knots?", "What is 90 kph in mph?"),
    ],
    "entity differs": [
        ("Write a poem for Sarah's birthday.", "Write a poem for Maria's birthday."),
        ("Compare Postgres with MySQL for analytics.", "Compare Postgres with SQLite for analytics."),
        ("How do I parse a date string in Kotlin?", "How do I parse a date string in Scala?"),
        ("Who founded Nintendo?", "Who founded Sega?"),
        ("Summarize the history of jazz.", "Summarize the history of jazz in New Orleans."),  # a name added
    ],
    "order changed": [
        ("How do I turn a string into an int in Rust?", "How do I turn an int into a string in Rust?"),
        ("Does Alice owe Bob money?", "Does Bob owe Alice money?"),
        ("Subtract 7 from 10.", "Subtract 10 from 7."),
        ("Convert Celsius to Fahrenheit.", "Convert Fahrenheit to Celsius."),
        ("Is every poodle a dog?", "Is every dog a poodle?"),
        ("Map port 3000 on the host to port 80 in the container.", "Map port 80 on the host to port 3000 in the container."),
    ],
    "language differs": [
        ("Translate 'thank you' into Korean.", "Translate 'thank you' into Japanese."),
        ("Answer in French: what is a croissant?", "Answer in English: what is a croissant?"),
        ("Explain photosynthesis in simple terms.", "Explain photosynthesis in simple terms, in Spanish."),
        ("Erkläre mir den Satz des Pythagoras auf Englisch.", "Erkläre mir den Satz des Pythagoras auf Deutsch."),
        ("What time is it in Tokyo right now?", "Wie spät ist es gerade in Tokio?"),
    ],
    "tense differs": [
        ("Who is the CEO of Intel?", "Who was the CEO of Intel?"),
        ("What does the bakery on Main Street sell?", "What did the bakery on Main Street sell?"),
    ],
    "operator differs": [
        ("Solve 2x + 5 = 17.", "Solve 2x - 5 = 17."),
        ("Which values of x make x < 5 true?", "Which values of x make x > 5 true?"),
    ],
    "content word substituted": [
        ("How do I warm up before lifting?", "How do I cool down after lifting?"),
        ("Give me a word that starts with 'q'.", "Give me a word that ends with 'q'."),
        ("What is the largest moon of Saturn?", "What is the smallest moon of Saturn?"),
        ("Is coffee good for your heart?", "Is coffee bad for your heart?"),
        ("How do I mount a drive on Linux?", "How do I format a drive on Linux?"),
    ],
    "content word added": [
        ("Explain the causes of World War I.", "Explain the causes and consequences of World War I."),
        ("What are the symptoms of measles?", "What are the early symptoms of measles?"),
        ("Summarize the history of jazz.", "Summarize the history of jazz piano."),
    ],
}


@pytest.mark.parametrize(
    ("reason", "a", "b"), [(reason, a, b) for reason, pairs in NEAR_MISSES.items() for a, b in pairs]
)
def test_near_miss_is_rejected_for_its_reason(reason: str, a: str, b: str) -> None:
    assert reason in REASONS
    assert check(a, b) == reason


PARAPHRASES = [
    # case, punctuation, whitespace, typos
    ("What's the longest bridge in Japan?", "what is the longest bridge in japan"),
    ("How do I configure nginx as a reverse proxy?", "how do i configre nginx as a reverse  proxy"),
    ("Explain the Monty Hall problem.", "EXPLAIN THE MONTY HALL PROBLEM!!"),
    # politeness and the request's form
    ("Please list the planets in our solar system, thanks!", "List the planets in our solar system."),
    ("Hello! Could you tell me how a bill becomes a law in the US?", "How does a bill become a law in the US?"),
    ("Can you explain how vaccines work?", "Explain how vaccines work."),
    ("If it's not too much trouble, summarize this article in three bullet points.", "Summarize this article in 3 bullet points."),
    # a clause moved, coordinated items swapped
    ("In JavaScript, how do I sort an array of numbers?", "How do I sort an array of numbers in JavaScript?"),
    ("After the meeting, send the notes to the team.", "Send the notes to the team after the meeting."),
    ("Compare Python and Go for web servers.", "Compare Go and Python for web servers."),
    ("Which is healthier, brown rice or white rice?", "Which is healthier, white rice or brown rice?"),
    # the same number, negation or word written another way
    ("Give me 5 ideas for a birthday party.", "Give me five ideas for a birthday party."),
    ("Is 1,000 grams a kilogram?", "Is 1000 grams a kilogram?"),
    ("What is twenty five times four?", "What is 25 times 4?"),
    ("Is a price of 2.50 fair?", "Is a price of 2.5 fair?"),
    ("Plan a trip to Rome for one week.", "Plan a trip to Rome for 1 week."),
    ("Invest $10,000 at 5% a year: what do I have after 10 years?", "Invest 10,000 dollars at 5 percent a year: what do I have after 10 years?"),
    ("Why don't cats like water?", "Why do cats not like water?"),
    ("Which one is faster, a cheetah or a horse?", "Which is faster, a cheetah or a horse?"),
    ("Write an e-mail declining the invitation.", "Write an email declining the invitation."),
    ("What are good habits for planets-watching beginners?", "What are good habits for planet-watching beginners?"),
]


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_paraphrase_passes(a: str, b: str) -> None:
    assert check(a, b) is None


def test_identical_prompts_pass_and_the_empty_prompt_is_handled() -> None:
    assert check("Why is the sea salty?", "Why is the sea salty?") is None
    assert check("", "") is None
    assert check("", "Why is the sea salty?") == "content word added"


def test_prompts_in_two_languages_never_pass_and_say_so() -> None:
    assert check("How do I cancel my subscription?", "Wie kündige ich mein Abonnement?") == "language differs"
    assert check("Why is the sky blue?", "¿Por qué el cielo es azul?") == "language differs"
    # Same language, not English: the guards work as in English.
    assert check("Paris, Londres et Rome : quelle ville choisir ?", "paris londres et rome quelle ville choisir") is None
    assert check("Welche Stadt ist größer, Köln oder Bonn?", "Welche Stadt ist größer, Bonn oder Köln?") is None


def test_numbers_are_normalised() -> None:
    assert analyse("It costs 1,000 or 2.50 or 007").numbers == {"#1000": 1, "#2.5": 1, "#7": 1}
    assert analyse("two hundred and twenty five").numbers == {"#200": 1, "#25": 1}
    assert analyse("twenty five thousand").numbers == {"#25000": 1}
    assert analyse("1.000.000 Einwohner").numbers == {"#1000000": 1}
    # "one" is also a pronoun: never counted as an extra number of its own.
    assert analyse("Which one is faster?").numbers == {}
    assert analyse("Which one is faster?").soft_ones == 1


def test_contractions_and_negations_are_normalised() -> None:
    assert analyse("Why don't cats like water?").tokens == ("why", "do", "not", "cats", "like", "water")
    assert analyse("It cannot fail").tokens == ("it", "can", "not", "fail")
    assert analyse("Qu'est-ce que c'est ?").tokens[:2] == ("est", "ce")
    assert len(analyse("Ce n'est pas grave").negations) == 2  # ne ... pas


def test_check_on_analysed_shapes_agrees_with_check() -> None:
    a, b = "Convert a JSON file to CSV in Python.", "Convert a CSV file to JSON in Python."
    assert guard.check_shapes(analyse(a), analyse(b)) == guard.check(a, b) == "order changed"
    assert analyse(a) is analyse(a)  # memoised: a stored prompt is analysed once


PIECES = list("abcxyz ABC 0123456789 .,;:!?'’-+*/^=<>$%€()\n") + [
    "don't", " not ", "één", "ß", "東京", " one ", " five ", " twenty ", " hundred ", "1,000", "1.000.000", "n'", "Hi! ",
]
PROMPTISH = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(PROMPTISH, PROMPTISH)
def test_any_text_gets_a_known_verdict_and_itself_passes(a: str, b: str) -> None:
    assert guard.check(a, b) in (None, *REASONS)
    assert guard.check(a, a) is None


def test_soft_reasons_are_reasons() -> None:
    assert SOFT_REASONS <= set(REASONS)


# --- the labelled set ------------------------------------------------------------------------------
# Figures printed by `python benches/cache_quality.py` (and quoted in llmgw.cache.defaults); the
# guards and the defaults were chosen on split=tune. Improving them may raise the paraphrase
# counts (update these); a near-miss that starts to pass is a regression.

HELDOUT_LEXICAL = {"paraphrase_hits": 19, "near_miss_hits": 0, "paraphrases": 52, "near_misses": 52}
GUARDS_ALONE = {"tune": (72, 0), "heldout": (20, 0)}  # (paraphrases passed, near-misses passed) of 156 / 52


def labelled(split: str) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


@pytest.mark.parametrize("split", ["tune", "heldout"])
def test_guards_alone_on_the_labelled_set(split: str) -> None:
    rows = labelled(split)
    passed = [r for r in rows if guard.check(r["a"], r["b"]) is None]
    paraphrases = sum(r["label"] == "paraphrase" for r in passed)
    near_misses = sum(r["label"] == "near_miss" for r in passed)
    want_paraphrases, want_near_misses = GUARDS_ALONE[split]
    assert near_misses <= want_near_misses, [r["id"] for r in passed if r["label"] == "near_miss"]
    assert paraphrases >= want_paraphrases


def test_heldout_hit_rates_at_the_default_lexical_threshold() -> None:
    rows = labelled("heldout")
    a = embed_batch([r["a"] for r in rows])
    b = embed_batch([r["b"] for r in rows])
    cosine = np.einsum("ij,ij->i", a, b)
    hits = [r for r, c in zip(rows, cosine) if c >= defaults.LEXICAL_THRESHOLD and guard.check(r["a"], r["b"]) is None]
    paraphrases = sum(r["label"] == "paraphrase" for r in rows)
    near_misses = len(rows) - paraphrases
    assert (paraphrases, near_misses) == (HELDOUT_LEXICAL["paraphrases"], HELDOUT_LEXICAL["near_misses"])
    near_miss_hits = [r["id"] for r in hits if r["label"] == "near_miss"]
    assert len(near_miss_hits) <= HELDOUT_LEXICAL["near_miss_hits"], near_miss_hits
    assert len(near_miss_hits) / near_misses <= 0.01  # the target
    assert sum(r["label"] == "paraphrase" for r in hits) >= HELDOUT_LEXICAL["paraphrase_hits"]
