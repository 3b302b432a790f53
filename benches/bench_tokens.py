"""Token counting: llmgw (Rust) side by side with tiktoken and the bpe-openai package.

Run: pytest benches/bench_tokens.py --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds
(after `maturin develop --release`). Compare within a group: same inputs, same minute.
- short-prompts: 200 distinct English prompts of ~860 characters (<= 1,054 bytes) from the
  standard library's docstrings; one round counts all 200 (divide by 200 for per-prompt times).
- chat: 200 three-message chat requests, llmgw's count_chat_tokens against the cookbook's
  num_tokens_from_messages written in Python over tiktoken.
- 1mb: 999,999 characters of standard-library source. bpe-openai refuses inputs of over
  200,000 tokens (this one has ~234,000), so it encodes the two halves, split at a blank line.
- adversarial: 1 MB runs of one character and random Latin-1 (tiktoken overflows its stack on
  1 MB of spaces, so it only runs the inputs it survives).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tokens_corpus import random_latin1, short_prompts, stdlib_source  # noqa: E402

from llmgw import count_chat_tokens, count_tokens  # noqa: E402

PROMPTS = short_prompts(200)
CODE_1MB = stdlib_source(999_999)
ADVERSARIAL = {
    "a": "a" * 1_000_000,
    "spaces": " " * 1_000_000,
    "newlines": "\n" * 1_000_000,
    "emoji": "😀" * 250_000,
    "latin1": random_latin1(1_000_000),
}
CHATS = [
    [
        {"role": "system", "content": "You are a careful assistant. Answer briefly."},
        {"role": "user", "name": "analyst", "content": prompt},
        {"role": "assistant", "content": "Understood."},
    ]
    for prompt in PROMPTS
]


@pytest.fixture(scope="module")
def tiktoken_o200k(offline_tiktoken: ModuleType) -> Any:
    return offline_tiktoken.get_encoding("o200k_base")


@pytest.fixture(scope="module")
def bpe_openai_o200k() -> Any:
    with warnings.catch_warnings():  # bpe-openai loads its data with a deprecated importlib API
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        encoding = bpe_openai.get_encoding("o200k_base")
        encoding.encode_ordinary("warm up")
    return encoding


def count_all(count: Callable[[str], object]) -> Callable[[], None]:
    def run() -> None:
        for prompt in PROMPTS:
            count(prompt)

    return run


@pytest.mark.benchmark(group="short-prompts")
def test_short_llmgw(benchmark: Any) -> None:
    count_tokens("warm up")
    benchmark(count_all(count_tokens))


@pytest.mark.benchmark(group="short-prompts")
def test_short_tiktoken(benchmark: Any, tiktoken_o200k: Any) -> None:
    benchmark(count_all(tiktoken_o200k.encode_ordinary))


@pytest.mark.benchmark(group="short-prompts")
def test_short_bpe_openai(benchmark: Any, bpe_openai_o200k: Any) -> None:
    benchmark(count_all(bpe_openai_o200k.encode_ordinary))


@pytest.mark.benchmark(group="chat")
def test_chat_llmgw(benchmark: Any) -> None:
    def run() -> None:
        for messages in CHATS:
            count_chat_tokens(messages)

    benchmark(run)


@pytest.mark.benchmark(group="chat")
def test_chat_cookbook_tiktoken(benchmark: Any, tiktoken_o200k: Any) -> None:
    def num_tokens_from_messages(messages: list[dict[str, str]]) -> int:
        total = 0
        for message in messages:
            total += 3
            for key, value in message.items():
                total += len(tiktoken_o200k.encode(value))
                if key == "name":
                    total += 1
        return total + 3

    assert [num_tokens_from_messages(m) for m in CHATS[:5]] == [count_chat_tokens(m).tokens for m in CHATS[:5]]

    def run() -> None:
        for messages in CHATS:
            num_tokens_from_messages(messages)

    benchmark(run)


@pytest.mark.benchmark(group="1mb")
def test_1mb_llmgw(benchmark: Any) -> None:
    benchmark.pedantic(count_tokens, args=(CODE_1MB,), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="1mb")
def test_1mb_tiktoken(benchmark: Any, tiktoken_o200k: Any) -> None:
    benchmark.pedantic(tiktoken_o200k.encode_ordinary, args=(CODE_1MB,), rounds=5, warmup_rounds=1)


@pytest.mark.benchmark(group="1mb")
def test_1mb_bpe_openai(benchmark: Any, bpe_openai_o200k: Any) -> None:
    middle = CODE_1MB.index("\n\n", len(CODE_1MB) // 2)
    halves = (CODE_1MB[:middle], CODE_1MB[middle:])

    def run() -> None:
        for half in halves:
            bpe_openai_o200k.encode_ordinary(half)

    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
@pytest.mark.benchmark(group="adversarial")
def test_adversarial_llmgw(benchmark: Any, name: str) -> None:
    count_tokens("warm up")
    benchmark.pedantic(count_tokens, args=(ADVERSARIAL[name],), rounds=3)


@pytest.mark.parametrize("name", ["a", "emoji", "latin1"])
@pytest.mark.benchmark(group="adversarial")
def test_adversarial_tiktoken(benchmark: Any, tiktoken_o200k: Any, name: str) -> None:
    benchmark.pedantic(tiktoken_o200k.encode_ordinary, args=(ADVERSARIAL[name],), rounds=3)
