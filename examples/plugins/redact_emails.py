"""An example llmgw plugin: masks e-mail addresses in prompts before they leave for the upstream,
and counts how many it masked per API key (shown in a response header).

Enable it in the config (with examples/ on PYTHONPATH, or install it as a package):

    plugins:
      - target: plugins.redact_emails:RedactEmails
        options: {mask: "[email]"}
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from llmgw.plugins import Plugin

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class RedactEmails(Plugin):
    name = "redact-emails"

    def __init__(self, mask: str = "[email]", **options: Any) -> None:
        super().__init__(**options)
        self.mask = mask
        self.masked: Counter[str] = Counter()

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
