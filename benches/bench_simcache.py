"""SimilarityIndex vs numpy brute force (and usearch HNSW where cheap), one query at a time.

Run the full table (sizes 1k, 10k, 100k, 1M; ~5 minutes, ~6 GB RAM at 1M):

    python benches/bench_simcache.py [--sizes 1000,10000,100000,1000000] [--random-sizes 10000,100000]

It prints, per size and data set: p50/p99 µs per query for each contender, the ratio of numpy's
p50 to ours, recall@1 against exact search, and build time (insert_many + background training).
First it prints the worst lookup latency a reader thread sees while a writer inserts past the
re-training trigger (--stall-size, with a no-training control run), and build time and recall
with k-means on a 32-rows-per-partition sample vs on every row (--sampling-size). `pytest benches/bench_simcache.py`
runs the pytest-benchmark micro-benchmarks (10k and 100k, side by side with numpy).

Data: "clustered" = 1000 Gaussian centres in 384-d, stored points scattered around them;
queries are half noisy copies of stored points and half new points from the same clusters
(real embeddings are clustered). "random" = i.i.d. Gaussian vectors, the hard case for any
partitioned or graph index; reported for honesty.
"""

from __future__ import annotations

import argparse
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from llmgw._core import SimilarityIndex

DIM = 384
CLUSTERS = 1000
CLUSTER_SPREAD = 0.35  # per-dimension noise vs unit-variance centres: same-cluster cosine ≈ 0.9
COPY_NOISE = 0.05


