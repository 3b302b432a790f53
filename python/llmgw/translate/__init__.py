"""Pure format translators between the canonical OpenAI chat format and other providers' formats.

Functions here take and return dicts (and, for streams, one stateful object per stream); they do
no I/O, so they are unit-tested on recorded wire fixtures and reused by both the upstream adapters
(providers/) and the client dialects (ingress/).
"""
