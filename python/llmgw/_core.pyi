"""Type stubs for the Rust extension `llmgw._core` (built from rust/ by maturin).

Each section below belongs to one Rust module (rust/src/<name>.rs); keep them in that order.
"""

__version__: str

# --- sse (rust/src/sse.rs) -------------------------------------------------------------------

# --- tokens (rust/src/tokens/) ---------------------------------------------------------------

class TokenCount:
    """A prompt's token count.

    `tokens` is the count; `exact` is True when it was made with the model's own tokenizer
    (OpenAI models: o200k_base or cl100k_base) and False for estimates (Anthropic, Gemini and
    unknown models: the o200k count scaled by a stated factor, see `llmgw.tokens`); `encoding` names
    the BPE encoding used. `int(count)` gives `tokens`.
    """

    @property
    def tokens(self) -> int: ...
    @property
    def exact(self) -> bool: ...
    @property
    def encoding(self) -> str: ...
    def __int__(self) -> int: ...

def count_tokens(text: str, model: str = "gpt-4o") -> int:
    """Number of tokens `text` becomes for `model` (exactly tiktoken's `encode_ordinary` length
    for OpenAI models; an estimate for others). Special-token text such as `<|endoftext|>` is
    counted as plain text; lone surrogates are replaced as tiktoken replaces them. `model` may
    also be an encoding name (`"o200k_base"`, `"cl100k_base"`). The first use of an encoding
    loads its table (~40 ms); the GIL is released for texts of 64 KB or more."""

def count_chat_tokens(
    messages: list[dict[str, object]], model: str = "gpt-4o", tools: list[dict[str, object]] | None = None
) -> TokenCount:
    """Prompt tokens of a chat request by the OpenAI Cookbook formulas: 3 per message, each
    value's tokens, 1 per `name`, 3 to prime the reply; tool definitions by the cookbook's
    `num_tokens_for_tools`; images by the tile formula. Raises TypeError if `messages` is not a
    list of dicts."""

def context_window(model: str) -> int | None:
    """Published context window of `model` in tokens (longest-prefix match, so dated variants
    work), or None if the model is unknown."""
