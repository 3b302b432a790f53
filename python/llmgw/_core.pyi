"""Type stubs for the Rust extension `llmgw._core` (built from rust/ by maturin).

Each section below belongs to one Rust module (rust/src/<name>.rs); keep them in that order.
"""

import os
import sys
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

if sys.version_info >= (3, 12):
    from collections.abc import Buffer as _Buffer
else:
    from typing_extensions import Buffer as _Buffer

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
    def pending_bytes(self) -> int:
        """Bytes held for the event not yet complete (its data so far and the line in progress):
        what an upstream that never ends an event makes the parser keep."""
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

# --- ratelimit (rust/src/ratelimit.rs) -------------------------------------------------------

RATE_LIMIT_MAX_CHECKS: int
"""Most checks one `RateLimiter.acquire` call accepts (16)."""

class RateLimiter:
    """Thread-safe keyed GCRA (generic cell rate algorithm) limiter.

    A limit is `(rate_per_second, burst)`: cells refill at `rate_per_second`, at most `burst` are
    banked. Requests per minute N is `(N / 60, N)` charged with cost 1; tokens per minute M is
    `(M / 60, M)` charged with the token count. Bucket keys should name the limit as well as the
    subject, e.g. `"rpm:key:abc"`, `"tpm:team:infra"`: one key is one bucket.

    Time: `now` arguments are seconds on the limiter's clock; omitted, the monotonic clock is read
    (`now()`, 0.0 when the limiter was created). Tests pass `now` explicitly as a fake clock; do
    not mix both clocks on one limiter.

    Memory: an absent key is a full bucket, so buckets that are full again are dropped — by
    amortised sweeps when a shard doubles, or by `evict_idle()`. `max_keys` is a hard cap: when a
    new key arrives at a full shard (keys are split over up to 64 shards of `max_keys / shards`),
    idle buckets go first, then the busy buckets nearest to full (each forgets the least debt),
    down to 15/16 of the shard. New keys are never refused and never admitted untracked.
    Measured: ~69 bytes per busy key (1M keys like "rpm:key:0001234") plus malloc overhead.
    """

    def __init__(self, max_keys: int = 1_000_000) -> None:
        """Raises ValueError if `max_keys` < 16."""

    @property
    def max_keys(self) -> int: ...
    def acquire(self, checks: list[tuple[str, float, float, float]] | tuple[tuple[str, float, float, float], ...], now: float | None = None) -> float:
        """Charge every bucket in `checks`, or none of them.

        Each check is `(key, rate_per_second, burst, cost)`; at most 16 per call. A key repeated
        in one call is one bucket charged with the sum of its costs.

        Returns 0.0 when admitted (all buckets charged). Otherwise nothing is charged and it
        returns the seconds until this same call would be admitted (the max over the denying
        buckets; waiting exactly that long is enough), or `math.inf` when a cost exceeds its
        bucket's burst, which no wait can fix. Raises ValueError for a rate <= 0, a negative
        burst or cost, a non-finite number, or more than 16 checks; TypeError for a malformed
        check.
        """

    def refund(self, key: str, rate_per_second: float, burst: float, amount: float, now: float | None = None) -> float:
        """Give back up to `amount` cells (an up-front estimate was too high), never past a full
        bucket; returns the cells actually given back (0.0 for an absent or full bucket)."""

    def charge(self, key: str, rate_per_second: float, burst: float, amount: float, now: float | None = None) -> None:
        """Charge `amount` cells unconditionally (real usage exceeded the estimate): the bucket may
        go into debt past its burst, which delays later calls until it has refilled."""

    def evict_idle(self, now: float | None = None) -> int:
        """Drop every bucket that is full again at `now`; returns how many were dropped."""

    def now(self) -> float:
        """Seconds on the limiter's monotonic clock."""

    def memory_bytes(self) -> int:
        """Bytes allocated for the bucket tables plus key bytes (excludes malloc overhead)."""

    def __len__(self) -> int:
        """Buckets held, idle ones included until swept."""

# --- embed (rust/src/embed.rs) ---------------------------------------------------------------


EMBED_DEFAULT_DIM: int
"""384, the default embedding dimension."""

