"""`POST /v1/embeddings` in OpenAI's format, routed by model like chat completions.

The route's adapter builds the upstream request (`embeddings_request`) and reads the answer
(`embeddings_response`); providers without embeddings get a 400 naming the model. The request
runs through the same hooks as chat, as request kind "embeddings" (plugins that declare it in
their `kinds` see it: the built-in auth does).

`encoding_format: "base64"` (what the openai SDK asks for by default) is honoured for every
provider: when the upstream answered float lists (Gemini), the vectors are packed here as
little-endian float32 and base64-encoded, exactly as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

from llmgw.ingress.openai import bad_request as _bad, require_model

__all__ = ["as_base64", "parse_embeddings_request"]


def parse_embeddings_request(data: Any) -> tuple[str, dict[str, Any]]:
    """Validate an OpenAI embeddings body: (model, body). Raises GatewayError(400)."""
    model = require_model(data)
    inputs = data.get("input")
    if inputs is None:
        raise _bad("You must provide an 'input' parameter.", "input", "missing_required_parameter")
    ok = (isinstance(inputs, str) and inputs) or (isinstance(inputs, list) and inputs and (
        all(isinstance(s, str) and s for s in inputs) or all(isinstance(t, int) for t in inputs)
        or all(isinstance(t, list) and t and all(isinstance(i, int) for i in t) for t in inputs)))
    if not ok:
        raise _bad("'input' must be a non-empty string, an array of non-empty strings, or token arrays.", "input")
    fmt = data.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise _bad(f"encoding_format must be 'float' or 'base64', got {fmt!r}.", "encoding_format")
    dims = data.get("dimensions")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        raise _bad("dimensions must be a positive integer.", "dimensions")
    return model, data


def as_base64(answer: dict[str, Any]) -> None:
    for item in answer.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
