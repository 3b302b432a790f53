"""What a cached answer is keyed by: the parts of a chat request that change its answer.

    exact key   = hash(namespace, model group, every output-changing field of the body)
    scope       = hash(namespace, model group, the body without the embedded text)
    embedded    = the text the semantic cache compares (by default the last user message)

Two requests share an exact entry only when everything that can change the answer is equal; two
requests are semantic candidates only inside one scope, so a different system prompt, tool list,
earlier turn, `response_format`, `seed` or sampling parameter never shares answers, and only the
embedded text is compared by meaning. The namespace (the tenant) is part of both hashes and is
also stored in every entry and compared on lookup, so neither a collision nor a similarity score
can cross tenants.

Normalised: the body is serialised with sorted keys; the model name is replaced by the model
group the request was planned to (aliases share entries); fields that never change the answer
(`stream`, `stream_options`, `user`, `metadata`, `store`, `service_tier`, `prompt_cache_key`,
`safety_identifier`) are left out. Message text is kept verbatim in the exact key (case and
whitespace can matter to a model); the semantic layer is where "the same question asked
differently" is recognised.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

__all__ = ["IGNORED_FIELDS", "RequestKey", "cacheability", "embedded_text", "request_key"]

# Fields of a chat body that do not change the answer.
IGNORED_FIELDS = frozenset({"model", "stream", "stream_options", "user", "metadata", "store", "service_tier",
                            "prompt_cache_key", "safety_identifier"})


class RequestKey:
    """The keys of one request: `exact` (32 bytes), `scope` (hex: the semantic index's namespace
    inside the tenant) and `text` (what is embedded; "" when nothing is)."""

    __slots__ = ("namespace", "exact", "scope", "text")

    def __init__(self, namespace: str, exact: bytes, scope: str, text: str) -> None:
        self.namespace, self.exact, self.scope, self.text = namespace, exact, scope, text


def _digest(namespace: str, group: str, doc: Any) -> bytes:
    h = hashlib.blake2b(digest_size=32)
    h.update(namespace.encode())
    h.update(b"\x00")
    h.update(group.encode())
    h.update(b"\x00")
    h.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS))
    return h.digest()


def _text_of(content: Any) -> str | None:
    """A message's text: a string, or the text parts of a content array (None if it has other
    parts: an image is not compared by its words)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return None
            parts.append(part["text"])
        return "\n".join(parts)
    return None


def embedded_text(messages: list[Any], mode: str) -> tuple[str, int | None]:
    """(text to embed, index of the message it came from or None for several). `last_user`: the
    last message when it is the user's; `user`: every user message joined. ("", None) when there
    is nothing to compare (the last message is a tool result, an image...)."""
    if mode == "user":
        texts = []
        for m in messages:
            if isinstance(m, dict) and m.get("role") == "user":
                t = _text_of(m.get("content"))
                if t is None:
                    return "", None
                texts.append(t)
        return "\n".join(texts), None
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user":
        t = _text_of(messages[-1].get("content"))
        if t is not None:
            return t, len(messages) - 1
    return "", None


def request_key(namespace: str, group: str, body: dict[str, Any], embed: str | None = "last_user") -> RequestKey:
    """The keys of a chat request (`body` as parsed; not modified). `embed` None: the exact key
    only (no semantic layer)."""
    doc = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    exact = _digest(namespace, group, doc)
    if embed is None:
        return RequestKey(namespace, exact, "", "")
    messages = body.get("messages")
    text, index = embedded_text(messages if isinstance(messages, list) else [], embed)
    if not text.strip():
        return RequestKey(namespace, exact, "", "")
    if index is not None:  # the scope: everything but that message's text
        msgs = list(messages)  # type: ignore[arg-type]
        msgs[index] = {k: v for k, v in msgs[index].items() if k != "content"}
        doc["messages"] = msgs
    else:  # every user message embedded: the scope keeps the rest of the conversation
        doc["messages"] = [m if not (isinstance(m, dict) and m.get("role") == "user") else {"role": "user"}
                           for m in messages]  # type: ignore[union-attr]
    return RequestKey(namespace, exact, _digest(namespace, group, doc).hex(), text)


def cacheability(body: dict[str, Any], max_temperature: float) -> str | None:
    """Why a request's answer is not cached (None when it may be): several choices (`n` > 1),
    sampling hotter than `max_temperature`."""
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        return "n > 1"
    t = body.get("temperature")
    if isinstance(t, (int, float)) and t > max_temperature:
        return f"temperature {t:g} > {max_temperature:g}"
    return None
