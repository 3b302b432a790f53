"""`POST /v1/embeddings` in OpenAI's format, routed by model like chat completions.

The route's adapter builds the upstream request (`embeddings_request`) and reads the answer
(`embeddings_response`); providers without embeddings get a 400 naming the model. Configured API
keys are enforced as for chat (the same ApiKeyAuth rules); the chat plugins (rate limits, caches,
guardrails) see ChatRequests and do not run here.

`encoding_format: "base64"` (what the openai SDK asks for by default) is honoured for every
provider: when the upstream answered float lists (Gemini), the vectors are packed here as
little-endian float32 and base64-encoded, exactly as OpenAI does.
"""

from __future__ import annotations

import base64
import struct
import time
from typing import Any

import orjson

from llmgw.errors import GatewayError
from llmgw.ingress.openai import bad_request as _bad, require_model
from llmgw.exchange import ChatRequest, RequestContext, next_request_id
from llmgw.pipeline import exchange, upstream_failure
from llmgw.providers.base import optional_part
from llmgw.transport import UpstreamError

__all__ = ["embeddings", "parse_embeddings_request"]

_JSON = [("content-type", "application/json")]


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


def _as_base64(answer: dict[str, Any]) -> None:
    for item in answer.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


async def embeddings(gw: Any, scope: Any, proto: Any) -> None:
    """The RSGI handler for POST /v1/embeddings."""
    from llmgw.server import read_json_body, respond_error, run_watched  # late: server imports ingress

    data, _ = await read_json_body(gw, scope, proto)
    model, body = parse_embeddings_request(data)
    ctx = RequestContext(next_request_id(), time.perf_counter(), client=scope.client)

    async def answer() -> None:
        try:
            if gw.auth is not None:
                gw.auth.pre_request(ctx, ChatRequest(body=body, model=model, stream=False, headers=scope.headers))
            out = await _run(gw, model, body)
        except GatewayError as err:
            respond_error(proto, err, None, ctx.request_id)
            return
        proto.response_bytes(200, _JSON + [("x-request-id", ctx.request_id)], orjson.dumps(out))

    await run_watched(proto, answer())


async def _run(gw: Any, model: str, body: dict[str, Any]) -> dict[str, Any]:
    route = gw.models.get(model)
    if route is None:
        raise GatewayError(404, f"The model '{model}' does not exist or you do not have access to it.",
                           code="model_not_found", param="model")
    target = gw.pipeline.targets[route.upstream]
    adapter = target.adapter
    build = optional_part(adapter, "embeddings_request")
    read = optional_part(adapter, "embeddings_response")
    if build is None or read is None:
        raise GatewayError(400, f"Model '{model}' does not support embeddings (its upstream {route.upstream!r} uses "
                                f"provider {adapter.name!r}, which has none).", param="model",
                           code="embeddings_not_supported")
    raw = await exchange(target, build(body, route.model))
    try:
        answer = read(raw, model)
    except UpstreamError as exc:
        raise upstream_failure(exc, target.name) from None
    if body.get("encoding_format") == "base64":
        _as_base64(answer)
    return answer
