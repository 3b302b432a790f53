"""Fake LLM provider (``llmgw mock-upstream``) for tests, benchmarks and the demo.

Answers OpenAI, Azure OpenAI, Anthropic and Gemini requests in each provider's wire format,
streaming or not, with deterministic request-derived text and controllable faults. See
:class:`MockOptions` for every knob and its ``x-mock-*`` per-request header.
"""

from llmgw.mock.options import MockOptions, add_arguments
from llmgw.mock.runner import MockUpstream, main, run

__all__ = ["MockOptions", "MockUpstream", "add_arguments", "main", "run"]