def embed(text: str, dim: int = 384) -> npt.NDArray[np.float32]:
    """Lexical embedding of `text`: shape `(dim,)`, float32, L2-normalised (all zeros for text
    with no letters or digits, which should match nothing).

    Built from hashed character 3-5-grams of each word and word uni/bigrams over a normalised
    text (Unicode lowercase, punctuation and whitespace folded), with fixed hashes: identical on
    every run and platform. It needs no model and no network.

    Catches surface near-duplicates — case, punctuation, extra whitespace, word order, typos and
    small edits score >= ~0.9 cosine; unrelated prompts score < ~0.4. Does not catch synonyms,
    paraphrase or translation, and sees negation as one changed word. Use a real embedding model
    when those matter. Raises ValueError unless 1 <= dim <= 65536.
    """

def embed_batch(texts: list[str], dim: int = 384) -> npt.NDArray[np.float32]:
    """`embed` for each text: shape `(len(texts), dim)`, row i is `embed(texts[i], dim)`.
    Releases the GIL when the batch holds more than 64 KiB of text."""
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
# --- simcache (rust/src/simcache/) -----------------------------------------------------------

class SnapshotError(ValueError):
    """A snapshot file is not valid: bad magic header, unknown version, truncated, or its
    CRC-32 checksum does not match (corruption)."""

