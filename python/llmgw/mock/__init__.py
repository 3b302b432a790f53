"""Fake LLM provider (``llmgw mock-upstream``) for tests, benchmarks and the demo.

Endpoints, each answering in that provider's wire format (streaming and not):

=========================================================================  ===================
``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models``   OpenAI
``POST /openai/deployments/{d}/chat/completions|embeddings?api-version=``    Azure OpenAI
``POST /v1/messages``                                                        Anthropic
``POST /v1beta/models/{m}:generateContent`` / ``:streamGenerateContent``     Gemini (also /v1/)
``GET /_mock/stats``, ``POST /_mock/reset``, ``GET /_mock/last-request``     control
=========================================================================  ===================

Auth: required by default, like the real APIs, so tests prove the gateway sends keys. Any
non-empty key is accepted (``--api-key K`` accepts only K): OpenAI ``Authorization: Bearer``;
Azure ``api-key`` (or Bearer); Anthropic ``x-api-key`` (or Bearer, as the 2.x SDK sends) plus a
required ``anthropic-version``; Gemini ``x-goog-api-key`` or ``?key=``. ``--no-auth`` turns the
key checks off. Failures use each provider's status and error body.

Answers (deterministic, see :mod:`llmgw.mock.answers`): ``"Echo: <last user message>"``
(``--words N`` cuts/cycles it to N words); a tool call when tools are offered and the last
message is the user's; ``"Tool result: <result>"`` after a tool result; JSON for
json_object/json_schema (Gemini: responseMimeType/responseSchema); cut at max tokens with the
provider's "length" finish reason. Usage: completion tokens = space-separated words generated
(text plus tool-call argument JSON; Anthropic counts its "Calling <tool>." preface too);
prompt tokens = ceil(characters of message text / 4). A stream carries ``chunk_words`` words per
content chunk. Anthropic ``cache_control`` prefixes are remembered: first use reports
``cache_creation_input_tokens``, later uses ``cache_read_input_tokens``.

Behaviour knobs: every ``--flag`` sets the default and the matching ``x-mock-<flag>`` request
header overrides it for one request (see :data:`llmgw.mock.options.HEADER_FIELDS`):
latency-ms, tokens-per-s, chunk-words, words, status, fail-rate, retry-after, hang
(before|mid), hang-ms, hang-after-chunks, cut-after-chunks, error-after-chunks,
malformed (body|sse), context-exceeded, context-tokens. An unknown ``x-mock-*`` header is a 400
(typos show). Control endpoints never take faults; cuts and mid-body hangs apply to 200 answers.

Python API: :func:`add_arguments`, :func:`run`, :func:`main` (``python -m llmgw.mock``) and
:class:`MockUpstream` (background-thread server for tests).
"""

from llmgw.mock.options import MockOptions, add_arguments
from llmgw.mock.runner import MockUpstream, main, run

__all__ = ["MockOptions", "MockUpstream", "add_arguments", "main", "run"]
