"""The deterministic answer rules the rest of the project relies on."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from llmgw.mock.answers import (
    ToolSpec,
    Turn,
    compose_answer,
    count_words,
    echo_text,
    estimate_tokens,
    group_pieces,
    instance_of_schema,
    split_word_pieces,
)
from llmgw.mock.options import MockOptions, OptionError


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), st.integers(1, 7))
def test_stream_chunks_join_back_to_the_text(text: str, chunk_words: int) -> None:
    pieces = split_word_pieces(text)
    assert "".join(pieces) == text
    chunks = group_pieces(pieces, chunk_words)
    assert "".join(chunks) == text
    assert len(chunks) == -(-count_words(text) // chunk_words) if text else len(chunks) == 1


def test_echo_is_cut_or_cycled_to_the_requested_length() -> None:
    assert echo_text("Echo:", "a b c", None) == "Echo: a b c"
    assert echo_text("Echo:", "a b c", 2) == "Echo: a"
    assert echo_text("Echo:", "a b", 6) == "Echo: a b a b a"
    assert echo_text("Echo:", "   ", None) == "Echo: (empty)"
    assert echo_text("Echo:", "", 3) == "Echo: mock mock"


def test_prompt_token_estimate() -> None:
    assert [estimate_tokens(n) for n in (0, 1, 4, 5, 400)] == [1, 1, 1, 2, 100]


def test_tool_call_usage_counts_argument_words() -> None:
    tool = ToolSpec("f", {"type": "object", "properties": {"q": {"type": "string"}}})
    answer = compose_answer(Turn("find cats", 9, call_tool=tool), MockOptions())
    assert answer.tool_arguments == '{"q": "find cats"}'
    assert answer.completion_tokens == 3 and answer.prompt_tokens == 3


def test_schema_instances_cover_common_keywords() -> None:
    schema = {
        "type": "object",
        "properties": {
            "maybe": {"anyOf": [{"type": "null"}, {"type": "number", "minimum": 5}]},
            "fixed": {"const": "x"},
            "list": {"type": "array", "items": {"type": "boolean"}, "minItems": 2},
            "nullable": {"type": ["null", "integer"]},
            "ref": {"$ref": "#/definitions/R"},
            "bad_ref": {"$ref": "http://elsewhere"},
        },
        "definitions": {"R": {"enum": ["first", "second"]}},
    }
    value = instance_of_schema(schema, "one two")
    assert value == {"maybe": 5.0, "fixed": "x", "list": [True, True], "nullable": 2, "ref": "first", "bad_ref": "one two"}
    assert json.loads(json.dumps(value)) == value


def test_header_overrides_parse_and_reject() -> None:
    options = MockOptions().with_overrides({"x-mock-latency-ms": "12.5", "x-mock-words": "none",
                                            "x-mock-context-exceeded": "yes", "unrelated": "1"})
    assert options.latency_ms == 12.5 and options.words is None and options.context_exceeded is True
    assert MockOptions().with_overrides({}) == MockOptions()
    for header, value in [("x-mock-fail-rate", "2"), ("x-mock-chunk-words", "0"), ("x-mock-status", "abc"),
                          ("x-mock-malformed", "html"), ("x-mock-context-exceeded", "maybe")]:
        with pytest.raises(OptionError, match=header):
            MockOptions().with_overrides({header: value})


def test_unknown_control_header_is_rejected_so_typos_show() -> None:
    with pytest.raises(OptionError, match="unknown control header x-mock-hang-after"):
        MockOptions().with_overrides({"x-mock-hang-after": "2"})