class SimilarityIndex:
    """Cosine-similarity index for the semantic cache. Thread-safe (a read/write lock: lookups
    run in parallel; inserts, deletes and sweeps are exclusive).

    Vectors are float32: a 1-D numpy.float32 array or any C-contiguous float32 buffer
    (array.array("f"), memoryview), or ``bytes`` of little-endian float32. They are normalised
    on insert and on query, so scale does not matter; zero, NaN or wrongly sized vectors raise
    ValueError. Scores returned are exact cosine similarities in [-1, 1], also under "i8".

    Namespaces are hard partitions: a lookup only ever sees its own namespace's entries.
    ``max_entries`` bounds the whole index; at capacity expired entries are reclaimed first,
    then the least recently used entry is evicted (inserts and lookup hits count as use).
    Expired entries are never returned; they are reclaimed by a sweep at most once a second
    during inserts, at capacity, or by ``purge_expired``. Time is wall-clock seconds since the
    epoch; every time-dependent call accepts ``now`` to inject a clock.

    Search is exact up to ``approximate_threshold`` entries per namespace (default 2000), then
    partitioned (k-means, ≈2·√n partitions, the ``probes`` nearest scanned, default 16):
    recall@1 1.000 on clustered 384-d data in the benchmarks, lower on uniform random data.
    recall@1 on i.i.d. random vectors is poor (0.26 at 10k; usearch HNSW: 0.49), as for any
    partitioned index; pass a huge ``approximate_threshold`` for exact search there.
    Partitions are (re-)trained when a namespace reaches the threshold and each time it doubles
    since, on a background thread: the insert that crosses the trigger returns at once, and
    lookups and inserts go on meanwhile, served from the current layout (exact scan, or the old
    partitions); no lock is held while k-means runs, the write lock only for the final swap.
    Entries inserted, deleted, expired or evicted during training are all honoured. So right
    after a large ``insert_many`` or ``load`` the namespace may still be searched exactly
    (``is_approximate`` False, ``is_retraining`` True); ``wait_idle`` waits for training.
    k-means trains on a sample of ``training_sample_per_list`` rows per partition (default 32;
    0 = every row). A namespace transiently needs twice its row memory while it trains.

    ``quantization="i8"`` scans 1-byte codes (4× less memory traffic) and re-ranks the best 32
    exactly in f32; f32 vectors are kept too, so it costs 5 bytes per dimension vs 4.
    """

    def __init__(
        self,
        dim: int,
        max_entries: int = 100_000,
        quantization: str = "i8",
        approximate_threshold: int | None = None,
        probes: int | None = None,
        training_sample_per_list: int | None = None,
    ) -> None:
        """``quantization`` is "i8" (default: same exact scores, 1.4–2.4× faster lookups than
        "none" in the benchmarks) or "none". ``approximate_threshold=None`` uses the measured
        default (2000); pass a huge value to always search exactly. ``probes=None`` → 16.
        ``training_sample_per_list=None`` → 32 sampled rows per partition for k-means; 0 trains
        on every row (not kept in snapshots: a loaded index uses the default)."""
    @property
    def dim(self) -> int: ...
    @property
    def max_entries(self) -> int: ...
    @property
    def quantization(self) -> str: ...
    @property
    def approximate_threshold(self) -> int: ...
    @property
    def probes(self) -> int: ...
    @property
    def training_sample_per_list(self) -> int: ...
    @property
    def kernel(self) -> str:
        """SIMD kernel chosen for this CPU at import: "avx512+vnni", "avx512", "avx2", "neon" or "scalar"."""
    def __len__(self) -> int:
        """Stored entries, including expired ones not yet reclaimed."""
    def namespace_len(self, namespace: str) -> int:
        """Stored entries of one namespace."""
    def is_approximate(self, namespace: str) -> bool:
        """Whether the namespace is currently searched through partitions."""
    def is_retraining(self, namespace: str) -> bool:
        """Whether a background job is (re-)training the namespace's partitions right now."""
    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Block (GIL released) until no background training runs, including follow-up jobs a
        finishing one starts; False if ``timeout_s`` passed first. None waits without limit.
        For tests, benchmarks and warm-up after a bulk load; serving never needs it."""
    def hold_retraining(self, hold: bool) -> None:
        """Test hook: while True, training jobs pause at a barrier before their final catch-up
        and swap (after assigning the rows present when they started), so a test can act
        deterministically mid-training. False releases them."""
    def wait_retraining_held(self, timeout_s: float) -> bool:
        """Test hook: block until a held job has reached the barrier; False on timeout."""
    def insert(
        self, namespace: str, vector: _Buffer | bytes, payload: bytes, ttl_s: float | None = None, now: float | None = None
    ) -> int:
        """Store ``vector`` with an opaque ``payload`` (e.g. the exact-cache key); returns the
        entry id (for ``delete``). ``ttl_s`` must be > 0; None = never expires."""
    def insert_many(
        self,
        namespace: str,
        vectors: _Buffer | bytes,
        payloads: list[bytes],
        ttl_s: float | None = None,
        now: float | None = None,
    ) -> list[int]:
        """Insert ``len(payloads)`` vectors given as one (n, dim) float32 buffer, under one lock
        and with one re-partitioning at the end. Returns the ids in order."""
    def delete(self, id: int) -> bool:
        """Remove an entry; False if the id is unknown (never issued, deleted or evicted)."""
    def best_match(
        self, namespace: str, vector: _Buffer | bytes, threshold: float, now: float | None = None
    ) -> tuple[float, bytes] | None:
        """The most similar live entry as (cosine, payload) if cosine ≥ ``threshold``, else None."""
    def top_k(self, namespace: str, vector: _Buffer | bytes, k: int, now: float | None = None) -> list[tuple[float, bytes]]:
        """Up to ``k`` live entries as (cosine, payload), most similar first."""
    def top_k_ids(self, namespace: str, vector: _Buffer | bytes, k: int, now: float | None = None) -> list[tuple[float, int]]:
        """Like ``top_k`` but returns (cosine, entry id)."""
    def purge_expired(self, now: float | None = None) -> int:
        """Reclaim every entry expired at ``now``; returns how many."""
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a snapshot (versioned binary, magic "LLMGWSIM", CRC-32) atomically via a
        ``.tmp`` file and rename. Keeps entries, payloads, expiries and LRU order."""
    @staticmethod
    def load(path: str | os.PathLike[str], *, hold_retraining: bool = False) -> SimilarityIndex:
        """Read a snapshot written by ``save``. Raises SnapshotError for a file that is not a
        snapshot, of an unknown version, truncated or corrupt; OSError if it cannot be read.
        Returns without training: large namespaces are searched exactly until their background
        training finishes. ``hold_retraining=True`` starts with those jobs held (test hook,
        see ``hold_retraining``)."""

def json_depth(data: bytes, limit: int) -> int:
    """How deeply the JSON document in `data` nests (arrays and objects; a scalar is 0), read
    from its bytes without parsing: strings are skipped, only brackets outside them count. Stops
    once past `limit` and returns `limit + 1` then, so a hostile body costs the limit, not its size.
    Used by the parse step: orjson reads 1,024 levels but writes only 254."""


# --- shm (rust/src/shm/) ---------------------------------------------------------------------

