"""OpenAI chat completions ⇄ Anthropic Messages: requests and complete responses (pure functions).

Streams are in `translate/anthropic_stream.py`. Decisions a user may notice, in one place:

- System prompts: every OpenAI `system`/`developer` message, wherever it sits, becomes a block of
  Anthropic's top-level `system` (Anthropic has no mid-conversation system turn), in order.
- Consecutive messages of one role are merged into one Anthropic turn (Anthropic alternates
  user/assistant); OpenAI `tool` messages become `tool_result` blocks of a user turn.
- `tool_choice`: auto → auto, required → any, {function: name} → tool, none → tools omitted
  (or, when the history already holds tool calls, which Anthropic only accepts alongside tool
  definitions, sent with `tool_choice: none`). `parallel_tool_calls: false` →
  `disable_parallel_tool_use: true`.
- JSON mode: `response_format: json_schema` becomes one forced tool, `llmgw_json_response`, whose
  input_schema is the schema; its input comes back as the message text (and finish_reason
  "stop"), streamed as it is generated. A forced tool is the only way Anthropic's Messages API
  guarantees output matching a schema; it cannot be combined with the request's own tools (400).
  `json_object` (no schema) adds a system instruction asking for a single JSON object: a forced
  tool with an empty schema would let the model answer `{}`.
- `max_tokens` is required by Anthropic: `max_completion_tokens`, else `max_tokens`, else the
  upstream's `default_max_tokens` option (4096).
- Usage: OpenAI's `prompt_tokens` counts every input token, cached or not, so
  prompt_tokens = input_tokens + cache_read_input_tokens + cache_creation_input_tokens;
  `prompt_tokens_details.cached_tokens` = cache_read_input_tokens, and
  `prompt_tokens_details.cache_creation_tokens` (an extension) = cache_creation_input_tokens.
- `cache_control` on a content part, on a message (applied to its last block) or on a tool
  passes through unchanged. `top_k` (an extension vLLM also accepts) maps to Anthropic's top_k.
- Which stop sequence ended the answer is kept in the choice's `stop_reason` (vLLM's field).
- Parameters Anthropic cannot honour (UNSUPPORTED_PARAMS, and any unknown one) are a 400 naming
  the parameter, or dropped when the upstream sets `drop_params: true`. Neutral values (n=1,
  logprobs=false, penalties 0, ...) are accepted silently. IGNORED_PARAMS never change the
  answer and are always dropped.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

__all__ = [
    "ANTHROPIC_EXTENSION_FIELDS",
    "IGNORED_PARAMS",
    "JSON_TOOL_NAME",
    "UNSUPPORTED_PARAMS",
    "TranslationError",
    "anthropic_to_openai_request",
    "anthropic_to_openai_response",
    "anthropic_usage_from_openai",
    "finish_reason_from_stop_reason",
    "openai_to_anthropic_request",
    "openai_to_anthropic_response",
    "openai_usage_from_anthropic",
    "stop_reason_from_finish_reason",
]

JSON_TOOL_NAME = "llmgw_json_response"
JSON_OBJECT_INSTRUCTION = "Respond only with a single valid JSON object, with no text before or after it."

#: OpenAI parameters with no Anthropic equivalent, and their neutral values (which are accepted).
UNSUPPORTED_PARAMS: dict[str, tuple[Any, ...]] = {
    "n": (1,),
    "logprobs": (False,),
    "top_logprobs": (0,),
    "presence_penalty": (0, 0.0),
    "frequency_penalty": (0, 0.0),
    "logit_bias": ({},),
    "seed": (),
    "audio": (),
    "modalities": (["text"],),
    "prediction": (),
    "reasoning_effort": (),
    "web_search_options": (),
    "functions": ([],),
    "function_call": (),
    "verbosity": (),
}
#: OpenAI parameters that do not change the answer (storage, billing tier): always dropped.
IGNORED_PARAMS = frozenset({"store", "metadata", "service_tier"})
_HANDLED = frozenset({
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "stop", "tools", "tool_choice", "parallel_tool_calls", "response_format", "user",
})
#: Anthropic-only request fields carried in the canonical request as extensions.
ANTHROPIC_EXTENSION_FIELDS = ("cache_control", "top_k", "is_error")

_STOP_TO_FINISH = {
    "end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop", "max_tokens": "length",
    "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter",
}
_FINISH_TO_STOP = {
    "stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
    "content_filter": "refusal",
}


class TranslationError(ValueError):
    """A request that cannot be expressed in the target format: the client's 400, naming `param`."""

    def __init__(self, message: str, param: str, code: str = "unsupported_parameter") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def finish_reason_from_stop_reason(stop_reason: str | None) -> str | None:
    """Anthropic stop_reason → OpenAI finish_reason (unknown reasons read as "stop")."""
    if stop_reason is None:
        return None
    return _STOP_TO_FINISH.get(stop_reason, "stop")


