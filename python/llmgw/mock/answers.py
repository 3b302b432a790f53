"""Deterministic answers derived from the request, shared by every wire format.

Each format module reads its own request shape into a :class:`Turn` and renders an
:class:`Answer` in its own wire format. Rules (documented in MockOptions as well):

* text answer: ``"Echo:"`` + words of the last user message; with ``words`` set it is cut or
  cyclically extended to exactly that many words. After a tool result the answer is
  ``"Tool result:"`` + the words of that result.
* tool call: when the request offers tools and the last message is from the user, the first
  offered (or the forced) tool is called with arguments built from its JSON schema; string fields
  carry the last user message.
* JSON mode: the content is a JSON document (``{"answer": ...}`` or an instance of the schema).
* completion tokens = number of space-separated words generated; prompt tokens = ceil(chars / 4).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import struct
from dataclasses import dataclass
from typing import Any

from llmgw.mock.options import MockOptions


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A tool offered by the request: its name and JSON schema of its arguments."""

    name: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """What the answer depends on, read from any provider's request."""

    last_user_text: str
    prompt_chars: int
    call_tool: ToolSpec | None = None
    tool_result_text: str | None = None
    json_schema: dict[str, Any] | None = None
    json_mode: bool = False
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """The generated answer: either text or one tool call, plus token usage."""

    text: str | None
    tool_name: str | None
    tool_arguments: str | None
    prompt_tokens: int
    completion_tokens: int
    truncated: bool = False
    """True when the text was cut at the request's max tokens (finish reason "length")."""

    @property
    def is_tool_call(self) -> bool:
        return self.tool_name is not None


def estimate_tokens(chars: int) -> int:
    """Prompt-token estimate: one token per 4 characters, rounded up, at least 1."""
    return max(1, -(-chars // 4))


def count_words(text: str) -> int:
    """Completion-token count of a generated string: its space-separated words."""
    return len(text.split(" ")) if text else 0


def split_word_pieces(text: str) -> list[str]:
    """Split into words, each after the first keeping its leading space; ``"".join`` restores it."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def group_pieces(pieces: list[str], chunk_words: int) -> list[str]:
    """Join word pieces into stream chunks of ``chunk_words`` words each."""
    return ["".join(pieces[i:i + chunk_words]) for i in range(0, len(pieces), chunk_words)]


def echo_text(prefix: str, source: str, words: int | None) -> str:
    """``prefix`` + the words of ``source``; exactly ``words`` words when it is set."""
    body = source.split()
    if words is None:
        return " ".join([prefix, *body]) if body else f"{prefix} (empty)"
    filler = body or ["mock"]
    out = [prefix]
    i = 0
    while len(out) < words:
        out.append(filler[i % len(filler)])
        i += 1
    return " ".join(out[:words])


def compose_answer(turn: Turn, options: MockOptions) -> Answer:
    """Decide the deterministic answer for a request (see the module docstring)."""
    prompt_tokens = estimate_tokens(turn.prompt_chars)
    if turn.call_tool is not None:
        arguments = json.dumps(instance_of_schema(turn.call_tool.parameters, turn.last_user_text))
        return Answer(None, turn.call_tool.name, arguments, prompt_tokens, count_words(arguments))
    if turn.tool_result_text is not None:
        text = echo_text("Tool result:", turn.tool_result_text, options.words)
    else:
        text = echo_text("Echo:", turn.last_user_text, options.words)
    if turn.json_schema is not None:
        text = json.dumps(instance_of_schema(turn.json_schema, text))
    elif turn.json_mode:
        text = json.dumps({"answer": text})
    words = count_words(text)
    limit = turn.max_output_tokens
    if limit is not None and 0 < limit < words:
        text = " ".join(text.split(" ")[:limit])
        return Answer(text, None, None, prompt_tokens, limit, truncated=True)
    return Answer(text, None, None, prompt_tokens, words)


def instance_of_schema(schema: Any, text: str, root: Any = None, depth: int = 0) -> Any:
    """A deterministic value valid for a (practical subset of) JSON Schema.

    Covers type/properties/items/enum/const/anyOf/oneOf/allOf and local ``$ref`` — what tool
    and structured-output schemas use. Every property is filled (strict mode requires all).
    """
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return text
    if "$ref" in schema:
        return instance_of_schema(_resolve_ref(root, schema["$ref"]), text, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if options:
            non_null = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return instance_of_schema((non_null or options)[0], text, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: instance_of_schema(sub, text, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1)))
        return [instance_of_schema(items, text, root, depth + 1) for _ in range(count)] if items else []
    if kind == "integer":
        return max(int(schema.get("minimum", 0)), len(text.split()))
    if kind == "number":
        return float(max(schema.get("minimum", 0), len(text.split())))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


def _resolve_ref(root: Any, ref: str) -> Any:
    if not ref.startswith("#/"):
        return {}
    node = root
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return {}
        node = node[part]
    return node


def embedding_vector(text: str, dims: int) -> list[float]:
    """Unit-length vector seeded by the text's SHA-256: same text, same vector, any process."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def float32_le_bytes(vector: list[float]) -> bytes:
    """Little-endian float32 bytes (OpenAI's ``encoding_format: base64`` payload)."""
    return struct.pack(f"<{len(vector)}f", *vector)
