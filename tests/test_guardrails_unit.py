"""Guardrails in process: the stream window against the whole-text answer for every way of
cutting a text into chunks, and response_format json_schema validation with its one retry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fakes import BASE_CONFIG, FakeHttp, FakePool, completion, gateway_for, run, stream
from llmgw.guardrails.detect import PiiDetector
from llmgw.guardrails.redact import Redactor, StreamWindow, held_tail, mask

DETECTOR = PiiDetector()
CORPUS = [json.loads(line) for line in (Path(__file__).parent / "data" / "pii_corpus.jsonl").read_text().splitlines()]
WITH_PII = [c["text"] for c in CORPUS if c["expected"]]


def whole(text: str, mode: str = "redact") -> str:
    red = Redactor(mode)
    return red.apply(text, red.relevant(text, DETECTOR.find(text)))


def streamed(text: str, cuts: list[int], mode: str = "redact") -> str:
    window = StreamWindow(DETECTOR.find, DETECTOR.open_block, DETECTOR.max_span, Redactor(mode), True)
    bounds = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    out = [window.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    return "".join(out) + window.flush()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(WITH_PII), st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_a_stream_cut_anywhere_is_redacted_exactly_like_the_whole_text(text, cuts):
    assert streamed(text, cuts) == whole(text)


def test_every_corpus_text_cut_into_single_characters_matches_the_whole_text():
    for text in WITH_PII:
        assert streamed(text, list(range(len(text)))) == whole(text), text
        assert streamed(text, list(range(len(text))), "mask") == whole(text, "mask"), text


def test_the_window_holds_back_only_what_could_still_become_a_match():
    assert held_tail("Hello there, my friend", 100) == len("friend")
    assert held_tail("card 4111 1111 ", 100) >= len("4111 1111 ")
    assert held_tail("account LU82 838N TFM3 6WDF ", 100) >= len("LU82 838N TFM3 6WDF ")
    assert held_tail("IBAN GB29 NWBK", 100) >= len("GB29 NWBK")
    assert held_tail("done.\n", 100) == 0
    window = StreamWindow(DETECTOR.find, DETECTOR.open_block, DETECTOR.max_span, Redactor("redact"), True)
    assert window.feed("The quick brown fox") == "The quick brown "
    assert window.feed(" jumps ") == "fox jumps "  # prose: one word held at most
    assert window.feed("to a@b") == "to "
    assert window.feed(".io and") + window.flush() == "[EMAIL] and"


def test_a_private_key_block_is_held_until_it_ends():
    window = StreamWindow(DETECTOR.find, DETECTOR.open_block, DETECTOR.max_span, Redactor("redact"), True)
    body = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7" * 20
    out = window.feed("key: -----BEGIN PRIVATE KEY-----\n")
    for i in range(0, len(body), 64):
        out += window.feed(body[i:i + 64] + "\n")
    assert "MIIE" not in out
    out += window.feed("-----END PRIVATE KEY-----\nthanks") + window.flush()
    assert "MIIE" not in out and "[SECRET]" in out and out.endswith("thanks")


def test_mask_keeps_the_shape():
    assert mask("card", "4111-1111-1111-1111") == "****-****-****-1111"
    assert mask("email", "jo@example.org") == "j***@example.org"
    assert mask("ip", "192.168.10.12") == "***.***.**.12"


def schema_config(mode: str) -> str:
    return BASE_CONFIG + f"guardrails:\n  json_schema: {mode}\n"


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
          "required": ["city", "temp"], "additionalProperties": False}


def schema_request(stream_: bool = False) -> dict:
    return {"model": "m", "stream": stream_, "messages": [{"role": "user", "content": "weather?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA}}}


async def test_an_answer_that_breaks_the_schema_is_retried_once():
    good, bad = json.dumps({"city": "Oslo", "temp": 3.5}), json.dumps({"city": "Oslo"})
    pool = FakePool(completion(bad), completion(good))
    http = await run(gateway_for(schema_config("retry"), up=pool), FakeHttp(schema_request()))
    assert http.status == 200 and json.loads(http.json()["choices"][0]["message"]["content"]) == json.loads(good)
    assert len(pool.requests) == 2


@pytest.mark.parametrize("mode, calls", [("retry", 2), ("error", 1)])
async def test_a_wrong_answer_is_a_clear_502_naming_the_problem(mode, calls):
    pool = FakePool(completion("not json at all"))
    http = await run(gateway_for(schema_config(mode), up=pool), FakeHttp(schema_request()))
    err = http.json()["error"]
    assert http.status == 502 and err["code"] == "invalid_response_format" and "not valid JSON" in err["message"]
    assert len(pool.requests) == calls
    pool = FakePool(completion(json.dumps({"city": "Oslo", "temp": "warm"})))
    http = await run(gateway_for(schema_config(mode), up=pool), FakeHttp(schema_request()))
    assert http.status == 502 and "at temp:" in http.json()["error"]["message"]


async def test_a_streamed_answer_that_breaks_the_schema_ends_with_an_error_event():
    pool = FakePool(lambda: stream(['{"city": ', '"Oslo"}']))
    http = await run(gateway_for(schema_config("retry"), up=pool), FakeHttp(schema_request(True)))
    assert http.status == 200 and b"invalid_response_format" in http.streamed
    pool = FakePool(lambda: stream(['{"city": ', '"Oslo", "temp": 1}']))
    http = await run(gateway_for(schema_config("retry"), up=pool), FakeHttp(schema_request(True)))
    assert b"invalid_response_format" not in http.streamed and b"[DONE]" in http.streamed