class SharedCounters:
    """Rate limits, budgets and counters shared by every process on the machine that maps the
    same file: with `llmgw serve --workers N`, one limit per key for the whole gateway, not N.

    The table is a file of fixed-size slots; the default 262,144 slots are a 16 MiB file,
    allocated when created. Put it on tmpfs (/dev/shm): on a disk filesystem the first write to
    each page costs ~1-2 ms (measured) and the kernel keeps writing pages back. Every operation is a few atomic
    compare-and-swaps on the mapped memory: no locks, no syscalls except reading the clock when
    `now` is omitted, so a worker killed mid-call cannot block the others. Each key takes one
    slot for good (slots are never freed): keys are meant to be few, per API key, user, team,
    model and budget period. A new key that finds no free slot (the table is ~92% full or more)
    raises OverflowError naming the file and its capacity. The same string used as a rate-limit
    key, a budget key and a counter key is three independent slots.

    Time: `now` arguments are seconds on CLOCK_MONOTONIC, the clock of `time.monotonic()`,
    shared by every process; omitted, it is read in Rust. Tests pass `now` as a fake clock,
    within ±4e9 s. Create the table once (the supervisor, `create=True`) before the workers
    open it (`create=False`).
    """

    def __init__(self, path: str | os.PathLike[str], slots: int = 262144, create: bool = False) -> None:
        """Map the table at `path`.

        `create=True`: make a new empty table of `slots` slots (rounded up to a power of two;
        1..2**26), replacing any file at `path`. The new table is written beside it and renamed
        over it, so an opener never sees half a header; a process that still maps the replaced
        file keeps working on that old copy, unseen by anyone else. `create=False`: open the
        existing table (`slots` is ignored; the file says its size). Raises FileNotFoundError
        (or another OSError) if the file cannot be opened, ValueError if it is not a table of
        this format version or `slots` is out of range.
        """

    @property
    def path(self) -> str: ...
    @property
    def capacity(self) -> int:
        """Slots in the table."""
    def __len__(self) -> int:
        """Slots in use (claimed by any process)."""

    def acquire(self, checks: list[tuple[str, float, float, float]] | tuple[tuple[str, float, float, float], ...], now: float | None = None) -> float:
        """Charge every bucket in `checks`, or none of them: `RateLimiter.acquire` across processes.

        Each check is `(key, rate_per_second, burst, cost)`; at most 16; a key repeated in one
        call is one bucket charged with the sum. Returns 0.0 when admitted, else the seconds
        until this same call would be admitted (waiting exactly that long is enough), or
        `math.inf` if a cost exceeds its burst. Same ValueError/TypeError checks as RateLimiter.

        All-or-nothing up to a refund race: the buckets are read first, and a denial there
        writes nothing. Otherwise they are charged one by one, each by a CAS that re-checks it;
        if one denies by then (another process got there first), those already charged are
        refunded and the call retries. Nothing is ever admitted over a limit, but a process may
        be refused by a bucket that another call charged only for that instant.

        Time is counted in whole nanoseconds: each charge is rounded down to a nanosecond (at
        most `rate * 1e-9` cells forgiven per charge) and the burst up, so equal costs that sum
        to the burst always fit a full bucket.
        """

    def refund(self, key: str, rate_per_second: float, burst: float, amount: float, now: float | None = None) -> float:
        """Give back up to `amount` cells, never past a full bucket; returns the cells actually
        given back (0.0 for an unknown or full bucket)."""

    def charge(self, key: str, rate_per_second: float, burst: float, amount: float, now: float | None = None) -> None:
        """Charge `amount` cells unconditionally: the bucket may go into debt past its burst."""

    def remaining(self, key: str, rate_per_second: float, burst: float, now: float | None = None) -> float:
        """Cells available now: `burst` for an unknown or full bucket, 0.0 while in debt."""

    def reset_after(self, key: str, rate_per_second: float, burst: float, now: float | None = None) -> float:
        """Seconds until the bucket is full again; 0.0 if it is (or the key is unknown)."""

    def reserve(self, key: str, amount: int, limit: int) -> bool:
        """Atomically: if committed + amount <= limit, add `amount` to committed and return
        True; else change nothing and return False. Amounts are integers (the gateway uses
        micro-dollars) and must be >= 0 (ValueError otherwise)."""

    def settle(self, key: str, reserved: int, actual: int) -> None:
        """Turn a reservation into the actual cost: committed += actual - reserved (which may
        pass the limit by the overshoot: the money is spent), spent += actual."""

    def release(self, key: str, reserved: int) -> None:
        """Drop an unused reservation: committed -= reserved."""

    def seed(self, key: str, spent: int) -> bool:
        """Set committed = spent = `spent` if no process has used the key yet (start-up: load
        from the ledger). Returns True if it seeded; of racing seeders exactly one does. Seed
        before serving: a reserve racing the seed of its key may see the unseeded 0."""

    def budget(self, key: str) -> tuple[int, int]:
        """(committed, spent); (0, 0) for an unknown key. Two reads, not one snapshot."""

    def add(self, key: str, delta: int) -> int:
        """Add `delta` to a counter (wrapping at the int64 bounds); returns the new value."""

    def get(self, key: str) -> int:
        """A counter's value; 0 for an unknown key."""