def stop_reason_from_finish_reason(finish_reason: str | None, stop_sequence: Any = None) -> str | None:
    """OpenAI finish_reason → Anthropic stop_reason; a known matched stop string → "stop_sequence"."""
    if finish_reason is None:
        return None
    if finish_reason == "stop" and isinstance(stop_sequence, str):
        return "stop_sequence"
    return _FINISH_TO_STOP.get(finish_reason, "end_turn")


def openai_usage_from_anthropic(usage: Any) -> dict[str, Any]:
    """Anthropic usage → OpenAI usage (see the module docstring for how prompt_tokens is counted)."""
    u = usage if isinstance(usage, dict) else {}
    fresh = int(u.get("input_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    created = int(u.get("cache_creation_input_tokens") or 0)
    out = int(u.get("output_tokens") or 0)
    prompt = fresh + read + created
    return {"prompt_tokens": prompt, "completion_tokens": out, "total_tokens": prompt + out,
            "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": created}}


def anthropic_usage_from_openai(usage: Any) -> dict[str, int]:
    """OpenAI usage → Anthropic usage: the inverse of openai_usage_from_anthropic."""
    u = usage if isinstance(usage, dict) else {}
    details = u.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    read = int(details.get("cached_tokens") or 0)
    created = int(details.get("cache_creation_tokens") or 0)
    prompt = int(u.get("prompt_tokens") or 0)
    return {"input_tokens": max(prompt - read - created, 0), "cache_creation_input_tokens": created,
            "cache_read_input_tokens": read, "output_tokens": int(u.get("completion_tokens") or 0)}


# ------------------------------------------------------------------------------------------------
# OpenAI request → Anthropic request (the `anthropic` upstream adapter)

def openai_to_anthropic_request(body: dict[str, Any], model: str, *, stream: bool, default_max_tokens: int = 4096,
                                drop_params: bool = False) -> dict[str, Any]:
    """The Anthropic Messages request for a canonical chat request (raises TranslationError)."""
    for key, value in body.items():
        if key in _HANDLED or key in IGNORED_PARAMS or value is None:
            continue
        neutral = UNSUPPORTED_PARAMS.get(key)
        if neutral is not None and value in neutral:
            continue
        if not drop_params:
            what = "is not supported by Anthropic" if neutral is not None else "is not a known parameter"
            raise TranslationError(f"Parameter '{key}' {what} (set the upstream option drop_params: true to "
                                   "drop it instead).", key)
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    has_tool_history = False
    for i, msg in enumerate(body.get("messages") or ()):
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend(_text_blocks(msg.get("content"), f"messages[{i}].content", msg.get("cache_control")))
        elif role == "user":
            _add_turn(turns, "user", _user_blocks(msg.get("content"), i, msg.get("cache_control")))
        elif role == "assistant":
            blocks = _assistant_blocks(msg, i)
            has_tool_history = has_tool_history or any(b["type"] == "tool_use" for b in blocks)
            if blocks:
                _add_turn(turns, "assistant", blocks)
        elif role == "tool":
            has_tool_history = True
            result: dict[str, Any] = {"type": "tool_result", "tool_use_id": _str(msg.get("tool_call_id"),
                                                                                 f"messages[{i}].tool_call_id")}
            content = msg.get("content")
            result["content"] = content if isinstance(content, str) else _text_blocks(content, f"messages[{i}].content")
            if msg.get("is_error"):
                result["is_error"] = True
            if msg.get("cache_control"):
                result["cache_control"] = msg["cache_control"]
            _add_turn(turns, "user", [result])
        else:
            raise TranslationError(f"messages[{i}].role {role!r} cannot be sent to Anthropic.", f"messages[{i}].role",
                                   "invalid_value")
    out: dict[str, Any] = {"model": model, "messages": [_collapse(t) for t in turns]}
    out["max_tokens"] = _max_tokens(body, default_max_tokens)
    if system:
        out["system"] = system
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    _tools(body, out, has_tool_history)
    _response_format(body.get("response_format"), out)
    if stream:
        out["stream"] = True
    return out


def _str(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value:
        raise TranslationError(f"'{param}' must be a non-empty string.", param, "invalid_value")
    return value


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TranslationError(f"'{key}' must be a positive integer.", key, "invalid_value")
            return value
    return default


def _add_turn(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _collapse(turn: dict[str, Any]) -> dict[str, Any]:
    blocks = turn["content"]
    if len(blocks) == 1 and blocks[0]["type"] == "text" and len(blocks[0]) == 2:
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return turn


def _with_cache(block: dict[str, Any], part: Any) -> dict[str, Any]:
    if isinstance(part, dict) and part.get("cache_control"):
        block["cache_control"] = part["cache_control"]
    return block


def _text_block(part: Any, param: str) -> dict[str, Any] | None:
    """One OpenAI text (or refusal) part → an Anthropic text block; None for empty text."""
    if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        raise TranslationError(f"{param} of type {kind!r} cannot be sent to Anthropic; only text and image_url "
                               "parts can.", f"{param}.type", "invalid_value")
    text = part.get("text") if part.get("type") == "text" else part.get("refusal")
    return _with_cache({"type": "text", "text": text}, part) if text else None


def _text_blocks(content: Any, param: str, cache_control: Any = None) -> list[dict[str, Any]]:
    """String or list of text parts → Anthropic text blocks (empty text dropped: Anthropic rejects it)."""
    if content is None:
        return []
    if isinstance(content, str):
        blocks = [{"type": "text", "text": content}] if content else []
    elif isinstance(content, list):
        blocks = [b for j, part in enumerate(content) if (b := _text_block(part, f"{param}[{j}]")) is not None]
    else:
        raise TranslationError(f"'{param}' must be a string or an array of content parts.", param, "invalid_type")
    if cache_control and blocks:
        blocks[-1]["cache_control"] = cache_control
    return blocks


def _user_blocks(content: Any, i: int, cache_control: Any) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, f"messages[{i}].content", cache_control)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, dict) and part.get("type") == "image_url":
            blocks.append(_with_cache(_image_block(part.get("image_url"), param), part))
        elif (block := _text_block(part, param)) is not None:
            blocks.append(block)
    if cache_control and blocks:
        blocks[-1]["cache_control"] = cache_control
    return blocks


def _image_block(image: Any, param: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise TranslationError(f"{param}.image_url.url must be a string.", f"{param}.image_url", "invalid_value")
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not sep or encoding != "base64" or not media_type:
            raise TranslationError(f"{param}.image_url.url must be a base64 data URL (data:image/png;base64,...).",
                                   f"{param}.image_url", "invalid_value")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise TranslationError(f"{param}.image_url.url must be an http(s) URL or a base64 data URL.",
                           f"{param}.image_url", "invalid_value")


def _assistant_blocks(msg: dict[str, Any], i: int) -> list[dict[str, Any]]:
    blocks = _text_blocks(msg.get("content"), f"messages[{i}].content")
    for k, call in enumerate(msg.get("tool_calls") or ()):
        param = f"messages[{i}].tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict):
            raise TranslationError(f"{param}.function is required.", param, "invalid_value")
        args = fn.get("arguments") or "{}"
        try:
            parsed = orjson.loads(args) if isinstance(args, str) else args
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            raise TranslationError(f"{param}.function.arguments must be a JSON object.",
                                   f"{param}.function.arguments", "invalid_value")
        blocks.append({"type": "tool_use", "id": _str(call.get("id"), f"{param}.id"),
                       "name": _str(fn.get("name"), f"{param}.function.name"), "input": parsed})
    if msg.get("cache_control") and blocks:
        blocks[-1]["cache_control"] = msg["cache_control"]
    return blocks


def _tools(body: dict[str, Any], out: dict[str, Any], has_tool_history: bool) -> None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise TranslationError("'tool_choice' needs 'tools'.", "tool_choice", "invalid_value")
        return
    converted = []
    for k, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(fn, dict):
            raise TranslationError(f"tools[{k}] must be a function tool.", f"tools[{k}]", "invalid_value")
        name = _str(fn.get("name"), f"tools[{k}].function.name")
        if name == JSON_TOOL_NAME:
            raise TranslationError(f"The tool name {JSON_TOOL_NAME!r} is reserved by the gateway.",
                                   f"tools[{k}].function.name", "invalid_value")
        t: dict[str, Any] = {"name": name, "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            t["description"] = fn["description"]
        converted.append(_with_cache(t, tool))
    if choice == "none":
        if not has_tool_history:
            return
        anthropic_choice: dict[str, Any] = {"type": "none"}
    elif choice is None or choice == "auto":
        anthropic_choice = {"type": "auto"}
    elif choice == "required":
        anthropic_choice = {"type": "any"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        anthropic_choice = {"type": "tool", "name": _str(choice["function"].get("name"), "tool_choice.function.name")}
    else:
        raise TranslationError("'tool_choice' must be none, auto, required or {type: function, function: {name}}.",
                               "tool_choice", "invalid_value")
    if body.get("parallel_tool_calls") is False and anthropic_choice["type"] != "none":
        anthropic_choice["disable_parallel_tool_use"] = True
    out["tools"] = converted
    out["tool_choice"] = anthropic_choice


def _response_format(fmt: Any, out: dict[str, Any]) -> None:
    if fmt is None:
        return
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        out.setdefault("system", []).append({"type": "text", "text": JSON_OBJECT_INSTRUCTION})
        return
    if kind != "json_schema":
        raise TranslationError("'response_format.type' must be text, json_object or json_schema.",
                               "response_format", "invalid_value")
    spec = fmt.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise TranslationError("'response_format.json_schema.schema' must be a JSON schema of an object.",
                               "response_format.json_schema.schema", "invalid_value")
    if out.get("tool_choice", {}).get("type") not in (None, "none"):
        raise TranslationError("'response_format' json_schema cannot be combined with tools for Anthropic upstreams "
                               "(it is carried out with a forced tool).", "response_format")
    name = spec.get("name") or "response"
    description = f"Give the final answer by calling this tool: its input is the answer, a JSON object matching the '{name}' schema."
    if spec.get("description"):
        description += f" {spec['description']}"
    # after the request's own tools when tool_choice none kept them (its history has tool calls)
    out["tools"] = [*out.get("tools", ()), {"name": JSON_TOOL_NAME, "description": description, "input_schema": schema}]
    out["tool_choice"] = {"type": "tool", "name": JSON_TOOL_NAME}


# ------------------------------------------------------------------------------------------------
# Anthropic response → OpenAI response

def anthropic_to_openai_response(msg: dict[str, Any], model: str, *, created: int | None = None) -> dict[str, Any]:
    """A Messages API `message` as a `chat.completion` (model: the name the client asked for)."""
    if not isinstance(msg, dict) or msg.get("type") != "message" or not isinstance(msg.get("content"), list):
        raise ValueError("not an Anthropic message object")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    json_answer = False
    for block in msg["content"]:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use" and block.get("name") == JSON_TOOL_NAME:
            texts.append(orjson.dumps(block.get("input") or {}).decode())
            json_answer = True
        elif kind == "tool_use":
            calls.append({"id": block.get("id"), "type": "function",
                          "function": {"name": block.get("name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        # thinking / redacted_thinking / server tool blocks have no chat-completions equivalent
    finish = finish_reason_from_stop_reason(msg.get("stop_reason"))
    if json_answer and finish == "tool_calls" and not calls:
        finish = "stop"
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
    if msg.get("stop_reason") == "stop_sequence" and msg.get("stop_sequence"):
        choice["stop_reason"] = msg["stop_sequence"]
    return {"id": msg.get("id") or "msg_llmgw", "object": "chat.completion",
            "created": int(time.time()) if created is None else created, "model": model,
            "choices": [choice], "usage": openai_usage_from_anthropic(msg.get("usage"))}


# ------------------------------------------------------------------------------------------------
# Anthropic request → OpenAI request (the /v1/messages client dialect)

def anthropic_to_openai_request(body: dict[str, Any], *, keep_extensions: bool = False) -> dict[str, Any]:
    """The canonical chat request for a Messages API request (raises TranslationError).

    `keep_extensions`: carry Anthropic-only fields (cache_control, top_k, tool_result is_error) in
    the canonical request; set it when the request is routed to an Anthropic upstream, which reads
    them back, and leave it off for OpenAI-format upstreams, which would reject them. Structured
    outputs (`output_config.format`) become `response_format` json_schema. `thinking` and
    `output_config.effort` are not translated (400); other fields Anthropic may add are ignored.
    """
    if body.get("thinking") not in (None, {"type": "disabled"}):
        raise TranslationError("Parameter 'thinking' is not supported by this gateway.", "thinking")
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    elif isinstance(system, list) and system:
        messages.append({"role": "system", "content": [_openai_text_part(b, f"system[{j}]", keep_extensions)
                                                      for j, b in enumerate(system)]})
    for i, msg in enumerate(body["messages"]):
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if msg["role"] == "assistant":
            messages.append(_openai_assistant(blocks, i, keep_extensions))
        else:
            _openai_user(blocks, i, keep_extensions, messages)
    out: dict[str, Any] = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if keep_extensions and body.get("top_k") is not None:
        out["top_k"] = body["top_k"]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]
    _openai_tools(body, out, keep_extensions)
    _openai_output_format(body.get("output_config"), out)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _openai_output_format(config: Any, out: dict[str, Any]) -> None:
    """Anthropic structured outputs (`output_config.format`) → OpenAI `response_format` json_schema."""
    if config is None:
        return
    if not isinstance(config, dict) or set(config) - {"format"}:
        extra = sorted(set(config) - {"format"}) if isinstance(config, dict) else ["output_config"]
        raise TranslationError(f"output_config.{extra[0]} is not supported by this gateway.", f"output_config.{extra[0]}")
    fmt = config.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise TranslationError("output_config.format must be {type: json_schema, schema: {...}}.",
                               "output_config.format", "invalid_value")
    out["response_format"] = {"type": "json_schema",
                              "json_schema": {"name": "response", "schema": fmt["schema"], "strict": True}}


def _openai_text_part(block: Any, param: str, keep: bool) -> dict[str, Any]:
    if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
        raise TranslationError(f"{param} must be a text block.", param, "invalid_value")
    part = {"type": "text", "text": block["text"]}
    return _with_cache(part, block) if keep else part


def _openai_user(blocks: list[Any], i: int, keep: bool, messages: list[dict[str, Any]]) -> None:
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        param = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            if parts:  # text before a tool result (unusual): keep the order
                messages.append({"role": "user", "content": parts})
                parts = []
            content = block.get("content")
            if isinstance(content, list):
                content = [_openai_text_part(b, f"{param}.content[{k}]", keep) for k, b in enumerate(content)]
            tool: dict[str, Any] = {"role": "tool", "tool_call_id": _str(block.get("tool_use_id"), f"{param}.tool_use_id"),
                                    "content": content if content is not None else ""}
            if keep and block.get("is_error"):
                tool["is_error"] = True
            if keep and block.get("cache_control"):
                tool["cache_control"] = block["cache_control"]
            messages.append(tool)
        elif kind == "image":
            parts.append(_openai_image_part(block, param, keep))
        else:
            parts.append(_openai_text_part(block, param, keep))
    if parts:
        plain = len(parts) == 1 and len(parts[0]) == 2 and parts[0]["type"] == "text"
        messages.append({"role": "user", "content": parts[0]["text"] if plain else parts})


def _openai_image_part(block: dict[str, Any], param: str, keep: bool) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif kind == "url":
        url = source.get("url")
    else:
        raise TranslationError(f"{param}.source.type must be base64 or url.", f"{param}.source", "invalid_value")
    part = {"type": "image_url", "image_url": {"url": url}}
    return _with_cache(part, block) if keep else part


def _openai_assistant(blocks: list[Any], i: int, keep: bool) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        param = f"messages[{i}].content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            calls.append({"id": _str(block.get("id"), f"{param}.id"), "type": "function",
                          "function": {"name": _str(block.get("name"), f"{param}.name"),
                                       "arguments": orjson.dumps(block.get("input") or {}).decode()}})
        elif kind in ("thinking", "redacted_thinking"):
            continue  # only meaningful with `thinking`, which is refused above
        else:
            parts.append(_openai_text_part(block, param, keep))
    msg: dict[str, Any] = {"role": "assistant"}
    if any(len(p) > 2 for p in parts):  # a part with cache_control stays a part
        msg["content"] = parts
    else:
        msg["content"] = "".join(p["text"] for p in parts) if parts or not calls else None
    if calls:
        msg["tool_calls"] = calls
    return msg


def _openai_tools(body: dict[str, Any], out: dict[str, Any], keep: bool) -> None:
    tools = body.get("tools")
    if tools:
        converted = []
        for k, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") not in (None, "custom") or not tool.get("name"):
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise TranslationError(f"tools[{k}] of type {kind!r} is not supported: only client tools "
                                       "(name, description, input_schema) are.", f"tools[{k}]")
            fn: dict[str, Any] = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
            if tool.get("description"):
                fn["description"] = tool["description"]
            entry: dict[str, Any] = {"type": "function", "function": fn}
            converted.append(_with_cache(entry, tool) if keep else entry)
        out["tools"] = converted
    choice = body.get("tool_choice")
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": _str(choice.get("name"), "tool_choice.name")}}
    else:
        raise TranslationError("tool_choice.type must be auto, any, tool or none.", "tool_choice.type", "invalid_value")
    if choice.get("disable_parallel_tool_use") and tools:
        out["parallel_tool_calls"] = False


# ------------------------------------------------------------------------------------------------
# OpenAI response → Anthropic response

def anthropic_message_id(openai_id: Any) -> str:
    """An Anthropic-looking message id for a canonical response id."""
    text = str(openai_id or "llmgw")
    return text if text.startswith("msg_") else f"msg_{text}"


def tool_input(arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as Anthropic's `input` object (invalid JSON kept under `_raw_arguments`)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        parsed = None
    return parsed if isinstance(parsed, dict) else {"_raw_arguments": arguments}


def openai_to_anthropic_response(resp: dict[str, Any], model: str) -> dict[str, Any]:
    """A canonical `chat.completion` as a Messages API `message` (first choice only)."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    msg = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = msg.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in msg.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"),
                        "input": tool_input(fn.get("arguments"))})
    matched = choice.get("stop_reason")
    stop_reason = stop_reason_from_finish_reason(choice.get("finish_reason"), matched)
    return {"id": anthropic_message_id(resp.get("id")), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop_reason,
            "stop_sequence": matched if stop_reason == "stop_sequence" else None,
            "usage": anthropic_usage_from_openai(resp.get("usage"))}
