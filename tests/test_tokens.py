"""llmgw token counting against tiktoken (the reference), and the chat/tools/image formulas."""

from __future__ import annotations

import base64
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokens_corpus import CJK, EMOJI, MIXED_SCRIPTS, corpus, random_latin1

import llmgw
from llmgw import TokenCount, context_window, count_chat_tokens, count_tokens

ENCODINGS = ["o200k_base", "cl100k_base"]
CORPUS = corpus()


@pytest.fixture(scope="module")
def reference(offline_tiktoken: ModuleType) -> dict[str, Any]:
    return {name: offline_tiktoken.get_encoding(name) for name in ENCODINGS}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_counts_equal_tiktoken_on_corpus(reference: dict[str, Any], encoding: str, name: str) -> None:
    text = CORPUS[name]
    assert count_tokens(text, encoding) == len(reference[encoding].encode_ordinary(text))


# Characters that make the pre-tokeniser's alternatives interact: cases, marks, contractions,
# digits, symbols, every kind of whitespace, '/', and a few scripts.
TRICKY = list("aAzZ'sStTdDlLvVeErRmM0123456789 \t\n\r/.,!?-_()[]{}\"#") + [
    "\u0301", "\u0300", "ſ", "ǅ", "ʰ", "中", "ひ", "한", "ı", "İ", "ß", "Ω", "\u00a0", "\u2003",
    "\u3000", "\u2028", "\u200b", "😀", "👍🏽", "\u200d", "٣", "Ⅻ", "½", "\x0b", "\x0c", "\x85",
]
tricky_text = st.lists(st.sampled_from(TRICKY), max_size=80).map("".join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), tricky_text))
def test_counts_equal_tiktoken_on_generated_text(reference: dict[str, Any], text: str) -> None:
    for encoding in ENCODINGS:
        assert count_tokens(text, encoding) == len(reference[encoding].encode_ordinary(text)), encoding


def test_lone_surrogates_count_as_tiktoken_counts_them(reference: dict[str, Any]) -> None:
    for text in ["a\ud800b", "pair \ud83d\ude00 and lone \udfff", "\ud800" * 10]:
        assert count_tokens(text) == len(reference["o200k_base"].encode_ordinary(text)), repr(text)
    message_text = count_chat_tokens([{"role": "user", "content": "x\ud800"}]).tokens
    assert message_text == count_chat_tokens([{"role": "user", "content": "x\ufffd"}]).tokens


def test_special_token_text_counts_as_plain_text(reference: dict[str, Any]) -> None:
    text = "<|endoftext|> and <|im_start|>"
    assert count_tokens(text) == len(reference["o200k_base"].encode_ordinary(text)) > 3


def test_megabyte_runs_match_the_linear_time_reference() -> None:
    # tiktoken's merge is quadratic on one huge piece (1 MB of "a" never finishes), so runs of
    # one character are checked against the bpe-openai package, whose encoder is linear
    # (it refuses >= 1,000,000 characters or > 200,000 tokens, hence these sizes).
    n = 999_999
    texts = ["a" * n, " " * n, "\n" * n, "😀" * 90_000, "中" * 150_000]
    for encoding in ENCODINGS:
        with warnings.catch_warnings():  # bpe-openai loads its data with a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai

            expected = [len(bpe_openai.get_encoding(encoding).encode_ordinary(text)) for text in texts]
        assert [count_tokens(text, encoding) for text in texts] == expected


def test_megabyte_of_random_latin1_matches_tiktoken(reference: dict[str, Any]) -> None:
    text = random_latin1(1_000_000, seed=11)
    for encoding in ENCODINGS:
        assert count_tokens(text, encoding) == len(reference[encoding].encode_ordinary(text))


def test_model_selects_encoding(reference: dict[str, Any]) -> None:
    text = CJK + EMOJI + MIXED_SCRIPTS
    o200k = len(reference["o200k_base"].encode_ordinary(text))
    cl100k = len(reference["cl100k_base"].encode_ordinary(text))
    assert o200k != cl100k
    assert count_tokens(text) == o200k  # default model gpt-4o
    for model in ["gpt-4o-2024-08-06", "gpt-4.1-mini", "o3-mini", "o1", "gpt-5", "openai/gpt-4o"]:
        assert count_tokens(text, model) == o200k, model
    for model in ["gpt-4", "gpt-4-turbo-2024-04-09", "gpt-3.5-turbo-0125", "text-embedding-3-small"]:
        assert count_tokens(text, model) == cl100k, model


def test_large_inputs_counted_from_threads_agree(reference: dict[str, Any]) -> None:
    # >= 64 KB releases the GIL: counts made concurrently must equal the reference.
    texts = [CORPUS["english-200k"], CORPUS["code-10k"] * 10, (CJK + EMOJI) * 300]
    expected = [len(reference["o200k_base"].encode_ordinary(t)) for t in texts]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(count_tokens, texts * 4))
    assert got == expected * 4


