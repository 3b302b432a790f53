"""Token counting: exact BPE counts for OpenAI models, documented estimates for the rest.

The Rust extension does the work (rust/src/tokens/); this module only names the public API.

- OpenAI models map to `o200k_base` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4, gpt-oss) or
  `cl100k_base` (gpt-4, gpt-4-turbo, gpt-3.5-turbo, text-embedding-3-*, ada-002) by longest
  prefix; counts equal tiktoken's.
- Claude models: o200k count x 1.25, rounded up (Anthropic's tokenizer is unpublished; public
  comparisons put it 10-30% above o200k, so this errs high). Gemini: o200k count x 1.0.
  Unknown models: o200k count. All three give `TokenCount.exact == False`.
- Chat overheads follow the OpenAI Cookbook ("How to count tokens with tiktoken"): 3 tokens per
  message, 1 per `name`, 3 for reply priming; tools by its `num_tokens_for_tools` (7 per
  function on o200k, 10 on cl100k, 3 per property, -3 + 3 per item for enums, 12 at the end).
- Images: low detail = 85 tokens; high/auto = fit in 2048x2048, shortest side to 768, 170 per
  512 px tile + 85 (gpt-4o-mini: 2833 + 5667 per tile; o1/o3: 75 + 150). The size is read from
  `data:` URLs; a remote image is assumed square and >= 768 px (4 tiles: 765 on gpt-4o).
"""

from llmgw._core import TokenCount, context_window, count_chat_tokens, count_tokens

__all__ = ["TokenCount", "context_window", "count_chat_tokens", "count_tokens"]
