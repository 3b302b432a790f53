"""An example llmgw plugin: a guardrail that asks an external moderation service about each
prompt before it goes upstream, and optionally about each complete answer before the client sees
it. The service speaks OpenAI's `/v1/moderations` format (OpenAI's own endpoint, or any service
that mimics it):

    POST {url}  {"model": ..., "input": ["text", ...]}
      -> {"results": [{"flagged": bool, "categories": {name: bool}, "category_scores": {name: float}}]}

Hooks: startup / shutdown (one pooled httpx.AsyncClient per worker), pre_request (async: the
user messages' text), post_response (async: a non-streamed answer, with `check_output`).

    plugins:
      - target: plugins.moderation:Moderation
        options:
          url: https://api.openai.com/v1/moderations
          api_key_env: OPENAI_MODERATION_KEY  # the NAME of the environment variable holding the key
          model: omni-moderation-latest
          timeout: 2                          # seconds, connect + wait for the answer
          categories: [violence, self-harm, sexual/minors]   # block only these (default: any flagged)
          roles: [user]                       # whose messages are checked
          check_output: false                 # also check complete (non-streamed) answers
          max_connections: 64                 # pooled connections to the service, per worker
        on_error: closed                      # the service is down or slow: 500 (closed) or let it pass (open)

A flagged prompt is refused with 400 `content_policy_violation` naming the categories, never
quoting the text; the upstream is not called. A flagged answer (with `check_output`) is withheld:
the client gets the completion with `content: null`, a `refusal` saying why and
`finish_reason: "content_filter"` (OpenAI's shape for filtered output), usage unchanged. Streamed
answers are not checked: their text has reached the client by the time it is complete.

When the service cannot answer (refused connection, timeout, a non-2xx status, a malformed body)
the hook raises that exception. It does not decide what happens then: the plugin entry's
`on_error` policy does — `closed` (the default) fails the request with 500 `plugin_error`, `open`
logs and counts the failure and lets the request through unchecked. The plugin publishes its own
counts as the stats source "moderation" (`checked`, `flagged`, `refused`, `withheld`,
`by_category`).
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import httpx

from llmgw.errors import GatewayError
from llmgw.exchange import ChatResponse
from llmgw.plugins import Plugin


class Moderation(Plugin):
    name = "moderation"
    read_only = True  # reads prompts and answers, refuses or withholds; never edits the request body

    def __init__(self, url: str, api_key_env: str | None = None, model: str | None = "omni-moderation-latest",
                 timeout: float = 2.0, categories: list[str] | None = None,
                 roles: list[str] | tuple[str, ...] = ("user",), check_output: bool = False,
                 max_connections: int = 64, **options: Any) -> None:
        super().__init__(**options)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise TypeError("url must be an http(s) URL of a /v1/moderations endpoint")
        self.url = url
        self.api_key_env = api_key_env
        self.model = model
        self.timeout = float(timeout)
        self.block = frozenset(categories) if categories else None  # None: whatever the service flags
        self.roles = frozenset(roles)
        self.check_output = bool(check_output)
        self.max_connections = int(max_connections)
        self.client: httpx.AsyncClient | None = None
        self.counts: Counter[str] = Counter()
        self.by_category: Counter[str] = Counter()

    # -- lifecycle: one pooled client per worker --------------------------------------------------
    async def startup(self, services):
        headers = {"content-type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:  # fail at start (a reload keeps the old config), not on the first request
                raise RuntimeError(f"moderation: environment variable {self.api_key_env} is not set")
            headers["authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.timeout), follow_redirects=False,
            limits=httpx.Limits(max_connections=self.max_connections, max_keepalive_connections=self.max_connections))
        services.add_stats("moderation", self.stats)

    async def shutdown(self):
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    def stats(self) -> dict[str, Any]:
        return {**self.counts, "by_category": dict(self.by_category)}

    # -- hooks ----------------------------------------------------------------------------------------
    async def pre_request(self, ctx, request):
        texts = [t for m in request.body["messages"] if m.get("role") in self.roles for t in _texts(m.get("content"))]
        if not texts:
            return None
        hits = await self._flagged(texts)
        if hits:
            self.counts["refused"] += 1
            raise GatewayError(400, f"The request was refused by the content policy (categories: {', '.join(hits)}).",
                               code="content_policy_violation", param="messages")
        return None

    async def post_response(self, ctx, result):
        if not self.check_output or not isinstance(result, ChatResponse) or result.streamed or result.status >= 300:
            return None
        choices = result.data.get("choices") or []
        texts = [c["message"]["content"] for c in choices
                 if isinstance(c.get("message"), dict) and isinstance(c["message"].get("content"), str)
                 and c["message"]["content"]]
        if not texts:
            return None
        hits = await self._flagged(texts)
        if not hits:
            return None
        self.counts["withheld"] += 1
        data = {**result.data, "choices": [
            {**c, "finish_reason": "content_filter",
             "message": {**(c.get("message") or {}), "content": None,
                         "refusal": f"The answer was withheld by the content policy (categories: {', '.join(hits)})."}}
            for c in choices]}
        return ChatResponse(data, status=result.status, headers=result.headers)  # no raw bytes: `data` is sent

    # -- the service ------------------------------------------------------------------------------
    async def _flagged(self, texts: list[str]) -> list[str]:
        """The blocked categories the service flags in any of `texts` (sorted), [] if none. Raises
        when the service does not answer properly: the plugin's on_error policy decides."""
        assert self.client is not None, "moderation used before startup"
        payload: dict[str, Any] = {"input": texts}
        if self.model:
            payload["model"] = self.model
        response = await self.client.post(self.url, json=payload)
        response.raise_for_status()  # httpx.HTTPStatusError: names the status and URL, not the key
        results = response.json().get("results")
        if not isinstance(results, list) or len(results) != len(texts):
            raise ValueError(f"moderation service answered {type(results).__name__} for {len(texts)} inputs")
        self.counts["checked"] += 1
        hits: set[str] = set()
        for r in results:
            if not r.get("flagged"):
                continue
            flagged = {name for name, on in (r.get("categories") or {}).items() if on}
            if self.block is not None:
                flagged &= self.block
            elif not flagged:
                flagged = {"unspecified"}  # flagged without a category named: still flagged
            hits |= flagged
        if hits:
            self.counts["flagged"] += 1
            self.by_category.update(hits)
        return sorted(hits)


def _texts(content: Any) -> list[str]:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and p.get("type") == "text"
                and isinstance(p.get("text"), str) and p["text"]]
    return []