def make_data(n: int, n_queries: int, kind: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return (
            rng.standard_normal((n, DIM), dtype=np.float32),
            rng.standard_normal((n_queries, DIM), dtype=np.float32),
        )
    centres = rng.standard_normal((CLUSTERS, DIM), dtype=np.float32)
    data = np.empty((n, DIM), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        end = min(n, start + step)
        labels = rng.integers(0, CLUSTERS, end - start)
        data[start:end] = centres[labels] + CLUSTER_SPREAD * rng.standard_normal((end - start, DIM), dtype=np.float32)
    half = n_queries // 2
    copies = data[rng.integers(0, n, half)] + COPY_NOISE * rng.standard_normal((half, DIM), dtype=np.float32)
    fresh_labels = rng.integers(0, CLUSTERS, n_queries - half)
    fresh = centres[fresh_labels] + CLUSTER_SPREAD * rng.standard_normal((n_queries - half, DIM), dtype=np.float32)
    return data, np.concatenate([copies, fresh]).astype(np.float32)


def normalise(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Result:
    name: str
    p50_us: float
    p99_us: float
    recall: float | None
    build_s: float


def time_queries(queries: np.ndarray, search: Callable[[np.ndarray], int]) -> tuple[list[float], list[int]]:
    times, found = [], []
    for q in queries:
        t0 = time.perf_counter_ns()
        found.append(search(q))
        times.append((time.perf_counter_ns() - t0) / 1000)
    return times, found


def summarise(name: str, times: list[float], found: list[int], truth: list[int] | None, build_s: float) -> Result:
    arr = np.array(times)
    recall = None if truth is None else float(np.mean(np.array(found) == np.array(truth)))
    return Result(name, float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), recall, build_s)


def bench_size(n: int, n_queries: int, kind: str, with_usearch: bool) -> list[Result]:
    data, queries = make_data(n, n_queries, kind)
    results = []

    t0 = time.perf_counter()
    matrix = normalise(data)
    numpy_build = time.perf_counter() - t0

    def numpy_search(q: np.ndarray) -> int:
        qn = q / np.linalg.norm(q)
        return int(np.argmax(matrix @ qn))

    times, truth = time_queries(queries, numpy_search)
    results.append(summarise("numpy f32 brute force", times, truth, None, numpy_build))

    for quant in ("i8", "none") if n <= 100_000 else ("i8",):
        index = SimilarityIndex(DIM, max_entries=n, quantization=quant)
        payloads = [b""] * n
        t0 = time.perf_counter()
        ids = index.insert_many("bench", data, payloads)
        wait_for_partitions(index)
        build = time.perf_counter() - t0
        row_of = {i: r for r, i in enumerate(ids)}

        def ours(q: np.ndarray, index: SimilarityIndex = index) -> int:
            return row_of[index.top_k_ids("bench", q, 1)[0][1]]

        times, found = time_queries(queries, ours)
        mode = "approx" if index.is_approximate("bench") else "exact"
        results.append(summarise(f"SimilarityIndex {quant} ({mode})", times, found, truth, build))
        del index

    if with_usearch:
        from usearch.index import Index

        index = Index(ndim=DIM, metric="cos", dtype="f16", connectivity=16, expansion_add=128, expansion_search=64)
        t0 = time.perf_counter()
        index.add(np.arange(n), data, threads=2)
        build = time.perf_counter() - t0

        def usearch_search(q: np.ndarray) -> int:
            return int(index.search(q, 1).keys[0])

        times, found = time_queries(queries, usearch_search)
        results.append(summarise("usearch HNSW f16", times, found, truth, build))
    return results


def wait_for_partitions(index: SimilarityIndex) -> None:
    """Partitions are trained in the background: wait so lookups are measured on them (builds
    without `wait_idle` trained synchronously inside the insert)."""
    if hasattr(index, "wait_idle"):
        assert index.wait_idle(600.0), "background training did not finish in 10 minutes"


@dataclass
class StallResult:
    reader_p50_us: float
    reader_p99_us: float
    reader_max_us: float
    lookups: int
    writer_s: float
    retrain_s: float


def bench_stall(n: int, control: bool = False) -> StallResult:
    """Worst lookup latency seen by a reader thread while a writer inserts past the re-training
    trigger at `n` rows: the namespace is bulk-loaded to n/2 (trained there, so the next training
    is due at n), then the writer inserts up to n + 1% in batches of 100.

    `control=True` runs the same writer against a second index that never trains: the worst
    latency that remains is the GIL (5 ms switch interval) and CPU sharing, not the index."""
    data, queries = make_data(n + n // 100, 256, "clustered")
    index = SimilarityIndex(DIM, max_entries=2 * n, quantization="i8")
    half = n // 2
    index.insert_many("bench", data[:half], [b""] * half)
    wait_for_partitions(index)
    target = SimilarityIndex(DIM, max_entries=2 * n, quantization="i8", approximate_threshold=10**12) if control else index
    stop = threading.Event()
    latencies: list[float] = []

    def reader() -> None:
        for q in itertools.cycle(queries):
            if stop.is_set():
                return
            t0 = time.perf_counter_ns()
            index.best_match("bench", q, -1.0)
            latencies.append((time.perf_counter_ns() - t0) / 1000)

    thread = threading.Thread(target=reader)
    thread.start()
    t0 = time.perf_counter()
    for start in range(half, len(data), 100):
        batch = data[start : start + 100]
        target.insert_many("bench", batch, [b""] * len(batch))
    writer_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    wait_for_partitions(index)
    retrain_s = time.perf_counter() - t1
    time.sleep(0.2)  # a few lookups on the new partitions too
    stop.set()
    thread.join()
    arr = np.array(latencies)
    return StallResult(float(np.percentile(arr, 50)), float(np.percentile(arr, 99)), float(arr.max()), len(arr), writer_s, retrain_s)


def bench_sampling(n: int) -> list[tuple[str, float, float]]:
    """Build time (insert_many + training) and recall@1 with k-means trained on a sample of 32
    rows per partition (default) vs on every row."""
    data, queries = make_data(n, 300, "clustered")
    matrix = normalise(data)
    truth = [int(np.argmax(matrix @ normalise(q))) for q in queries]
    out = []
    variants = [("sample 32/partition (default)", None)]
    if hasattr(SimilarityIndex, "wait_idle"):  # builds with background training also take the knob
        variants.append(("every row", 0))
    for name, per_list in variants:
        kwargs = {} if per_list is None else {"training_sample_per_list": per_list}
        index = SimilarityIndex(DIM, max_entries=n, quantization="i8", **kwargs)
        t0 = time.perf_counter()
        ids = index.insert_many("bench", data, [b""] * n)
        wait_for_partitions(index)
        build = time.perf_counter() - t0
        row_of = {i: r for r, i in enumerate(ids)}
        found = [row_of[index.top_k_ids("bench", q, 1)[0][1]] for q in queries]
        out.append((name, build, float(np.mean(np.array(found) == np.array(truth)))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--random-sizes", default="10000,100000", help="sizes for i.i.d. Gaussian data ('' = skip)")
    parser.add_argument("--usearch-max", type=int, default=10_000, help="largest size to build usearch at")
    parser.add_argument("--stall-size", type=int, default=100_000, help="re-training trigger for the stall test (0 = skip)")
    parser.add_argument("--sampling-size", type=int, default=100_000, help="size for sampled vs full k-means (0 = skip)")
    args = parser.parse_args()
    print(f"kernel: {SimilarityIndex(DIM).kernel}; dim {DIM}; times are per query including the Python call")
    if args.stall_size:
        print(f"\nreader-thread lookups while a writer inserts {args.stall_size // 2 + args.stall_size // 100:,} rows in batches of 100")
        for label, control in (("past the re-training trigger at n", False), ("into another index (no training)", True)):
            s = bench_stall(args.stall_size, control)
            print(f"  {label:36} p50 {s.reader_p50_us:6.1f} µs  p99 {s.reader_p99_us:6.1f} µs  worst {s.reader_max_us / 1000:7.1f} ms  "
                  f"({s.lookups} lookups; writer {s.writer_s:.2f} s, training after it {s.retrain_s:.2f} s)", flush=True)
    if args.sampling_size:
        print(f"\nk-means training sample, clustered n={args.sampling_size:,} (build = insert_many + training)")
        for name, build, recall in bench_sampling(args.sampling_size):
            print(f"  {name:32} build {build:6.2f} s  recall@1 {recall:.3f}", flush=True)
    runs = [("clustered", int(s)) for s in args.sizes.split(",") if s]
    runs += [("random", int(s)) for s in args.random_sizes.split(",") if s]
    for kind, n in runs:
        n_queries = 1000 if n <= 100_000 else 200
        results = bench_size(n, n_queries, kind, with_usearch=n <= args.usearch_max)
        base = results[0].p50_us
        print(f"\n{kind} n={n:,} queries={n_queries}")
        print(f"  {'contender':34} {'p50 µs':>9} {'p99 µs':>9} {'numpy/this':>10} {'recall@1':>8} {'build s':>8}")
        for r in results:
            recall = "-" if r.recall is None else f"{r.recall:.3f}"
            print(f"  {r.name:34} {r.p50_us:9.1f} {r.p99_us:9.1f} {base / r.p50_us:9.1f}x {recall:>8} {r.build_s:8.2f}", flush=True)

# --- pytest-benchmark micro-benchmarks (side by side in one run) --------------------------------


@pytest.fixture(scope="module", params=[10_000, 100_000], ids=lambda n: f"n={n}")
def clustered(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, SimilarityIndex]:
    data, queries = make_data(request.param, 64, "clustered")
    index = SimilarityIndex(DIM, max_entries=request.param, quantization="i8")
    index.insert_many("bench", data, [b""] * request.param)
    wait_for_partitions(index)
    return normalise(data), queries, index


def test_numpy_brute_force_top1(benchmark, clustered) -> None:
    matrix, queries, _ = clustered
    it = itertools.cycle(queries)
    benchmark(lambda: int(np.argmax(matrix @ normalise(next(it)))))


def test_similarity_index_top1(benchmark, clustered) -> None:
    _, queries, index = clustered
    it = itertools.cycle(queries)
    benchmark(lambda: index.best_match("bench", next(it), -1.0))


if __name__ == "__main__":
    main()
