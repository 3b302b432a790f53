"""A cheap estimate of how hard a chat request is, for sending easy ones to a cheaper model.

`score(request)` is in [0, 1], from what a request shows before any model sees it: its length
(prompt tokens, counted in Rust), code in it, cues that ask for reasoning ("prove", "step by
step", "trade-offs", ...), tools offered, images, and how long the conversation is. It is a
heuristic, not a classifier: each signal adds a bounded share, so no single one decides alone,
and the weights are written out below for anyone tuning them. A config can name its own scorer
(`complexity.scorer: module:function`); the decision and the score are shown in the
`x-llmgw-route-reason` header and kept in the finish record.
"""

from __future__ import annotations

import re
from typing import Any

from llmgw.tokens import count_tokens

__all__ = ["score", "signals"]

_REASONING = re.compile(
    r"\b(prove|proof|derive|step[- ]by[- ]step|reason(?:ing)?|analy[sz]e|trade-?offs?|compare|architect|design|"
    r"optimi[sz]e|refactor|debug|why does|explain why|evaluate|critique|plan|strategy|algorithm|complexity|"
    r"theorem|formal|rigorous|edge cases?)\b", re.IGNORECASE)
_CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|\breturn\b|#include|\bimport |=>|;\s*$|\{\s*$", re.MULTILINE)

# Each signal's share of the score (they add up to 1).
WEIGHTS = {"length": 0.35, "reasoning": 0.25, "code": 0.15, "tools": 0.1, "images": 0.05, "turns": 0.1}


def _text(messages: list[Any]) -> tuple[str, bool]:
    parts, images = [], False
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for p in content:
                if isinstance(p, dict):
                    if p.get("type") == "text" and isinstance(p.get("text"), str):
                        parts.append(p["text"])
                    elif p.get("type") in ("image_url", "input_image", "image"):
                        images = True
    return "\n".join(parts), images


def signals(body: dict[str, Any]) -> dict[str, float]:
    """Each signal in [0, 1]."""
    messages = body.get("messages") or []
    text, images = _text(messages)
    tokens = count_tokens(text) if text else 0
    return {
        "length": min(tokens / 2000.0, 1.0),  # 2,000 prompt tokens and more: as long as it gets
        "reasoning": min(len(_REASONING.findall(text)) / 3.0, 1.0),
        "code": min(len(_CODE.findall(text)) / 5.0, 1.0),
        "tools": 1.0 if body.get("tools") else 0.0,
        "images": 1.0 if images else 0.0,
        "turns": min(max(len(messages) - 1, 0) / 10.0, 1.0),
    }


def score(body: dict[str, Any]) -> float:
    """The complexity of a chat request body, in [0, 1]."""
    s = signals(body)
    return round(sum(WEIGHTS[k] * v for k, v in s.items()), 3)