COOKBOOK_MESSAGES = [
    {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
    {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
    {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
]


@pytest.mark.parametrize(
    ("model", "expected", "encoding"),
    [
        ("gpt-4o", 124, "o200k_base"),
        ("gpt-4o-mini", 124, "o200k_base"),
        ("gpt-4-0613", 129, "cl100k_base"),
        ("gpt-3.5-turbo", 129, "cl100k_base"),
        ("gpt-3.5-turbo-0301", 127, "cl100k_base"),
    ],
)
def test_chat_counts_match_the_cookbook(model: str, expected: int, encoding: str) -> None:
    # The figures the OpenAI Cookbook prints for this conversation (and the API agreed with).
    result = count_chat_tokens(COOKBOOK_MESSAGES, model)
    assert (result.tokens, result.exact, result.encoding) == (expected, True, encoding)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_weather",
        "description": "Get the current weather in a given location",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "description": "The unit of temperature to return", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location"],
        },
    },
}
WEATHER_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant that can answer to questions about the weather."},
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(("model", "expected"), [("gpt-4o", 101), ("gpt-4o-mini", 101), ("gpt-4", 105), ("gpt-3.5-turbo", 105)])
def test_tools_count_matches_the_cookbook(model: str, expected: int) -> None:
    assert count_chat_tokens(WEATHER_MESSAGES, model, tools=[WEATHER_TOOL]).tokens == expected
    # Legacy bare function definitions count the same.
    assert count_chat_tokens(WEATHER_MESSAGES, model, tools=[WEATHER_TOOL["function"]]).tokens == expected


def test_chat_parts_names_and_tool_calls(reference: dict[str, Any]) -> None:
    enc = reference["o200k_base"]
    base = count_chat_tokens([{"role": "user", "content": "Describe the picture"}]).tokens
    as_parts = count_chat_tokens([{"role": "user", "content": [{"type": "text", "text": "Describe the picture"}]}])
    assert as_parts.tokens == base
    named = count_chat_tokens([{"role": "user", "name": "alice_smith", "content": "Describe the picture"}])
    assert named.tokens == base + len(enc.encode("alice_smith")) + 1
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": '{"location": "Paris"}'}}
    ]}
    expected = 3 + 1 + len(enc.encode("get_current_weather")) + len(enc.encode('{"location": "Paris"}')) + 3
    assert count_chat_tokens([call]).tokens == expected


def png_data_url(width: int, height: int) -> str:
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", width, height) + b"\x08\x02\0\0\0"
    return "data:image/png;base64," + base64.b64encode(header).decode()


@pytest.mark.parametrize(
    ("url", "detail", "model", "image_tokens"),
    [
        ("https://example.com/cat.jpg", "low", "gpt-4o", 85),
        ("https://example.com/cat.jpg", "high", "gpt-4o", 765),  # unknown size: 4 tiles assumed
        (png_data_url(1024, 1024), "high", "gpt-4o", 765),
        (png_data_url(2048, 4096), "high", "gpt-4o", 1105),  # the guide's worked example
        (png_data_url(4000, 3000), None, "gpt-4o", 765),  # auto counts as high
        (png_data_url(300, 200), "high", "gpt-4o", 255),
        (png_data_url(1024, 1024), "low", "gpt-4o-mini", 2833),
        (png_data_url(1024, 1024), "high", "gpt-4o-mini", 2833 + 4 * 5667),
    ],
)
def test_image_tile_formula(url: str, detail: str | None, model: str, image_tokens: int) -> None:
    image: dict[str, str] = {"url": url} if detail is None else {"url": url, "detail": detail}
    text_only = count_chat_tokens([{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}], model)
    with_image = count_chat_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": image}]}],
        model,
    )
    assert with_image.tokens - text_only.tokens == image_tokens


def test_other_vendors_are_flagged_estimates() -> None:
    messages = [{"role": "user", "content": "Summarise the attached report in three bullet points."}]
    openai = count_chat_tokens(messages, "gpt-4o")
    claude = count_chat_tokens(messages, "claude-3-5-sonnet-20241022")
    gemini = count_chat_tokens(messages, "gemini-2.0-flash")
    unknown = count_chat_tokens(messages, "my-local-llama")
    assert openai.exact and not claude.exact and not gemini.exact and not unknown.exact
    assert claude.tokens == -(-openai.tokens * 5 // 4)  # x1.25, rounded up
    assert gemini.tokens == unknown.tokens == openai.tokens
    assert claude.encoding == "o200k_base"
    assert count_tokens("hello there, general", "claude-sonnet-4-20250514") == -(-count_tokens("hello there, general") * 5 // 4)


@pytest.mark.parametrize(
    ("model", "window"),
    [
        ("gpt-4o", 128_000),
        ("gpt-4o-mini-2024-07-18", 128_000),
        ("gpt-4.1-nano", 1_047_576),
        ("o1", 200_000),
        ("o1-mini", 128_000),
        ("o4-mini-2025-04-16", 200_000),
        ("gpt-4", 8_192),
        ("gpt-4-32k-0613", 32_768),
        ("gpt-4-turbo", 128_000),
        ("gpt-3.5-turbo-0125", 16_385),
        ("text-embedding-3-large", 8_191),
        ("claude-3-7-sonnet-latest", 200_000),
        ("gemini-1.5-pro", 2_097_152),
        ("no-such-model", None),
    ],
)
def test_context_window(model: str, window: int | None) -> None:
    assert context_window(model) == window


def test_bad_shapes_raise_clear_type_errors() -> None:
    with pytest.raises(TypeError, match="messages must be a list of dicts, not str"):
        count_chat_tokens("hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[1\] must be an object, not a string"):
        count_chat_tokens([{"role": "user", "content": "hi"}, "oops"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="cannot count tokens of a bytes value"):
        count_chat_tokens([{"role": "user", "content": b"hi"}])


def test_token_count_value() -> None:
    count = count_chat_tokens([{"role": "user", "content": "hi"}])
    assert isinstance(count, TokenCount)
    assert int(count) == count.tokens
    assert repr(count) == f"TokenCount(tokens={count.tokens}, exact=True, encoding='o200k_base')"
    assert llmgw.count_tokens is count_tokens
