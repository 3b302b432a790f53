"""Azure OpenAI wire format: /openai/deployments/{deployment}/chat/completions|embeddings.

Azure speaks OpenAI's bodies with its own envelope: the key travels in ``api-key`` (or an Entra
``Authorization: Bearer`` token), ``?api-version=`` is mandatory, gateway-level errors are
``{"error": {"code": "<string>", "message": ...}}``, responses carry ``prompt_filter_results`` /
``content_filter_results``, and a stream starts with a chunk that has empty ``choices`` and only
``prompt_filter_results``. Model errors (context length, ...) keep OpenAI's error shape.
"""

from __future__ import annotations

import re
from typing import Any

from llmgw.mock.answers import compose_answer, estimate_tokens
from llmgw.mock.openai_wire import CONTEXT_WINDOW, OpenAIWire, read_chat_turn
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import Call, ClientError, FullReply, Reply, Request, json_reply, sse_data

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_FILTER_SAFE = {name: {"filtered": False, "severity": "safe"}
                for name in ("hate", "self_harm", "sexual", "violence")}

_STATUS_ERRORS: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "Invalid request (injected by the mock)."),
    401: ("401", "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."),
    403: ("403", "Access denied due to Virtual Network/Firewall rules."),
    404: ("DeploymentNotFound", "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."),
    429: ("429", "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 1 second. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."),
    500: ("InternalServerError", "The server had an error while processing your request. Sorry about that!"),
    503: ("ServiceUnavailable", "The service is temporarily unable to process your request. Please try again later."),
}


class AzureWire(OpenAIWire):
    """Azure OpenAI: OpenAI bodies, Azure's auth, api-version and error envelope."""

    name = "azure"

    def azure_error(self, status: int, code: str, message: str) -> FullReply:
        return json_reply(status, {"error": {"code": code, "message": message}})

    def injected_error(self, status: int) -> FullReply:
        code, message = _STATUS_ERRORS.get(status, (str(status), f"Error {status} (injected by the mock)."))
        return self.azure_error(status, code, message)

    def auth_error(self, request: Request, options: MockOptions) -> FullReply | None:
        if not options.require_auth:
            return None
        key = request.headers.get("api-key", "").strip()
        if not key:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        if not key or (options.api_key is not None and key != options.api_key):
            return self.azure_error(401, "401", _STATUS_ERRORS[401][1])
        return None

    def check_api_version(self, request: Request) -> FullReply | None:
        """Azure answers 404 without api-version and 400 for one it does not know."""
        version = request.query.get("api-version")
        if not version:
            return self.azure_error(404, "404", "Resource not found")
        if not _API_VERSION.match(version):
            return self.azure_error(400, "BadRequest", "API version not supported")
        return None

    def chat(self, call: Call) -> Reply:
        problem = self.check_api_version(call.request)
        if problem is not None:
            return problem
        body = call.body
        if not isinstance(body, dict):
            raise ClientError(400, "Invalid JSON body.")
        model = body.get("model") or call.params["deployment"]
        turn = read_chat_turn(body)
        call.check_context(estimate_tokens(turn.prompt_chars), CONTEXT_WINDOW)
        answer = compose_answer(turn, call.options)
        completion_id = f"chatcmpl-mock{call.serial:010d}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            reply = self.chat_stream(completion_id, call.now, model, answer,
                                     call.options.chunk_words, include_usage)
            reply.prelude.insert(0, sse_data({
                "choices": [], "created": 0, "id": "", "model": "", "object": "",
                "prompt_filter_results": _prompt_filter_results()}))
            return reply
        completion: dict[str, Any] = self.chat_completion(completion_id, call.now, model, answer)
        completion["prompt_filter_results"] = _prompt_filter_results()
        completion["choices"][0]["content_filter_results"] = dict(_FILTER_SAFE)
        return json_reply(200, completion)

    def embeddings(self, call: Call, model_override: str | None = None) -> Reply:
        problem = self.check_api_version(call.request)
        if problem is not None:
            return problem
        body = call.body if isinstance(call.body, dict) else {}
        return super().embeddings(call, model_override=body.get("model") or call.params["deployment"])


def _prompt_filter_results() -> list[dict[str, Any]]:
    return [{"prompt_index": 0, "content_filter_results": dict(_FILTER_SAFE)}]
