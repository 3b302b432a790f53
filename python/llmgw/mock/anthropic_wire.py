"""Anthropic Messages API wire format: POST /v1/messages.

Follows the Messages API reference: ``x-api-key`` (or ``Authorization: Bearer``, which the 2.x
Python SDK sends) and ``anthropic-version`` headers, required
``max_tokens``, message object with content blocks (``text``, ``tool_use``), ``stop_reason``,
usage with ``cache_creation_input_tokens`` / ``cache_read_input_tokens``, streaming events
``message_start``, ``content_block_start``, ``ping``, ``content_block_delta`` (``text_delta``,
``input_json_delta``), ``content_block_stop``, ``message_delta``, ``message_stop`` and ``error``,
and the error body ``{"type": "error", "error": {"type", "message"}, "request_id"}``.

Prompt caching is simulated: the request text up to the last block marked ``cache_control`` is
the cacheable prefix. The first request with a given prefix reports it as
``cache_creation_input_tokens``; later ones report it as ``cache_read_input_tokens``;
``input_tokens`` counts the rest.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from llmgw.mock.answers import (
    Answer,
    ToolSpec,
    Turn,
    compose_answer,
    count_words,
    estimate_tokens,
    group_pieces,
    split_word_pieces,
)
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import Call, ClientError, FullReply, Reply, Request, StreamReply, as_dict, json_reply, sse_event

CONTEXT_WINDOW = 200_000

_ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request (injected by the mock)."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "model: mock"),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit (https://docs.claude.com/en/api/rate-limits); see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


class AnthropicWire:
    """Renders requests and errors in Anthropic's Messages API wire format."""

    name = "anthropic"

    def __init__(self) -> None:
        self.cached_prefixes: set[bytes] = set()

    def error(self, status: int, message: str | None = None, code: str | None = None,
              param: str | None = None, type_: str | None = None) -> FullReply:
        default_type, default_message = _ERROR_TYPES.get(
            status, ("api_error" if status >= 500 else "invalid_request_error",
                     f"Error {status} (injected by the mock).")
        )
        reply = json_reply(status, {
            "type": "error",
            "error": {"type": type_ or default_type, "message": message or default_message},
            "request_id": "req_mock_error",
        })
        reply.headers.append(("request-id", "req_mock_error"))
        return reply

    def injected_error(self, status: int) -> FullReply:
        return self.error(status)

    def auth_error(self, request: Request, options: MockOptions) -> FullReply | None:
        if options.require_auth:
            key = request.headers.get("x-api-key", "").strip()
            if not key:  # newer SDKs (2.x) send the key as a bearer token instead
                scheme, _, token = request.headers.get("authorization", "").partition(" ")
                key = token.strip() if scheme.lower() == "bearer" else ""
            if not key:
                return self.error(401, "x-api-key header is required", type_="authentication_error")
            if options.api_key is not None and key != options.api_key:
                return self.error(401, "invalid x-api-key", type_="authentication_error")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required", type_="invalid_request_error")
        return None

    def context_error(self, prompt_tokens: int, limit: int) -> FullReply:
        return self.error(400, f"prompt is too long: {prompt_tokens} tokens > {limit} maximum",
                          type_="invalid_request_error")

    def stream_error_frame(self) -> bytes:
        """The ``error`` event Anthropic sends inside a stream (e.g. when overloaded)."""
        return sse_event("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})

    def messages(self, call: Call) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            raise ClientError(400, "The request body is not valid JSON.")
        for required in ("model", "max_tokens", "messages"):
            if required not in body:
                raise ClientError(400, f"{required}: Field required")
        if not isinstance(body["model"], str):
            raise ClientError(400, "model: Input should be a valid string")
        if isinstance(body["max_tokens"], bool) or not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            raise ClientError(400, "max_tokens: Input should be a valid integer greater than or equal to 1")
        turn, cache_prefix = read_messages_turn(body)
        prompt_tokens = estimate_tokens(turn.prompt_chars)
        call.check_context(prompt_tokens, CONTEXT_WINDOW)
        answer = compose_answer(turn, call.options)
        usage = self._input_usage(prompt_tokens, cache_prefix)
        message_id = f"msg_mock{call.serial:012d}"
        # Anthropic writes no text before a tool call it was forced to make (tool_choice any/tool).
        forced = isinstance(body.get("tool_choice"), dict) and body["tool_choice"].get("type") in ("any", "tool")
        preface = f"Calling {answer.tool_name}." if answer.is_tool_call and not forced else None
        output_tokens = answer.completion_tokens + (count_words(preface) if preface else 0)
        if body.get("stream"):
            return self._stream(message_id, body["model"], answer, preface, usage, output_tokens,
                                call.options.chunk_words)
        content: list[dict[str, Any]] = []
        if answer.is_tool_call:
            if preface:
                content.append({"type": "text", "text": preface})
            content.append({"type": "tool_use", "id": _tool_id(message_id), "name": answer.tool_name,
                            "input": json.loads(answer.tool_arguments or "{}")})
        else:
            content.append({"type": "text", "text": answer.text})
        reply = json_reply(200, {
            "id": message_id, "type": "message", "role": "assistant", "model": body["model"],
            "content": content, "stop_reason": stop_reason(answer), "stop_sequence": None,
            "usage": {**usage, "output_tokens": output_tokens, "service_tier": "standard"},
        })
        reply.headers.append(("request-id", f"req_mock{call.serial:012d}"))
        return reply

    def _input_usage(self, prompt_tokens: int, cache_prefix: str | None) -> dict[str, int]:
        created = read = 0
        if cache_prefix:
            cached = min(prompt_tokens, estimate_tokens(len(cache_prefix)))
            digest = hashlib.sha256(cache_prefix.encode()).digest()
            if digest in self.cached_prefixes:
                read = cached
            else:
                self.cached_prefixes.add(digest)
                created = cached
        return {"input_tokens": max(0, prompt_tokens - created - read),
                "cache_creation_input_tokens": created, "cache_read_input_tokens": read}

    def _stream(self, message_id: str, model: str, answer: Answer, preface: str | None,
                usage: dict[str, int], output_tokens: int, chunk_words: int) -> StreamReply:
        prelude = [
            sse_event("message_start", {"type": "message_start", "message": {
                "id": message_id, "type": "message", "role": "assistant", "model": model,
                "content": [], "stop_reason": None, "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1, "service_tier": "standard"}}}),
            sse_event("content_block_start", {"type": "content_block_start", "index": 0,
                                              "content_block": {"type": "text", "text": ""}}),
            sse_event("ping", {"type": "ping"}),
        ]
        text = preface if preface is not None else (answer.text or "")
        chunks = [sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                    "delta": {"type": "text_delta", "text": piece}})
                  for piece in group_pieces(split_word_pieces(text), chunk_words)]
        last_index = 0
        if answer.is_tool_call:
            last_index = 1
            switch = (
                sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
                + sse_event("content_block_start", {"type": "content_block_start", "index": 1,
                                                    "content_block": {"type": "tool_use", "id": _tool_id(message_id),
                                                                      "name": answer.tool_name, "input": {}}})
            )
            json_chunks = [sse_event("content_block_delta", {"type": "content_block_delta", "index": 1,
                                                             "delta": {"type": "input_json_delta", "partial_json": piece}})
                           for piece in group_pieces(split_word_pieces(answer.tool_arguments or ""), chunk_words)]
            json_chunks[0] = switch + json_chunks[0]
            chunks.extend(json_chunks)
        epilogue = [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": last_index}),
            sse_event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": stop_reason(answer), "stop_sequence": None},
                                        "usage": {"output_tokens": output_tokens}}),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
        reply = StreamReply(200, prelude, chunks, epilogue)
        reply.headers.append(("request-id", message_id.replace("msg_", "req_")))
        return reply


def _tool_id(message_id: str) -> str:
    return "toolu_" + message_id.removeprefix("msg_")


def stop_reason(answer: Answer) -> str:
    if answer.is_tool_call:
        return "tool_use"
    return "max_tokens" if answer.truncated else "end_turn"


def _block_text(block: Any) -> str:
    if isinstance(block, str):
        return block
    if not isinstance(block, dict):
        return ""
    if block.get("type") == "text":
        return str(block.get("text", ""))
    if block.get("type") == "tool_result":
        return _blocks_text(block.get("content"))
    return ""


def _blocks_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(t for t in (_block_text(b) for b in content) if t)
    return ""


def read_messages_turn(body: dict[str, Any]) -> tuple[Turn, str | None]:
    """Read a Messages request into a Turn, plus the text of its cache_control prefix (if any)."""
    messages = body["messages"]
    if not isinstance(messages, list) or not messages:
        raise ClientError(400, "messages: at least one message is required")
    texts: list[str] = []
    cache_end = -1  # index into texts of the last block marked cache_control

    def add(block: Any) -> None:
        nonlocal cache_end
        texts.append(_block_text(block))
        if isinstance(block, dict) and block.get("cache_control"):
            cache_end = len(texts) - 1

    system = body.get("system")
    for block in system if isinstance(system, list) else [system or ""]:
        add(block)
    last_user = ""
    for message in messages:
        if not isinstance(message, dict):
            raise ClientError(400, "messages: Input should be a valid list of objects")
        content = message.get("content")
        for block in content if isinstance(content, list) else [content or ""]:
            add(block)
        if message.get("role") == "user":
            last_user = " ".join(_block_text(b) for b in (content if isinstance(content, list) else [content])
                                 if not (isinstance(b, dict) and b.get("type") == "tool_result"))
    last = messages[-1]
    content = last.get("content")
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"] \
        if isinstance(content, list) else []
    call_tool = None
    tool_result = None
    if last.get("role") == "user":
        if results:
            tool_result = " ".join(_block_text(b) for b in results)
        else:
            call_tool = _chosen_tool(body.get("tools"), body.get("tool_choice"))
    cache_prefix = "".join(texts[: cache_end + 1]) if cache_end >= 0 else None
    turn = Turn(last_user_text=last_user.strip(), prompt_chars=sum(len(t) for t in texts),
                call_tool=call_tool, tool_result_text=tool_result,
                max_output_tokens=body.get("max_tokens"))
    return turn, cache_prefix


def _chosen_tool(tools: Any, tool_choice: Any) -> ToolSpec | None:
    if not isinstance(tools, list) or not tools:
        return None
    choice = tool_choice if isinstance(tool_choice, dict) else {}
    if choice.get("type") == "none":
        return None
    named = [t for t in tools if isinstance(t, dict) and "name" in t]
    if not named:
        return None
    chosen = named[0]
    if choice.get("type") == "tool":
        chosen = next((t for t in named if t["name"] == choice.get("name")), chosen)
    return ToolSpec(str(chosen["name"]), as_dict(chosen.get("input_schema")) or {"type": "object"})
