"""Provider adapters: one module per upstream API, registered by name in `registry`."""

from llmgw.providers.base import (
    ErrorClass,
    ProviderAdapter,
    StreamTranslator,
    UpstreamRequest,
    registry,
)

# Importing an adapter module registers it.
from llmgw.providers import openai as _openai  # noqa: F401
from llmgw.providers import anthropic as _anthropic  # noqa: F401
from llmgw.providers import azure as _azure  # noqa: F401
from llmgw.providers import gemini as _gemini  # noqa: F401
from llmgw.providers import selfhosted as _selfhosted  # noqa: F401

__all__ = ["ErrorClass", "ProviderAdapter", "StreamTranslator", "UpstreamRequest", "registry"]
