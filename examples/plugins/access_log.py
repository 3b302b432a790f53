"""An example llmgw plugin: a JSON-lines access log, one line per request, written in batches off
the request path, and a route that shows what it has written. Hooks: startup (a background queue
and a route from the services), on_finish (every request, whatever happened), shutdown.

    plugins:
      - target: plugins.access_log:AccessLog
        options: {path: /var/log/llmgw/access.jsonl}

`GET /_access_log` answers {"written": N, "queued": M, "dropped": K}. On SIGTERM the queue is
flushed before the worker exits, so no line of a request that was answered is lost.
"""

from __future__ import annotations

import json
import time
from typing import Any

from llmgw.plugins import Plugin
from llmgw.services import RouteResponse


class AccessLog(Plugin):
    name = "access-log"
    kinds = frozenset({"chat", "embeddings", "models"})
    read_only = True

    def __init__(self, path: str, **options: Any) -> None:
        super().__init__(**options)
        self.path = path
        self.written = 0
        self.queue = None

    def startup(self, services):
        self.queue = services.queue("access-log", self.write, batch=1000, interval=1.0)
        services.add_route("GET", "/_access_log", self.stats)

    def write(self, lines):  # runs in the queue's task, never on the request path
        with open(self.path, "a", encoding="utf-8") as f:
            f.writelines(lines)
        self.written += len(lines)

    async def stats(self, ctx, request):
        q = self.queue.stats()
        return RouteResponse({"written": self.written, "queued": q["depth"], "dropped": q["dropped"]})

    def on_finish(self, ctx, outcome):
        usage = outcome.usage
        self.queue.put(json.dumps({
            "time": round(time.time(), 3), "request_id": ctx.request_id, "kind": ctx.kind, "key": ctx.key_name,
            "model": ctx.model, "status": outcome.status, "result": outcome.result,
            "upstream": outcome.served_by, "attempts": len(outcome.attempts),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "usage_estimated": outcome.usage_estimated, "duration_ms": round(outcome.duration * 1000, 2),
            "overhead_ms": round(outcome.overhead_s * 1000, 3),
        }) + "\n")
