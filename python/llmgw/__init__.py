"""llmgw: a fast LLM gateway speaking the OpenAI and Anthropic APIs to clients."""

from llmgw._core import __version__

__all__ = ["__version__"]
