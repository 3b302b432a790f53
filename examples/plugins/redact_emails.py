"""An example llmgw plugin: masks e-mail addresses in prompts before they leave for the upstream,
and in answers before they reach the client, streamed answers included: an address split over
several chunks is still caught (the plugin holds back only the end of the text that could still
become an address, and releases it when the stream ends). Hooks: pre_request, post_response,
on_chunk, on_stream_end.

Enable it in the config (with examples/ on PYTHONPATH, or install it as a package):

    plugins:
      - target: plugins.redact_emails:RedactEmails
        options: {mask: "[email]"}
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from typing import Any

from llmgw.exchange import ChatResponse
from llmgw.plugins import Plugin

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# The end of a text that may still grow into an address: a run of address characters.
TAIL = re.compile(r"[A-Za-z0-9._%+@-]{1,254}\Z")


class RedactEmails(Plugin):
    name = "redact-emails"

    def __init__(self, mask: str = "[email]", **options: Any) -> None:
        super().__init__(**options)
        self.mask = mask
        self.masked: Counter[str] = Counter()  # per API key, for the whole worker

    def pre_request(self, ctx, request):
        n = 0
        for message in request.body["messages"]:
            content = message.get("content")
            if isinstance(content, str):
                message["content"], k = EMAIL.subn(self.mask, content)
                n += k
            elif isinstance(content, list):  # content parts: mask the text parts
                for part in content:
                    if part.get("type") == "text":
                        part["text"], k = EMAIL.subn(self.mask, part["text"])
                        n += k
        self.masked[ctx.key_name or "anonymous"] += n
        ctx.response_headers.append(("x-llmgw-emails-masked", str(n)))
        return None

    def post_response(self, ctx, result):
        # A complete (non-streamed) answer: mask it whole.
        if isinstance(result, ChatResponse) and not result.streamed:
            for choice in result.data.get("choices") or ():
                message = choice.get("message") or {}
                if isinstance(message.get("content"), str):
                    message["content"] = EMAIL.sub(self.mask, message["content"])
        return None

    def on_chunk(self, ctx, chunk):
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") if choices else None
        if not delta or not delta.get("content"):
            return chunk
        text = ctx.metadata.pop("emails-held", "") + delta["content"]
        tail = TAIL.search(text)
        cut = tail.start() if tail else len(text)
        ready, held = EMAIL.sub(self.mask, text[:cut]), text[cut:]
        if held:
            ctx.metadata["emails-held"] = held
            ctx.metadata["emails-template"] = chunk
        if not ready:
            return []  # everything is held back for now
        delta["content"] = ready
        return chunk

    def on_stream_end(self, ctx):
        held = ctx.metadata.pop("emails-held", "")
        if not held:
            return None
        chunk = copy.deepcopy(ctx.metadata.pop("emails-template"))
        chunk["choices"][0]["delta"] = {"content": EMAIL.sub(self.mask, held)}
        chunk["choices"][0]["finish_reason"] = None
        return [chunk]
