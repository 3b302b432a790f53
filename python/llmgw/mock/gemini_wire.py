"""Google Gemini API wire format: models/{model}:generateContent and :streamGenerateContent.

Follows the Gemini API reference: key in ``x-goog-api-key`` or ``?key=``; request ``contents`` /
``systemInstruction`` / ``tools[].functionDeclarations`` / ``toolConfig`` / ``generationConfig``;
``GenerateContentResponse`` with ``candidates[].content.parts`` (``text`` or ``functionCall``),
``finishReason``, ``usageMetadata``, ``modelVersion``, ``responseId``; errors as
``{"error": {"code", "message", "status"}}``.

Streaming with ``?alt=sse`` sends one ``data:`` event per chunk separated by CRLF CRLF (as
Google's servers do); every chunk carries ``usageMetadata`` with the prompt count, the last one
also ``finishReason`` and the candidate count. There is no terminator event. Without ``alt=sse``
the stream is a JSON array written element by element.
"""

from __future__ import annotations

from typing import Any

import orjson

from llmgw.mock.answers import Answer, ToolSpec, Turn, compose_answer, estimate_tokens, group_pieces, split_word_pieces
from llmgw.mock.options import MockOptions
from llmgw.mock.replies import JSON, Call, ClientError, FullReply, Reply, Request, StreamReply, json_reply

CONTEXT_WINDOW = 1_048_576

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL",
    501: "NOT_IMPLEMENTED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}
_STATUS_MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "The request timed out. Please try again.",
}


def _sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


