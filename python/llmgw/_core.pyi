"""Type stubs for the Rust extension `llmgw._core` (built from rust/ by maturin).

Each section below belongs to one Rust module (rust/src/<name>.rs); keep them in that order.
"""

__version__: str

# --- sse (rust/src/sse.rs) -------------------------------------------------------------------

class SseEvent:
    """One Server-Sent Event, as dispatched by a blank line (WHATWG event-stream rules)."""

    event: str | None
    """The `event:` field; None when absent or empty (the spec's default type, "message")."""
    data: str
    """The `data:` lines joined with "\\n" (invalid UTF-8 replaced with U+FFFD)."""
    id: str | None
    """The last event ID: sticky per the spec, so an event carries the latest `id:` the stream
    sent, even in an earlier event; None until the stream sends one. An `id` holding NUL is
    ignored."""
    retry: int | None
    """The `retry:` value (ASCII digits only) set inside this event's block, if any."""

    def __init__(
        self, data: str, event: str | None = None, id: str | None = None, retry: int | None = None
    ) -> None: ...
    def __eq__(self, other: object) -> bool: ...

class SseParser:
    """Incremental SSE parser: feed byte chunks as they arrive, split anywhere (inside a CRLF or
    a UTF-8 character included), and get the events each chunk completes.

    Lines end with CRLF, LF or CR; `:` lines are comments (counted in `comments`); a leading
    UTF-8 BOM is skipped; invalid UTF-8 becomes U+FFFD, never an exception.
    """

    def __init__(self) -> None: ...
    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Parse `chunk`; return the events it completes, in order (often none or one)."""
    def finish(self) -> bool:
        """End of stream. Return True if an unterminated event (a field line, or a partial
        non-comment line, after the last blank line) was discarded. The parser is then reset
        for a new stream."""
    @property
    def comments(self) -> int:
        """Comment lines seen so far (e.g. `: keep-alive`)."""
    @property
    def last_event_id(self) -> str | None:
        """The last `id:` the stream set (kept even when its event had no data)."""
    @property
    def retry(self) -> int | None:
        """The stream's reconnection time in ms: the last valid `retry:` field."""

class StreamTap:
    """Watches an OpenAI chat-completions SSE stream while the gateway forwards it verbatim.

    `feed` returns the bytes of every event completed by the chunk (plus comment and blank
    lines between events, so keep-alives pass at once), verbatim and in order, and buffers the
    incomplete tail: concatenating everything `feed` returned with `pending()` gives exactly the
    bytes fed. JSON is parsed only for events that can change a fact below (a non-null
    `usage`, `finish_reason` or `error`, the first `model`), or every event if `collect_text`.
    """

    def __init__(self, collect_text: bool = False) -> None:
        """`collect_text`: also concatenate `choices[index 0].delta.content` into `text`
        (costs a JSON parse per event)."""
    def feed(self, chunk: bytes) -> bytes:
        """Feed `chunk`; return the bytes to forward now (b"" when no event completed). When
        the chunk ends exactly at an event boundary and nothing was held back, `chunk` itself is
        returned (no copy)."""
    def pending(self) -> bytes:
        """Buffered bytes of the incomplete trailing event."""
    @property
    def events(self) -> int:
        """Data events seen so far (the final `data: [DONE]` included)."""
    @property
    def done(self) -> bool:
        """True once `data: [DONE]` was seen."""
    @property
    def usage(self) -> tuple[int, int, int, int | None] | None:
        """(prompt_tokens, completion_tokens, total_tokens, cached_tokens) from the last event
        with a non-null "usage" object; cached_tokens is prompt_tokens_details.cached_tokens or
        None. Missing counts read as 0."""
    @property
    def finish_reason(self) -> str | None:
        """The last non-null choices[*].finish_reason."""
    @property
    def model(self) -> str | None:
        """"model" of the first event with a non-empty one (Azure opens with "model":"")."""
    @property
    def text(self) -> str:
        """With collect_text: the concatenated delta.content of the choice with index 0 (the
        choice's "index" field, not its position: with n > 1 each chunk carries one choice).
        Empty otherwise."""
    @property
    def error(self) -> str | None:
        """Raw JSON text of the last in-stream {"error": ...} event (non-null "error"), if any."""
