"""Shadow traffic: a sample of a group's requests copied to a candidate deployment.

The copy runs in a task of its own after the caller's request was planned; it never touches the
caller's answer, latency or errors (it is not awaited, its failures are swallowed, and at most
`MAX_INFLIGHT` copies run at once per worker: beyond that a copy is skipped and counted). A
streaming request is copied as a non-streaming one. Each result is recorded: counters and the
last `KEEP` results (status, latency, usage, answer length) in `stats()`, published to /metrics
and the dashboard through the services.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from llmgw.errors import UpstreamFailure
from llmgw.exchange import Attempt, RequestContext, Usage
from llmgw.upstream import exchange

if TYPE_CHECKING:
    from llmgw.exchange import ChatRequest
    from llmgw.routing.planner import Router
    from llmgw.upstream import Scrubber, Target

__all__ = ["ShadowTraffic"]

log = logging.getLogger("llmgw")

MAX_INFLIGHT = 64
KEEP = 100


class ShadowTraffic:
    def __init__(self) -> None:
        self.inflight = 0
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP)
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_copy(self, ctx: RequestContext, req: ChatRequest, router: Router, targets: dict[str, Target],
                   scrub: Scrubber) -> None:
        plan = ctx.plan
        group = router.group(plan.group) if plan is not None else None
        shadow = group.shadow if group is not None else None
        if shadow is None or random.random() >= shadow.sample:
            return
        if shadow.to in router.groups:
            deployment = router.groups[shadow.to].deployments[0]
        else:
            deployment = router.deployments[shadow.to][0]
        if self.inflight >= MAX_INFLIGHT:
            self.skipped += 1
            return
        body = {k: v for k, v in req.body.items() if k not in ("stream", "stream_options")}
        task = asyncio.get_running_loop().create_task(
            self._copy(ctx.request_id, plan.group if plan else "", deployment.name, targets[deployment.upstream],
                       deployment.model, body, scrub))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, request_id: str, group: str, deployment: str, target: Target, model: str,
                    body: dict[str, Any], scrub: Scrubber) -> None:
        self.inflight += 1
        self.sent += 1
        started = time.perf_counter()
        record: dict[str, Any] = {"request_id": request_id, "group": group, "deployment": deployment}
        ctx = RequestContext(f"{request_id}-shadow", started, kind="shadow")
        try:
            ureq = target.adapter.chat_request(body, model, False, None)
            raw = await exchange(target, ureq, Attempt(target.name, model, started), ctx, scrub)
            answer = target.adapter.chat_response(raw, model)
            usage = Usage.from_openai(answer.get("usage"))
            text = ((answer.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
            record.update(status=200, usage=[usage.prompt_tokens, usage.completion_tokens] if usage else None,
                          answer_chars=len(text))
        except UpstreamFailure as f:
            self.failed += 1
            record.update(status=f.status, error=f.code)
        except Exception as exc:  # never let a copy's trouble escape
            self.failed += 1
            record.update(status=0, error=type(exc).__name__)
            log.debug("shadow copy of %s failed", request_id, exc_info=exc)
        finally:
            self.inflight -= 1
        record["latency_s"] = round(time.perf_counter() - started, 6)
        self.recent.append(record)

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent, "failed": self.failed, "skipped": self.skipped, "inflight": self.inflight,
                "recent": list(self.recent)}

    async def drain(self, timeout: float = 10.0) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
