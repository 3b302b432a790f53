"""llmgw: a fast LLM gateway speaking the OpenAI and Anthropic APIs to clients."""

from llmgw._core import __version__
from llmgw.tokens import TokenCount, context_window, count_chat_tokens, count_tokens

__all__ = ["TokenCount", "__version__", "context_window", "count_chat_tokens", "count_tokens"]