# --- guard (rust/src/guard/) -------------------------------------------------------------------

class PiiDetector:
    """PII and secret detection (rust/src/guard/pii.rs): one multi-pattern pass, then the
    candidates' checks (Luhn, IBAN mod-97 and country length, SSN rules, IPv4/IPv6). Immutable and
    thread-safe: construct once, share; texts from 32 KB up are scanned with the GIL released."""

    def __init__(self, types: Iterable[str] | None = None) -> None:
        """`types`: any of "email", "phone", "card", "iban", "ssn", "ip", "secret" (None: all).
        An unknown name raises ValueError naming it; a bare str raises TypeError."""

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(type, start, end) in str indices (code points), sorted by start, non-overlapping
        (longest wins, then secret > iban > card > email > ssn > phone > ip), checksum-validated."""

    def open_block(self, text: str) -> int | None:
        """str index where an unterminated PEM private-key block begins (BEGIN seen, no END yet)
        or where an open-ended secret token (sk-..., eyJ..., github_pat_..., ...) still running
        at the end of `text` begins; None if neither. A stream holds from there."""

    @property
    def max_span(self) -> int:
        """Longest match of a bounded pattern of the selected types (chars), and at least the
        longest marker/prefix open_block needs to see whole. Holding back max_span chars, plus
        from open_block(text) when it is not None, never releases part of a match."""

    @property
    def types(self) -> list[str]:
        """The selected types, in PII_TYPES order."""

    @staticmethod
    def patterns() -> list[tuple[str, str, str, int | None]]:
        """The candidate table: (type, pattern name, regex, max length or None if open-ended).
        Regexes are in the dialect Python's `re` (with re.ASCII) reads the same way."""

    @staticmethod
    def open_prefixes() -> tuple[list[str], int]:
        """(prefixes of open-ended secret tokens, marker span) for the pure-Python reference."""

class InjectionDetector:
    """Prompt-injection scoring (rust/src/guard/injection.rs): weighted signatures over a
    normalised text (plus leetspeak/ROT13 readings and decoded base64/hex/... runs when present),
    combined as 1 - Π(1 - w). Immutable and thread-safe."""

    def __init__(self, threshold: float = 0.5) -> None:
        """`threshold` in [0, 1] (ValueError otherwise)."""

    def score(self, text: str) -> tuple[float, list[str]]:
        """(score in [0, 1], attack families whose signatures matched, sorted and distinct)."""

    def is_attack(self, text: str) -> bool:
        """score(text)[0] >= threshold."""

    @property
    def threshold(self) -> float: ...
    @staticmethod
    def signatures() -> list[tuple[str, float, str]]:
        """(family, weight, regex); family "_benign" (negative weight) damps the score."""

    @staticmethod
    def decoder_config() -> tuple[list[str], float, float]:
        """(decoder patterns: base64, hex, binary, entities, \\u escapes, quoted-printable;
        leetspeak weight; decoded-payload weight) for the pure-Python reference."""

# --- otlp (rust/src/otlp.rs) -----------------------------------------------------------------

_OtlpValue = str | bool | int | float | list[str] | list[bool] | list[int] | list[float] | None

