"""Self-hosted, GPU-served model servers that speak OpenAI chat completions: presets of the OpenAI
adapter (`provider: vllm | tgi | ollama | llamacpp`).

Each preset supplies the server's default base URL, so `base_url` may be left out of the config
when the server runs on the gateway's host with its defaults, and knows how that server words a
"prompt too long" error so it is classified as context_length_exceeded (a fallback to a
larger-context model can then serve it). No Authorization header is sent unless `api_key` is set
(these servers run without keys by default; vLLM's `--api-key` and llama.cpp's `--api-key` check
a Bearer key when configured).

Default ports, from each project's documentation:
    vLLM        `vllm serve` listens on 8000                          http://127.0.0.1:8000/v1
    TGI         `text-generation-launcher --port` defaults to 3000    http://127.0.0.1:3000/v1
                (its Docker quickstart maps host 8080 to the container's port 80: set base_url then)
    Ollama      listens on 11434, OpenAI routes under /v1             http://127.0.0.1:11434/v1
    llama.cpp   `llama-server` listens on 127.0.0.1:8080              http://127.0.0.1:8080/v1
"""

from __future__ import annotations

from typing import ClassVar

from llmgw.providers.base import registry
from llmgw.providers.openai import OpenAIAdapter

__all__ = ["LlamaCppAdapter", "OllamaAdapter", "TGIAdapter", "VLLMAdapter"]

_OPENAI_HINTS = OpenAIAdapter.context_hints


@registry.register
class VLLMAdapter(OpenAIAdapter):
    """vLLM's OpenAI-compatible server. Context errors read "This model's maximum context length
    is N tokens. However, you requested M tokens ..." (HTTP 400)."""

    name: ClassVar[str] = "vllm"
    default_base_url: ClassVar[str] = "http://127.0.0.1:8000/v1"


@registry.register
class TGIAdapter(OpenAIAdapter):
    """Hugging Face text-generation-inference's Messages API. Too-long prompts are validation
    errors (HTTP 422): "Input validation error: `inputs` tokens + `max_new_tokens` must be <= N".
    TGI serves no embeddings (text-embeddings-inference does: use `provider: openai` for it)."""

    name: ClassVar[str] = "tgi"
    default_base_url: ClassVar[str] = "http://127.0.0.1:3000/v1"
    context_hints: ClassVar[tuple[str, ...]] = _OPENAI_HINTS + ("`max_new_tokens` must be <=",
                                                                "inputs` must have less than")
    embeddings_request = None  # type: ignore[assignment]  # no embeddings route: see the docstring
    embeddings_response = None  # type: ignore[assignment]


@registry.register
class OllamaAdapter(OpenAIAdapter):
    """Ollama's OpenAI-compatible routes. Ollama truncates an over-long prompt to the model's
    num_ctx instead of failing, so there is no context error to recognise."""

    name: ClassVar[str] = "ollama"
    default_base_url: ClassVar[str] = "http://127.0.0.1:11434/v1"


@registry.register
class LlamaCppAdapter(OpenAIAdapter):
    """llama.cpp's `llama-server`. Context errors: HTTP 400, type `exceed_context_size_error`,
    "the request exceeds the available context size, try increasing it"."""

    name: ClassVar[str] = "llamacpp"
    default_base_url: ClassVar[str] = "http://127.0.0.1:8080/v1"
    context_hints: ClassVar[tuple[str, ...]] = _OPENAI_HINTS + ("exceed_context_size_error",
                                                                "exceeds the available context size")
