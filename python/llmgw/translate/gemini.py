"""OpenAI chat completions ⇄ Google Gemini `generateContent`, as pure functions on dicts.

Request (OpenAI → Gemini):
    system/developer messages   → systemInstruction.parts (in order)
    user / assistant            → contents[] with role user / model (consecutive same-role turns merged)
    image_url (data: URL)       → inlineData {mimeType, data}
    image_url (http(s) URL)     → fileData {mimeType, fileUri}; the MIME type is taken from the
                                  URL's extension (.png .jpg .jpeg .webp .heic .heif .gif); a URL
                                  without one is a 400 (send a data: URL instead)
    input_audio / file (data)   → inlineData
    assistant tool_calls        → functionCall parts (args parsed from the JSON string)
    tool / function results     → functionResponse parts (name found from the tool_call_id)
    tools                       → tools[0].functionDeclarations (schemas converted, see gemini_schema)
    tool_choice                 → toolConfig.functionCallingConfig: none→NONE, auto→AUTO,
                                  required→ANY, {function: name}→ANY + allowedFunctionNames
    response_format             → generationConfig.responseMimeType + responseSchema
    temperature, top_p, max_tokens / max_completion_tokens, stop, n, seed, presence_penalty,
    frequency_penalty, reasoning_effort → generationConfig (reasoning_effort → thinkingBudget)
Anything else is refused with a 400 naming the parameter, or dropped when `drop_params` is set.

Response (Gemini → OpenAI): candidates → choices, text parts → content, functionCall parts →
tool_calls (with generated `call_…` ids unless Gemini gave one), finishReason → finish_reason,
usageMetadata → usage. Parts marked `thought: true` (thinking summaries) are not content and are
left out. A functionCall's `thoughtSignature` (which Gemini needs back on the next turn) travels
in the tool call as `extra_content.google.thought_signature`, the field Google's own OpenAI
compatibility layer uses, and is restored from it on the way back.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from llmgw.errors import GatewayError
from llmgw.translate.gemini_schema import to_gemini_schema

__all__ = [
    "FINISH_REASONS",
    "finish_reason",
    "openai_to_gemini_embeddings",
    "gemini_embeddings_to_openai",
    "openai_to_gemini_request",
    "gemini_to_openai_response",
    "new_tool_call_id",
    "text_from_parts",
    "tool_calls_from_parts",
    "usage_from_gemini",
]

# Gemini finishReason → OpenAI finish_reason. STOP becomes "tool_calls" when the answer has calls.
FINISH_REASONS: dict[str, str] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "LANGUAGE": "stop",
    "OTHER": "stop",
    "MALFORMED_FUNCTION_CALL": "stop",
    "UNEXPECTED_TOOL_CALL": "stop",
    "FINISH_REASON_UNSPECIFIED": "stop",
}

# Parameters with no effect on the answer that Gemini has no field for: dropped silently.
_HARMLESS = frozenset({"model", "messages", "stream", "stream_options", "user", "store", "metadata", "service_tier"})
_MAPPED = frozenset({
    "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n", "seed", "presence_penalty",
    "frequency_penalty", "tools", "tool_choice", "response_format", "reasoning_effort", "parallel_tool_calls",
    "functions", "function_call",
})
# OpenAI reasoning_effort → Gemini 2.5 thinkingBudget (tokens); the same figures Google's
# OpenAI-compatibility endpoint documents (low 1,024 / medium 8,192 / high 24,576).
_THINKING_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_IMAGE_MIME_BY_EXT = {
    "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp",
    "heic": "image/heic", "heif": "image/heif", "gif": "image/gif",
}
_AUDIO_MIME = {"wav": "audio/wav", "mp3": "audio/mp3", "flac": "audio/flac", "aac": "audio/aac",
               "ogg": "audio/ogg", "aiff": "audio/aiff"}


def _bad(message: str, param: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def new_tool_call_id() -> str:
    """An OpenAI-style tool call id (Gemini usually sends none): `call_` + 24 hex digits."""
    return "call_" + os.urandom(12).hex()


# ------------------------------------------------------------------------------------------------
# Request


def openai_to_gemini_request(body: dict[str, Any], *, provider: str = "gemini", drop_params: bool = False,
                             native_json_schema: bool = False) -> dict[str, Any]:
    """The `generateContent` body for an OpenAI chat-completions body (see the module docstring).

    Raises GatewayError(400) naming the parameter that cannot be expressed for Gemini.
    """
    for key in body:
        if key not in _MAPPED and key not in _HARMLESS and not drop_params:
            raise _unsupported(key, provider)
    if body.get("parallel_tool_calls") is False and not drop_params:
        raise _bad(f"parallel_tool_calls=false is not supported by provider {provider!r} (Gemini has no switch "
                   "for it); remove it, or set options.drop_params: true on the upstream.",
                   "parallel_tool_calls", "unsupported_parameter")

    system, contents = _messages(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools, tool_config = _tools(body, provider, drop_params)
    if tools:
        out["tools"] = tools
    if tool_config:
        out["toolConfig"] = tool_config
    config = _generation_config(body, native_json_schema)
    if config:
        out["generationConfig"] = config
    return out


def _unsupported(key: str, provider: str) -> GatewayError:
    return _bad(f"Parameter '{key}' is not supported by provider {provider!r}; remove it, or set "
                f"options.drop_params: true on the upstream to drop unsupported parameters.",
                key, "unsupported_parameter")


def _text_of(content: Any, param: str) -> list[dict[str, Any]]:
    """Text-only content (system messages, tool results): a string or text parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if isinstance(content, list):
        parts = []
        for j, p in enumerate(content):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise _bad(f"{param}[{j}] must be a text part here.", f"{param}[{j}]")
            parts.append({"text": p["text"]})
        return parts
    raise _bad(f"{param} must be a string or an array of content parts.", param, "invalid_type")