def encode_otlp_traces(
    resource: list[tuple[str, _OtlpValue]] | list[str | _OtlpValue],
    scope_name: str,
    scope_version: str,
    spans: list[tuple],  # type: ignore[type-arg]
) -> bytes:
    """An OTLP `ExportTraceServiceRequest` (protobuf, the body of an OTLP/HTTP POST to
    /v1/traces with content-type application/x-protobuf): one resource with `resource`'s
    attributes, one instrumentation scope (`scope_name`, `scope_version`), every span in it.

    Each span is a tuple `(trace_id: bytes, span_id: bytes, parent_span_id: bytes, name: str,
    kind: int, start_ns: int, end_ns: int, status_code: int, status_message: str,
    attributes: list[tuple[str, value]])`, optionally followed by `flags: int` (W3C trace flags
    in bits 0-7; 0x100 | 0x200 when the parent is remote, 0x100 alone when it is local).
    Attributes (the resource's too) may also be one flat list `[key, value, key, value, ...]`:
    no tuple per attribute, ~4 µs less per request of ~57 attributes; one list must not mix the
    two spellings (TypeError).

    - trace_id 16 bytes, span_id 8 bytes, parent_span_id 8 bytes or b"" (a root span); a wrong
      length or an all-zero trace/span id raises ValueError naming the span (index and name);
    - kind 1 internal, 2 server, 3 client (0..5 accepted); status_code 0 unset, 1 ok, 2 error;
    - times are Unix epoch nanoseconds (fixed64; negative raises ValueError);
    - attribute values: str, bool, int (int64; beyond raises ValueError), float, or a list/tuple
      of those (an array); None values (and None items of an array) are skipped; any other
      type raises TypeError naming the span and the key.
    Strs with lone surrogates are encoded with U+FFFD in their place. The output is the
    canonical proto3 encoding (what protobuf's SerializeToString gives for the same message).
    """

def encode_otlp_spans(spans: list[tuple]) -> bytes:  # type: ignore[type-arg]
    """`encode_otlp_traces`'s spans (same checks) as `ScopeSpans.spans` entries only, like
    `Telemetry.trace_request`'s."""

def frame_otlp_traces(resource: list[tuple[str, _OtlpValue]] | list[str | _OtlpValue], scope_name: str,
                      scope_version: str, items: list[bytes]) -> bytes:
    """`encode_otlp_traces(resource, scope_name, scope_version, <the spans>)` around span entries
    already encoded (`trace_request`, `encode_otlp_spans`), concatenated in order."""

# --- telemetry (rust/src/telemetry.rs) -------------------------------------------------------

TELEMETRY_FIELDS: tuple[str, ...]
"""The names of the finish tuple's 31 items, by position (see `Telemetry.finish`)."""
TELEMETRY_ATTEMPT_FIELDS: tuple[str, ...]
"""The names of an attempt tuple's 8 items, by position."""

