"""OpenAI wire format: /v1/chat/completions, /v1/embeddings, /v1/models.

Shapes follow the OpenAI API reference (chat completion object, chat.completion.chunk objects,
``stream_options.include_usage`` final usage chunk with ``choices: []``, ``data: [DONE]``,
embedding list, error body ``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import base64
from typing import Any

from llmgw.mock.answers import (
    Answer,
    ToolSpec,
    Turn,
    compose_answer,
    embedding_vector,
    estimate_tokens,
    float32_le_bytes,
    group_pieces,
    split_word_pieces,
)
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import Call, ClientError, FullReply, Reply, Request, StreamReply, json_reply, sse_data

CONTEXT_WINDOW = 128_000
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "text-embedding-3-small", "text-embedding-3-large")
_DONE = b"data: [DONE]\n\n"

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with "
    "blank username) if you're accessing the API from your browser and are prompted for a "
    "username and password. You can obtain an API key from https://platform.openai.com/account/api-keys."
)

# status -> (type, code, message) of the errors the real API returns for that status.
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (injected by the mock)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided: mock***. You can find your API key at https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country, region, or territory not supported"),
    404: ("invalid_request_error", "model_not_found", "The model `mock` does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for gpt-4o in organization org-mock on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 120ms. Visit https://platform.openai.com/account/rate-limits to learn more."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


class OpenAIWire:
    """Renders requests and errors in OpenAI's wire format."""

    name = "openai"

    def error(self, status: int, message: str | None = None, code: str | None = None,
              param: str | None = None, type_: str | None = None) -> FullReply:
        """An OpenAI error body for ``status`` (defaults chosen per status like the real API)."""
        default_type, default_code, default_message = _STATUS_ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None,
                     f"Error {status} (injected by the mock).")
        )
        return json_reply(status, {"error": {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": param,
            "code": code if message else (code or default_code),
        }})

    def injected_error(self, status: int) -> FullReply:
        return self.error(status)

    def auth_error(self, request: Request, options: MockOptions) -> FullReply | None:
        if not options.require_auth:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return self.error(401, _MISSING_KEY)
        if options.api_key is not None and key.strip() != options.api_key:
            return self.error(401, _STATUS_ERRORS[401][2], code="invalid_api_key")
        return None

    def context_error(self, prompt_tokens: int, limit: int) -> FullReply:
        return self.error(
            400,
            f"This model's maximum context length is {limit} tokens. However, your messages "
            f"resulted in {prompt_tokens} tokens. Please reduce the length of the messages.",
            code="context_length_exceeded", param="messages",
        )

    def stream_error_frame(self) -> bytes:
        """The error event OpenAI sends inside a broken stream."""
        return sse_data({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                                   "type": "server_error", "param": None, "code": None}})

    # -- chat completions -------------------------------------------------------------------

    def chat(self, call: Call) -> Reply:
        body = _require_object(call.body)
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise ClientError(400, "you must provide a model parameter")
        turn = read_chat_turn(body)
        call.check_context(estimate_tokens(turn.prompt_chars), CONTEXT_WINDOW)
        answer = compose_answer(turn, call.options)
        completion_id = f"chatcmpl-mock{call.serial:010d}"
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return self.chat_stream(completion_id, call.now, model, answer, call.options.chunk_words,
                                    include_usage)
        return json_reply(200, self.chat_completion(completion_id, call.now, model, answer))

    def chat_completion(self, completion_id: str, created: int, model: str,
                        answer: Answer) -> dict[str, Any]:
        """The non-streaming ``chat.completion`` object."""
        if answer.is_tool_call:
            message: dict[str, Any] = {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": _tool_call_id(completion_id), "type": "function",
                                "function": {"name": answer.tool_name, "arguments": answer.tool_arguments}}],
                "refusal": None, "annotations": [],
            }
        else:
            message = {"role": "assistant", "content": answer.text, "refusal": None, "annotations": []}
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(answer)}],
            "usage": usage(answer),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }

    def chat_stream(self, completion_id: str, created: int, model: str, answer: Answer,
                    chunk_words: int, include_usage: bool) -> StreamReply:
        """``chat.completion.chunk`` events: role chunk, content chunks, finish, usage, [DONE]."""
        base = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                "model": model, "service_tier": "default", "system_fingerprint": "fp_mock"}
        if include_usage:
            base["usage"] = None

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            return sse_data({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish}]})

        if answer.is_tool_call:
            first = chunk({"role": "assistant", "content": None, "tool_calls": [{
                "index": 0, "id": _tool_call_id(completion_id), "type": "function",
                "function": {"name": answer.tool_name, "arguments": ""}}], "refusal": None})
            pieces = group_pieces(split_word_pieces(answer.tool_arguments or ""), chunk_words)
            chunks = [chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
        else:
            first = chunk({"role": "assistant", "content": "", "refusal": None})
            pieces = group_pieces(split_word_pieces(answer.text or ""), chunk_words)
            chunks = [chunk({"content": p}) for p in pieces]
        epilogue = [chunk({}, finish_reason(answer))]
        if include_usage:
            epilogue.append(sse_data({**base, "choices": [], "usage": usage(answer)}))
        epilogue.append(_DONE)
        return StreamReply(200, [first], chunks, epilogue)

    # -- embeddings and models --------------------------------------------------------------

    def embeddings(self, call: Call, model_override: str | None = None) -> Reply:
        body = _require_object(call.body)
        model = model_override or body.get("model")
        if not isinstance(model, str) or not model:
            raise ClientError(400, "you must provide a model parameter")
        texts, tokens = read_embedding_inputs(body.get("input"))
        call.check_context(tokens, 8192)
        dims = body.get("dimensions") or call.options.embedding_dims
        if not isinstance(dims, int) or dims < 1:
            raise ClientError(400, "Invalid value for 'dimensions': must be a positive integer.",
                              param="dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding_vector(text, dims)
            encoded: Any = base64.b64encode(float32_le_bytes(vector)).decode() if as_base64 else vector
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        return json_reply(200, {"object": "list", "data": data, "model": model,
                                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def models(self, call: Call) -> Reply:
        return json_reply(200, {"object": "list", "data": [
            {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "system"}
            for name in MODELS]})


def _tool_call_id(completion_id: str) -> str:
    return "call_" + completion_id.removeprefix("chatcmpl-")


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError(400, "We could not parse the JSON body of your request. (HINT: This likely "
                               "means you aren't using your HTTP library correctly. The OpenAI API "
                               "expects a JSON payload, but what was sent was not valid JSON.)")
    return body


def finish_reason(answer: Answer) -> str:
    if answer.is_tool_call:
        return "tool_calls"
    return "length" if answer.truncated else "stop"


def usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0,
                                      "rejected_prediction_tokens": 0},
    }


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content
                        if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def read_chat_turn(body: dict[str, Any]) -> Turn:
    """Read an OpenAI chat request into the provider-neutral Turn."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ClientError(400, "Missing required parameter: 'messages'.", code="missing_required_parameter",
                          param="messages")
    chars = 0
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            raise ClientError(400, "Invalid type for 'messages': expected an array of objects.",
                              code="invalid_type", param="messages")
        text = _content_text(message.get("content"))
        chars += len(text)
        if message.get("role") == "user":
            last_user = text
    last = messages[-1]
    call_tool = None
    tool_result = None
    if last.get("role") == "tool":
        tool_result = _content_text(last.get("content"))
    elif last.get("role") == "user":
        call_tool = _chosen_tool(body.get("tools"), body.get("tool_choice"))
    response_format = body.get("response_format") or {}
    schema = None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    return Turn(
        last_user_text=last_user,
        prompt_chars=chars,
        call_tool=call_tool,
        tool_result_text=tool_result,
        json_schema=schema,
        json_mode=response_format.get("type") == "json_object",
        max_output_tokens=max_tokens if isinstance(max_tokens, int) else None,
    )


def _chosen_tool(tools: Any, tool_choice: Any) -> ToolSpec | None:
    if not isinstance(tools, list) or not tools or tool_choice == "none":
        return None
    functions = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    chosen = functions[0]
    if isinstance(tool_choice, dict):
        wanted = (tool_choice.get("function") or {}).get("name")
        chosen = next((f for f in functions if f.get("name") == wanted), chosen)
    return ToolSpec(str(chosen.get("name", "tool")), chosen.get("parameters") or {"type": "object"})


def read_embedding_inputs(raw: Any) -> tuple[list[str], int]:
    """Normalise ``input`` (string, strings, token ids, lists of token ids) to texts + token count."""
    if isinstance(raw, str):
        return [raw], estimate_tokens(len(raw))
    if isinstance(raw, list) and raw:
        if all(isinstance(x, int) for x in raw):
            return [" ".join(map(str, raw))], len(raw)
        if all(isinstance(x, str) for x in raw):
            return list(raw), sum(estimate_tokens(len(x)) for x in raw)
        if all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in raw):
            return [" ".join(map(str, x)) for x in raw], sum(len(x) for x in raw)
    raise ClientError(400, "'input' must be a string, an array of strings, or an array of token arrays.",
                      param="input")