def _data_url(url: str, param: str) -> dict[str, Any]:
    head, sep, data = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise _bad(f"{param}: a data: URL must be base64 encoded (data:<mime>;base64,<data>).", param)
    return {"inlineData": {"mimeType": head[5:-7] or "application/octet-stream", "data": data}}


def _image_part(part: dict[str, Any], param: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise _bad(f"{param}.image_url.url must be a non-empty string.", f"{param}.image_url.url")
    if url.startswith("data:"):
        return _data_url(url, f"{param}.image_url.url")
    if url.startswith(("https://", "http://", "gs://")):
        path = url.split("?", 1)[0].split("#", 1)[0]
        ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
        mime = _IMAGE_MIME_BY_EXT.get(ext)
        if mime is None:
            raise _bad(f"{param}.image_url.url: Gemini needs the MIME type of an image given by URL, and it cannot "
                       f"be told from this URL (it does not end in one of "
                       f"{', '.join('.' + e for e in _IMAGE_MIME_BY_EXT)}). Send the image as a data: URL "
                       f"(data:image/png;base64,...) instead.", f"{param}.image_url.url")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise _bad(f"{param}.image_url.url must be a data: or https:// URL.", f"{param}.image_url.url")


def _user_parts(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return _text_of(content, param)
    if not isinstance(content, list):
        raise _bad(f"{param} must be a string or an array of content parts.", param, "invalid_type")
    parts: list[dict[str, Any]] = []
    for j, p in enumerate(content):
        where = f"{param}[{j}]"
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text" and isinstance(p.get("text"), str):
            parts.append({"text": p["text"]})
        elif kind == "image_url":
            parts.append(_image_part(p, where))
        elif kind == "input_audio" and isinstance(p.get("input_audio"), dict):
            audio = p["input_audio"]
            mime = _AUDIO_MIME.get(str(audio.get("format", "")).lower())
            if mime is None or not isinstance(audio.get("data"), str):
                raise _bad(f"{where}.input_audio needs base64 data and a format among {', '.join(_AUDIO_MIME)}.",
                           f"{where}.input_audio")
            parts.append({"inlineData": {"mimeType": mime, "data": audio["data"]}})
        elif kind == "file" and isinstance(p.get("file"), dict) and isinstance(p["file"].get("file_data"), str):
            parts.append(_data_url(p["file"]["file_data"], f"{where}.file.file_data"))
        else:
            raise _bad(f"{where}: content part type {kind!r} is not supported by provider 'gemini' "
                       "(supported: text, image_url, input_audio, file with file_data).", f"{where}.type")
    return parts


def _args_object(arguments: Any, param: str) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        value = orjson.loads(arguments)
    except (orjson.JSONDecodeError, TypeError):
        raise _bad(f"{param} must be a JSON object string.", param) from None
    if not isinstance(value, dict):
        raise _bad(f"{param} must encode a JSON object (Gemini's functionCall.args is an object).", param)
    return value


def _result_object(content: Any, param: str) -> dict[str, Any]:
    """A tool result as functionResponse.response (a JSON object): an object result as it is,
    anything else wrapped as {"content": ...}."""
    text = "".join(p["text"] for p in _text_of(content, param))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"content": text}
    return value if isinstance(value, dict) else {"content": value}


def _messages(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(messages):
        role = m.get("role")
        param = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.extend(_text_of(m.get("content"), param))
        elif role == "user":
            add("user", _user_parts(m.get("content"), param))
        elif role == "assistant":
            parts = _text_of(m.get("content"), param) if not isinstance(m.get("content"), list) else [
                {"text": p["text"]} for p in m["content"] if isinstance(p, dict) and isinstance(p.get("text"), str)]
            calls = m.get("tool_calls") or []
            if m.get("function_call"):
                calls = [*calls, {"id": None, "function": m["function_call"]}]
            for j, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
                    raise _bad(f"messages[{i}].tool_calls[{j}].function.name is required.",
                               f"messages[{i}].tool_calls[{j}].function.name")
                part: dict[str, Any] = {"functionCall": {
                    "name": fn["name"],
                    "args": _args_object(fn.get("arguments"), f"messages[{i}].tool_calls[{j}].function.arguments")}}
                signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
                if isinstance(signature, str):
                    part["thoughtSignature"] = signature
                parts.append(part)
                if isinstance(call.get("id"), str):
                    call_names[call["id"]] = fn["name"]
            add("model", parts)
        elif role == "tool":
            call_id = m.get("tool_call_id")
            name = call_names.get(call_id) if isinstance(call_id, str) else None
            name = name or m.get("name")
            if not isinstance(name, str):
                raise _bad(f"messages[{i}].tool_call_id {call_id!r} matches no earlier assistant tool call; Gemini "
                           "needs the function's name for a tool result.", f"messages[{i}].tool_call_id")
            add("user", [{"functionResponse": {"name": name, "response": _result_object(m.get("content"), param)}}])
        elif role == "function":
            add("user", [{"functionResponse": {"name": str(m.get("name") or ""),
                                               "response": _result_object(m.get("content"), param)}}])
    if not contents:
        raise _bad("Gemini needs at least one user or assistant message besides system messages.", "messages")
    return system, contents


def _tools(body: dict[str, Any], provider: str, drop_params: bool) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    declarations: list[dict[str, Any]] = []
    tools = body.get("tools")
    if body.get("functions"):  # the legacy form
        tools = [*(tools or []), *({"type": "function", "function": f} for f in body["functions"])]
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be an array.", "tools", "invalid_type")
    for k, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            if drop_params:
                continue
            raise _bad(f"tools[{k}]: only function tools are supported by provider {provider!r}.",
                       f"tools[{k}].type", "unsupported_parameter")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"tools[{k}].function.name is required.", f"tools[{k}].function.name")
        decl: dict[str, Any] = {"name": name}
        if isinstance(fn.get("description"), str):
            decl["description"] = fn["description"]
        params = fn.get("parameters")
        if isinstance(params, dict) and params.get("properties"):
            decl["parameters"] = to_gemini_schema(params, f"tools[{k}].function.parameters")
        declarations.append(decl)

    choice = body.get("tool_choice", body.get("function_call"))
    config: dict[str, Any] | None = None
    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}.get(choice)
        if mode is None:
            raise _bad(f"tool_choice must be none, auto, required or a function; got {choice!r}.", "tool_choice")
        config = {"mode": mode}
    elif isinstance(choice, dict):
        if choice.get("type") == "allowed_tools":
            allowed = choice.get("allowed_tools") or {}
            names = {((t.get("function") or {}).get("name")) for t in allowed.get("tools") or [] if isinstance(t, dict)}
            declarations = [d for d in declarations if d["name"] in names]
            config = {"mode": "ANY" if allowed.get("mode") == "required" else "AUTO"}
        else:
            name = (choice.get("function") or {}).get("name") if choice.get("type") == "function" else choice.get("name")
            if not isinstance(name, str):
                raise _bad("tool_choice must name a function: {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                           "tool_choice")
            config = {"mode": "ANY", "allowedFunctionNames": [name]}
    elif choice is not None:
        raise _bad("tool_choice must be a string or an object.", "tool_choice", "invalid_type")
    tools_out = [{"functionDeclarations": declarations}] if declarations else []
    return tools_out, ({"functionCallingConfig": config} if config and declarations else None)


def _generation_config(body: dict[str, Any], native_json_schema: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"), ("n", "candidateCount"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = body.get(src)
        if value is not None:
            config[dst] = value
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if isinstance(stop, str):
        config["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        config["stopSequences"] = stop
    effort = body.get("reasoning_effort")
    if effort is not None:
        if effort not in _THINKING_BUDGETS:
            raise _bad(f"reasoning_effort must be one of {', '.join(_THINKING_BUDGETS)}; got {effort!r}.",
                       "reasoning_effort")
        config["thinkingConfig"] = {"thinkingBudget": _THINKING_BUDGETS[effort]}
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        kind = fmt.get("type")
        if kind == "json_object":
            config["responseMimeType"] = "application/json"
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            if not isinstance(schema, dict):
                raise _bad("response_format.json_schema.schema must be a JSON Schema object.",
                           "response_format.json_schema.schema")
            config["responseMimeType"] = "application/json"
            if native_json_schema:
                config["responseJsonSchema"] = schema
            else:
                config["responseSchema"] = to_gemini_schema(schema, "response_format.json_schema.schema")
        elif kind != "text":
            raise _bad(f"response_format.type must be text, json_object or json_schema; got {kind!r}.",
                       "response_format.type")
    elif fmt is not None:
        raise _bad("response_format must be an object.", "response_format", "invalid_type")
    return config


# ------------------------------------------------------------------------------------------------
# Response


def finish_reason(reason: str | None, has_tool_calls: bool) -> str | None:
    """OpenAI's finish_reason for a Gemini finishReason (None while the candidate is unfinished)."""
    if reason is None:
        return None
    mapped = FINISH_REASONS.get(reason, "stop")
    return "tool_calls" if has_tool_calls and mapped == "stop" else mapped


def usage_from_gemini(meta: Any) -> dict[str, Any] | None:
    """usageMetadata → OpenAI usage. Thinking tokens count as completion tokens (as OpenAI counts
    reasoning tokens) and are also reported as completion_tokens_details.reasoning_tokens."""
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                             "total_tokens": int(meta.get("totalTokenCount") or prompt + completion)}
    cached = meta.get("cachedContentTokenCount")
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": int(cached)}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


def tool_calls_from_parts(parts: list[Any], first_index: int = 0) -> list[dict[str, Any]]:
    """functionCall parts → OpenAI tool_calls, numbered from `first_index` (streams continue it)."""
    calls = []
    for part in parts:
        call = part.get("functionCall") if isinstance(part, dict) else None
        if not isinstance(call, dict):
            continue
        entry: dict[str, Any] = {
            "index": first_index + len(calls),
            "id": call["id"] if isinstance(call.get("id"), str) and call["id"] else new_tool_call_id(),
            "type": "function",
            "function": {"name": str(call.get("name", "")), "arguments": orjson.dumps(call.get("args") or {}).decode()},
        }
        if isinstance(part.get("thoughtSignature"), str):
            entry["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
        calls.append(entry)
    return calls


def text_from_parts(parts: list[Any]) -> str:
    """The answer text of a candidate's parts (thinking summaries excluded)."""
    return "".join(p["text"] for p in parts
                   if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))


def gemini_to_openai_response(data: dict[str, Any], model: str, *, created: int | None = None) -> dict[str, Any]:
    """A GenerateContentResponse as an OpenAI `chat.completion` dict."""
    choices = []
    for i, cand in enumerate(data.get("candidates") or []):
        parts = ((cand.get("content") or {}).get("parts")) or []
        calls = tool_calls_from_parts(parts)
        for c in calls:
            del c["index"]
        text = text_from_parts(parts)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": finish_reason(cand.get("finishReason") or "STOP", bool(calls))})
    if not choices and (data.get("promptFeedback") or {}).get("blockReason"):
        choices.append({"index": 0, "message": {"role": "assistant", "content": None}, "logprobs": None,
                        "finish_reason": "content_filter"})
    out: dict[str, Any] = {
        "id": "chatcmpl-" + str(data.get("responseId") or os.urandom(12).hex()),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
    }
    usage = usage_from_gemini(data.get("usageMetadata"))
    if usage is not None:
        out["usage"] = usage
    return out


# ------------------------------------------------------------------------------------------------
# Embeddings


def openai_to_gemini_embeddings(body: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI embeddings body as a `batchEmbedContents` body (one request per input string)."""
    inputs = body.get("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) for s in inputs):
        raise _bad("Provider 'gemini' embeds text only: 'input' must be a string or an array of strings "
                   "(token arrays are not supported).", "input")
    dims = body.get("dimensions")
    requests = []
    for text in inputs:
        req: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if dims is not None:
            req["outputDimensionality"] = dims
        requests.append(req)
    return {"requests": requests}


def gemini_embeddings_to_openai(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A `batchEmbedContents` response as an OpenAI embeddings list (float vectors). Gemini reports
    no token usage for embeddings, so usage is zero."""
    items = []
    for i, emb in enumerate(data.get("embeddings") or []):
        values = emb.get("values") if isinstance(emb, dict) else None
        if not isinstance(values, list):
            raise ValueError(f"embeddings[{i}] has no values")
        items.append({"object": "embedding", "index": i, "embedding": values})
    return {"object": "list", "data": items, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}