class GeminiWire:
    """Renders requests and errors in the Gemini API wire format."""

    name = "gemini"

    def error(self, status: int, message: str | None = None, code: str | None = None,
              param: str | None = None, type_: str | None = None,
              details: list[dict[str, Any]] | None = None) -> FullReply:
        status_name = _STATUS_NAMES.get(status, "UNKNOWN" if status >= 500 else "FAILED_PRECONDITION")
        error: dict[str, Any] = {
            "code": status,
            "message": message or _STATUS_MESSAGES.get(status, f"Error {status} (injected by the mock)."),
            "status": status_name,
        }
        if details:
            error["details"] = details
        return json_reply(status, {"error": error})

    def injected_error(self, status: int) -> FullReply:
        return self.error(status)

    def auth_error(self, request: Request, options: MockOptions) -> FullReply | None:
        if not options.require_auth:
            return None
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not key.strip():
            return self.error(403, "Method doesn't allow unregistered callers (callers without established "
                                   "identity). Please use API Key or other form of API consumer identity to call this API.")
        if options.api_key is not None and key.strip() != options.api_key:
            return self.error(400, "API key not valid. Please pass a valid API key.", details=[{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        return None

    def context_error(self, prompt_tokens: int, limit: int) -> FullReply:
        return self.error(400, f"The input token count ({prompt_tokens}) exceeds the maximum number of "
                               f"tokens allowed ({limit}).")

    def stream_error_frame(self) -> bytes:
        return _sse({"error": {"code": 503, "message": _STATUS_MESSAGES[503], "status": "UNAVAILABLE"}})

    def generate(self, call: Call) -> Reply:
        return self._answer(call, stream=False)

    def stream_generate(self, call: Call) -> Reply:
        return self._answer(call, stream=True)

    def _answer(self, call: Call, stream: bool) -> Reply:
        body = call.body
        if not isinstance(body, dict):
            raise ClientError(400, "Invalid JSON payload received.")
        model = call.params["model"]
        turn = read_gemini_turn(body)
        prompt_tokens = estimate_tokens(turn.prompt_chars)
        call.check_context(prompt_tokens, CONTEXT_WINDOW)
        answer = compose_answer(turn, call.options)
        response_id = f"mock{call.serial:012d}"
        if not stream:
            parts = _parts(answer, answer.text)
            return json_reply(200, self._response(parts, answer, model, response_id, final=True))
        if answer.is_tool_call:
            pieces = [answer.tool_arguments or ""]
        else:
            pieces = group_pieces(split_word_pieces(answer.text or ""), call.options.chunk_words)
        payloads = [self._response(_parts(answer, piece), answer, model, response_id, final=(i == len(pieces) - 1))
                    for i, piece in enumerate(pieces)]
        if call.request.query.get("alt") == "sse":
            return StreamReply(200, [], [_sse(p) for p in payloads], [])
        elements = [orjson.dumps(p) for p in payloads]
        frames = [b"[" + elements[0]] + [b",\r\n" + e for e in elements[1:]]
        return StreamReply(200, [], frames, [b"]"], content_type=JSON)

    def _response(self, parts: list[dict[str, Any]], answer: Answer, model: str, response_id: str,
                  final: bool) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        usage: dict[str, Any] = {"promptTokenCount": answer.prompt_tokens,
                                 "totalTokenCount": answer.prompt_tokens}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if answer.truncated else "STOP"
            usage = {"promptTokenCount": answer.prompt_tokens,
                     "candidatesTokenCount": answer.completion_tokens,
                     "totalTokenCount": answer.prompt_tokens + answer.completion_tokens}
        usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": answer.prompt_tokens}]
        return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
                "responseId": response_id}


def _parts(answer: Answer, text: str | None) -> list[dict[str, Any]]:
    if answer.is_tool_call:
        return [{"functionCall": {"name": answer.tool_name, "args": orjson.loads(answer.tool_arguments or "{}")}}]
    return [{"text": text or ""}]


def _parts_text(parts: Any) -> str:
    if not isinstance(parts, list):
        return ""
    out = []
    for part in parts:
        if isinstance(part, dict):
            if isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part.get("functionResponse"), dict):
                out.append(orjson.dumps(part["functionResponse"].get("response", {})).decode())
    return " ".join(out)


def read_gemini_turn(body: dict[str, Any]) -> Turn:
    """Read a generateContent request into the provider-neutral Turn."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise ClientError(400, "* GenerateContentRequest.contents: contents is not specified\n")
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    chars = len(_parts_text(system.get("parts") if isinstance(system, dict) else None))
    last_user = ""
    for content in contents:
        if not isinstance(content, dict):
            raise ClientError(400, "Invalid value at 'contents': expected an object.")
        parts = content.get("parts")
        chars += len(_parts_text(parts))
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in parts or [] if isinstance(p, dict) and isinstance(p.get("text"), str)]
            if texts:
                last_user = " ".join(texts)
    last = contents[-1]
    last_parts = last.get("parts") or []
    responses = [p for p in last_parts if isinstance(p, dict) and "functionResponse" in p]
    call_tool = None
    tool_result = None
    if last.get("role", "user") in ("user", "function"):
        if responses:
            tool_result = _parts_text(responses)
        else:
            call_tool = _chosen_tool(body.get("tools"), body.get("toolConfig") or body.get("tool_config"))
    config = body.get("generationConfig") or body.get("generation_config") or {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    json_mode = config.get("responseMimeType") == "application/json"
    max_tokens = config.get("maxOutputTokens")
    return Turn(last_user_text=last_user, prompt_chars=chars, call_tool=call_tool,
                tool_result_text=tool_result, json_schema=_lower_types(schema) if json_mode and schema else None,
                json_mode=json_mode and not schema,
                max_output_tokens=max_tokens if isinstance(max_tokens, int) else None)


def _lower_types(schema: Any) -> Any:
    """Gemini's OpenAPI-style schemas spell types in upper case (``STRING``); JSON Schema doesn't."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _chosen_tool(tools: Any, tool_config: Any) -> ToolSpec | None:
    if not isinstance(tools, list):
        return None
    declarations = [d for t in tools if isinstance(t, dict)
                    for d in (t.get("functionDeclarations") or t.get("function_declarations") or [])]
    if not declarations:
        return None
    calling = (tool_config or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "NONE":
        return None
    allowed = calling.get("allowedFunctionNames") or []
    chosen = next((d for d in declarations if d.get("name") in allowed), declarations[0])
    return ToolSpec(str(chosen.get("name", "tool")), _lower_types(chosen.get("parameters") or {"type": "object"}))