class Telemetry:
    """One worker's always-on observability per request, in one call: the Prometheus counts of
    `Observability.count` (same families, labels, bucket rule and value types as `MetricsStore`)
    and, when `json_log`, the JSON access-log line of `accesslog.json_fields` (byte for byte what
    `orjson.dumps(json_fields(record))` writes), buffered until `take_log`.

    Not thread-safe across concurrent calls (use it from the event loop's thread).
    """

    def __init__(
        self,
        *,
        json_log: bool,
        latency_bounds: list[float],
        overhead_bounds: list[float],
        per_key: bool,
        max_log_bytes: int = 8 << 20,
        prices: dict[str, tuple[float, float, float | None] | None] | None = None,
        providers: dict[str, str] | None = None,
    ) -> None:
        """`latency_bounds` (metrics.LATENCY_BUCKETS) for llmgw_request_duration_seconds,
        llmgw_time_to_first_token_seconds and llmgw_upstream_duration_seconds; `overhead_bounds`
        (metrics.OVERHEAD_BUCKETS) for llmgw_gateway_overhead_seconds; finite and strictly
        increasing (ValueError otherwise). `per_key`: count the llmgw_key_* families
        (observability.metrics.per_key_labels). `max_log_bytes`: the most the line buffer holds;
        a line that would pass it is dropped and counted in `log_dropped`. `prices` and
        `providers`: the tables `finish_request` reads (see `configure`)."""

    def configure(
        self,
        *,
        prices: dict[str, tuple[float, float, float | None] | None] | None = None,
        providers: dict[str, str] | None = None,
        addresses: dict[str, str] | None = None,
    ) -> None:
        """Replace the tables `finish_request` and `trace_request` read (each one given; a reload
        keeps the object):

        - `prices`: deployment -> (input, output, cached_input or None) in micro-USD per token
          (USD per 1M tokens: `config.Price` as `PriceBook.for_deployment` gives it), or None for
          a deployment known to have no price; a deployment not in the table has no price either.
          Finite numbers (ValueError otherwise).
        - `providers`: upstream name -> provider name (`config.upstreams[name].provider`); an
          upstream not in it is written as provider "" (as `Observability.upstreams.get(target,
          ("", ""))[0]`).
        - `addresses`: upstream name -> "host[:port]" (`Observability.upstreams[name][1]`):
          trace_request's server.address/port (as `otlp._server_address`); absent: neither.

        All are checked before any is replaced: a wrong table (TypeError, ValueError) changes
        nothing."""

    def finish_request(
        self,
        ctx: object,
        run: object,
        ended: float,
        usage: tuple[object, bool] | None = None,
        *,
        now: tuple[int, float] | None = None,
    ) -> None:
        """`finish(rec)` for the tuple `Observability.on_finish` builds without log bodies
        (input_json and output None), read straight from the request's objects:

        - `ctx`: the `exchange.RequestContext` (request_id, started, kind, model, plan — its
          group, fallbacks and primaries —, attempts, key_id, key_name, user, team, upstream_s,
          first_byte_at, metadata["cache"] and metadata["gov.cost"], trace.trace_id, path);
        - `run`: the `runner.RequestRunner` (status, result, error.code, streamed, client_s,
          route[0].pattern, http.responded, http.method), whose `final_usage()` is called only
          when `usage` is None and `ctx.usage` is None;
        - `ended`: `Outcome.ended` (perf_counter seconds);
        - `usage`: `(usage, usage_estimated)` when the caller has it (`Outcome._usage`).

        Derived as `Outcome.facts()` and `on_finish` do: status 499 unless `run.http.responded`;
        the route is `run.route[0].pattern`, else `ctx.path`; the served attempt is the last one
        without an error, with a status < 300, not cancelled (its deployment names the request, its
        upstream the provider); the cost is `metadata["gov.cost"]` when its usage `is` this usage,
        else `PriceBook.request_cost` from `prices` (the last attempt sent and not cancelled; 0 with
        no usage or no such attempt; None when its deployment has no price), written as cost_usd for
        kinds "chat" and "embeddings"; an attempt is "fallback" when the plan names its deployment
        among its fallbacks and not among its primaries. start_ns is `time.time_ns() -
        int((time.perf_counter() - ctx.started) * 1e9)` with both clocks read in this call
        (CLOCK_REALTIME and CLOCK_MONOTONIC, perf_counter's clock on Linux), or `now` =
        `(time_ns, perf_counter)` when given.

        Attributes are read where `__slots__` keeps them (one type and version check per read,
        as CPython's own LOAD_ATTR does), falling back to getattr for anything else, so any
        object with these attributes works. A wrong type raises TypeError naming the attribute
        (`ctx.user must be a str or None, not int`) and nothing is counted; a str with a lone
        surrogate is written with U+FFFD in its place, as `finish` does.
        """

    def trace_request(self, ctx: object, run: object, ended: float, usage: tuple[object, bool] | None = None, *,
                      now: tuple[int, float] | None = None) -> tuple[int, bytes] | None:
        """The request's OTLP spans as `(span count, ScopeSpans.spans entries)` (for
        `frame_otlp_traces`), read like `finish_request` (same objects, tables, `now`); None when
        ctx.trace is None, not sampled, or has no trace id. Exactly the spans of
        `spans_of(Observability.record(ctx, outcome))` (same ids, attribute order, values, types;
        tested byte for byte). Also reads ctx.trace's ids, ctx.dialect, ctx.stages, each attempt's
        target, model, started, ttfb_s, span_id, error_class; run.error.type/.message,
        run.pump.finish_reason, run.req.body's sampling parameters. Raises TypeError/ValueError
        on an unexpected type or a malformed id (the caller falls back to the Python path); a lone
        surrogate becomes U+FFFD."""

    @property
    def slot_reads_known(self) -> int:
        """How many (read site, type) pairs `finish_request` reads at a slot's offset."""

    @property
    def prices_count(self) -> int:
        """Deployments in the prices table."""

    @property
    def providers_count(self) -> int:
        """Upstreams in the providers table."""

    def finish(self, rec: tuple) -> None:  # type: ignore[type-arg]
        """Count one finished request and (when `json_log`) append its JSON line and "\\n".

        `rec` is a tuple of exactly 31 items, by position (names in TELEMETRY_FIELDS; the
        FinishRecord field each one is):

        ==  =================  ===================  =========================================
         0  request_id         str
         1  start_ns           int                  Unix epoch ns (int64)
         2  duration_s         float
         3  ttfb_s             float | None
         4  upstream_s         float
         5  overhead_s         float
         6  kind               str                  "chat" | "embeddings" | "models" | "route"
         7  method             str
         8  path               str                  the route (the `route` label)
         9  status             int                  what the client got
        10  result             str
        11  model              str | None           as the client asked
        12  group              str | None
        13  deployment         str | None
        14  provider           str | None
        15  error_code         str | None
        16  key_id             str | None
        17  key_name           str | None
        18  user               str | None
        19  team               str | None
        20  prompt_tokens      int
        21  completion_tokens  int
        22  cached_tokens      int
        23  usage_estimated    bool                 (truthiness)
        24  cost_usd           float | None
        25  cache              str | None           "hit" | "semantic-hit" | "miss"
        26  stream             bool                 (truthiness)
        27  trace_id           str | bytes | None   hex text written as given, or the raw
                                                    bytes written as lowercase hex; empty or
                                                    None: no "trace_id" key
        28  attempts           list | tuple         of attempt tuples, below
        29  input_json         bytes | str | None   ONE already-serialized JSON value (e.g.
                                                    orjson.dumps(record.input)), embedded as
                                                    "input" unchanged and unchecked; empty:
                                                    ValueError
        30  output             str | None
        ==  =================  ===================  =========================================

        An attempt tuple has 8 items (names in TELEMETRY_ATTEMPT_FIELDS): (deployment: str,
        status: int | None, error_code: str | None, seconds: float — `(end_ns - start_ns) / 1e9`,
        via: str — "primary" | "fallback", retry: bool, hedge: bool, cancelled: bool).

        Counted exactly as `Observability.count` does, including its truthiness (`group or ""`,
        `key_name or key_id`, `if cost_usd:` for the key cost) and retries/fallbacks counted by
        the error code of the attempt just before. A wrong item raises TypeError (ValueError for
        an empty input_json) naming its position and name, and nothing is counted. Strs are read
        in place (no copies); a str with a lone surrogate is written with U+FFFD in its place.
        """

    def take_log(self) -> bytes:
        """The JSON lines appended since the last call (each ends with "\\n"); empties the buffer."""

    def snapshot(self) -> dict[str, dict[str, list[list]]]:  # type: ignore[type-arg]
        """The counts in `MetricsStore.snapshot()`'s shape: `{"counters": {name: [[labels],
        value], ...}, "histograms": {name: [[labels], [bucket counts..., +Inf count, sum]], ...},
        "gauges": {}}` — families in metrics.FAMILIES order, empty ones left out, series in the
        order first seen; counter values int (float for the *_cost_usd_total families), bucket
        counts int, sums float. `metrics.merge` and `metrics.render` take it as it is."""

    @property
    def log_dropped(self) -> int:
        """Lines dropped because the buffer held `max_log_bytes` already."""

    @property
    def log_lines(self) -> int:
        """Lines appended (not dropped) since creation."""

    @property
    def log_pending(self) -> int:
        """Bytes waiting for `take_log`."""

    @property
    def max_log_bytes(self) -> int: ...
    @property
    def json_log(self) -> bool:
        """Whether `finish` writes lines; settable (a reload may turn the JSON log on or off)."""

    @json_log.setter
    def json_log(self, value: bool) -> None: ...
    @property
    def per_key(self) -> bool:
        """Whether `finish` counts the llmgw_key_* families; settable (a reload may change it)."""

    @per_key.setter
    def per_key(self, value: bool) -> None: ...
    @property
    def series_count(self) -> int:
        """Series in all families (label cardinality, for memory checks)."""
