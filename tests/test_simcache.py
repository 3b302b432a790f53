"""Behaviour of llmgw._core.SimilarityIndex through the Python API."""

from __future__ import annotations

import array
import threading
from pathlib import Path

import numpy as np
import pytest

from llmgw._core import SimilarityIndex, SnapshotError

DIM = 8


def axis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.full(dim, 0.01, dtype=np.float32)
    v[i % dim] = 1.0
    return v


@pytest.fixture(params=["none", "i8"])
def index(request: pytest.FixtureRequest) -> SimilarityIndex:
    return SimilarityIndex(DIM, max_entries=100, quantization=request.param)


def test_best_match_returns_score_and_payload(index: SimilarityIndex) -> None:
    index.insert("ns", axis(0), b"key-a", now=0.0)
    index.insert("ns", axis(1), b"key-b", now=0.0)
    score, payload = index.best_match("ns", axis(0) * 5, 0.9, now=0.0)
    assert payload == b"key-a"
    assert score == pytest.approx(1.0, abs=1e-5)
    assert index.best_match("ns", axis(2), 0.9, now=0.0) is None


def test_vectors_can_be_bytes_or_any_float32_buffer(index: SimilarityIndex) -> None:
    index.insert("ns", axis(3).tobytes(), b"from-bytes", now=0.0)
    as_array = array.array("f", axis(3).tolist())
    assert index.best_match("ns", as_array, 0.99, now=0.0)[1] == b"from-bytes"
    assert index.best_match("ns", memoryview(axis(3)), 0.99, now=0.0)[1] == b"from-bytes"


def test_bad_vectors_raise_clear_errors(index: SimilarityIndex) -> None:
    with pytest.raises(ValueError, match="3 dimensions, this index expects 8"):
        index.insert("ns", np.ones(3, dtype=np.float32), b"x")
    with pytest.raises(ValueError, match="all zeros"):
        index.insert("ns", np.zeros(DIM, dtype=np.float32), b"x")
    with pytest.raises(ValueError, match="NaN"):
        index.insert("ns", np.full(DIM, np.nan, dtype=np.float32), b"x")
    with pytest.raises(TypeError, match="float32"):
        index.insert("ns", np.ones(DIM, dtype=np.float64), b"x")
    with pytest.raises(ValueError, match="ttl_s"):
        index.insert("ns", axis(0), b"x", ttl_s=0)
    with pytest.raises(ValueError, match="quantization"):
        SimilarityIndex(DIM, quantization="f16")


def test_namespaces_never_see_each_other(index: SimilarityIndex) -> None:
    index.insert("tenant-a", axis(0), b"a", now=0.0)
    assert index.best_match("tenant-b", axis(0), -1.0, now=0.0) is None
    assert index.top_k("tenant-b", axis(0), 10, now=0.0) == []
    index.insert("tenant-b", axis(5), b"b", now=0.0)
    assert [p for _, p in index.top_k("tenant-b", axis(0), 10, now=0.0)] == [b"b"]


def test_top_k_is_best_first(index: SimilarityIndex) -> None:
    for i in range(6):
        v = axis(0)
        v[1] = i * 0.2
        index.insert("ns", v, bytes([i]), now=0.0)
    hits = index.top_k("ns", axis(0), 3, now=0.0)
    assert [p for _, p in hits] == [b"\x00", b"\x01", b"\x02"]
    assert hits[0][0] >= hits[1][0] >= hits[2][0]
    assert len(index.top_k("ns", axis(0), 10**12, now=0.0)) == 6


def test_ttl_expired_entries_are_not_returned(index: SimilarityIndex) -> None:
    index.insert("ns", axis(0), b"short", ttl_s=10, now=1000.0)
    index.insert("ns", axis(1), b"forever", now=1000.0)
    assert index.best_match("ns", axis(0), 0.9, now=1009.0) is not None
    assert index.best_match("ns", axis(0), 0.9, now=1010.0) is None
    assert len(index) == 2
    assert index.purge_expired(now=1010.0) == 1
    assert len(index) == 1


def test_lru_eviction_keeps_recently_used_entries() -> None:
    index = SimilarityIndex(DIM, max_entries=2)
    index.insert("ns", axis(0), b"a", now=0.0)
    index.insert("ns", axis(1), b"b", now=0.0)
    assert index.best_match("ns", axis(0), 0.9, now=0.0)[1] == b"a"  # a is now most recent
    index.insert("ns", axis(2), b"c", now=0.0)
    assert len(index) == 2
    assert index.best_match("ns", axis(1), 0.9, now=0.0) is None
    assert index.best_match("ns", axis(0), 0.9, now=0.0)[1] == b"a"


def test_delete(index: SimilarityIndex) -> None:
    entry = index.insert("ns", axis(0), b"a", now=0.0)
    assert index.delete(entry) is True
    assert index.delete(entry) is False
    assert index.best_match("ns", axis(0), -1.0, now=0.0) is None


def test_snapshot_round_trip(tmp_path: Path, index: SimilarityIndex) -> None:
    index.insert("a", axis(0), b"alpha", now=100.0)
    index.insert("b", axis(1), b"beta", ttl_s=50, now=100.0)
    path = tmp_path / "cache.simcache"
    index.save(path)
    loaded = SimilarityIndex.load(str(path))
    assert (loaded.dim, loaded.quantization, len(loaded)) == (DIM, index.quantization, 2)
    assert loaded.best_match("a", axis(0), 0.99, now=120.0)[1] == b"alpha"
    assert loaded.best_match("b", axis(1), 0.99, now=120.0)[1] == b"beta"
    assert loaded.best_match("b", axis(1), 0.99, now=150.0) is None


def test_corrupt_and_truncated_snapshots_raise_snapshot_error(tmp_path: Path) -> None:
    index = SimilarityIndex(DIM)
    index.insert("ns", axis(0), b"payload")
    path = tmp_path / "cache.simcache"
    index.save(path)
    good = path.read_bytes()
    corrupt = bytearray(good)
    corrupt[-12] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(SnapshotError, match="checksum mismatch"):
        SimilarityIndex.load(path)
    path.write_bytes(good[:-7])
    with pytest.raises(SnapshotError, match="truncated"):
        SimilarityIndex.load(path)
    path.write_bytes(b"not a snapshot at all")
    with pytest.raises(SnapshotError, match="magic"):
        SimilarityIndex.load(path)
    with pytest.raises(OSError):
        SimilarityIndex.load(tmp_path / "missing")


def test_insert_many_and_approximate_recall_on_clustered_data() -> None:
    rng = np.random.default_rng(1)
    dim, n, clusters = 64, 5000, 100
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    data = centres[rng.integers(0, clusters, n)] + 0.35 * rng.standard_normal((n, dim), dtype=np.float32)
    queries = centres[rng.integers(0, clusters, 200)] + 0.35 * rng.standard_normal((200, dim), dtype=np.float32)
    index = SimilarityIndex(dim, max_entries=n, quantization="i8", approximate_threshold=1000)
    ids = index.insert_many("ns", data, [i.to_bytes(4, "little") for i in range(n)])
    assert index.wait_idle(60.0)
    assert len(ids) == n and index.is_approximate("ns")
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    hits = 0
    for q in queries:
        truth = int(np.argmax(unit @ (q / np.linalg.norm(q))))
        _, payload = index.best_match("ns", q, -1.0)
        hits += int.from_bytes(payload, "little") == truth
    assert hits / len(queries) >= 0.99


def test_properties_and_repr() -> None:
    index = SimilarityIndex(384, max_entries=10, quantization="i8", approximate_threshold=50, probes=4)
    assert (index.dim, index.max_entries, index.quantization, index.approximate_threshold, index.probes) == (384, 10, "i8", 50, 4)
    assert index.kernel in {"avx512+vnni", "avx512", "avx2", "neon", "scalar"}
    assert "SimilarityIndex(dim=384" in repr(index)


# --- background (re-)training ------------------------------------------------------------------

RDIM = 32


def clustered_rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, RDIM), dtype=np.float32)
    return centres[rng.integers(0, 30, n)] + 0.3 * rng.standard_normal((n, RDIM), dtype=np.float32)


def finds_itself(index: SimilarityIndex, vector: np.ndarray, entry: int, now: float = 0.0) -> bool:
    hits = index.top_k_ids("ns", vector, 1, now=now)
    return bool(hits) and hits[0][1] == entry and hits[0][0] > 0.999


def test_training_runs_in_background_and_honours_changes_made_meanwhile() -> None:
    rows = clustered_rows(1800, seed=3)
    index = SimilarityIndex(RDIM, max_entries=10_000, approximate_threshold=1000)
    index.hold_retraining(True)
    before = index.insert_many("ns", rows[:1200], [b"before"] * 1200, now=0.0)
    assert index.is_retraining("ns") and not index.is_approximate("ns")
    assert index.wait_retraining_held(60.0)
    assert index.wait_idle(0.05) is False  # held: cannot finish
    # Mid-training: lookups answer (exactly), inserts, deletes and TTL expiry go on.
    assert all(finds_itself(index, rows[i], before[i]) for i in range(0, 1200, 3))
    during = [index.insert("ns", rows[i], b"during", now=0.0) for i in range(1200, 1600)]
    mortal = [index.insert("ns", rows[i], b"mortal", ttl_s=5, now=0.0) for i in range(1600, 1800)]
    deleted = {before[i] for i in range(0, 1200, 10)} | {during[j] for j in range(0, 400, 4)}
    assert all(index.delete(entry) for entry in deleted)
    assert index.purge_expired(now=10.0) == 200
    assert index.is_retraining("ns")
    index.hold_retraining(False)
    assert index.wait_idle(60.0)
    assert index.is_approximate("ns") and not index.is_retraining("ns")
    stored = list(zip(range(1600), before + during, strict=True))
    assert index.namespace_len("ns") == 1600 - len(deleted)
    for i, entry in stored:
        assert finds_itself(index, rows[i], entry, now=10.0) == (entry not in deleted), f"row {i}"
    assert not any(finds_itself(index, rows[1600 + k], entry, now=10.0) for k, entry in enumerate(mortal))


def test_a_lookup_from_another_thread_returns_while_training_is_held() -> None:
    rows = clustered_rows(1500, seed=4)
    index = SimilarityIndex(RDIM, max_entries=10_000, approximate_threshold=1000)
    index.hold_retraining(True)
    ids = index.insert_many("ns", rows, [b""] * 1500)
    assert index.wait_retraining_held(60.0)
    results: list[bool] = []
    reader = threading.Thread(target=lambda: results.append(all(finds_itself(index, rows[i], ids[i]) for i in range(0, 1500, 15))))
    reader.start()
    reader.join(timeout=60.0)
    assert results == [True] and index.is_retraining("ns")
    index.hold_retraining(False)
    assert index.wait_idle(60.0) and index.is_approximate("ns")


def test_loaded_snapshot_answers_while_it_trains(tmp_path: Path) -> None:
    rows = clustered_rows(1500, seed=5)
    index = SimilarityIndex(RDIM, max_entries=10_000, approximate_threshold=1000)
    ids = index.insert_many("ns", rows, [b"x"] * 1500)
    assert index.wait_idle(60.0) and index.is_approximate("ns")
    path = tmp_path / "trained.simcache"
    index.save(path)
    loaded = SimilarityIndex.load(path, hold_retraining=True)
    assert loaded.is_retraining("ns") and not loaded.is_approximate("ns")
    assert all(finds_itself(loaded, rows[i], ids[i]) for i in range(0, 1500, 5))
    loaded.hold_retraining(False)
    assert loaded.wait_idle(60.0) and loaded.is_approximate("ns")
    assert all(finds_itself(loaded, rows[i], ids[i]) for i in range(1500))
    plain = SimilarityIndex.load(path)
    assert plain.wait_idle(60.0) and plain.is_approximate("ns")


def test_training_sample_option_and_timeout_validation() -> None:
    rows = clustered_rows(1200, seed=6)
    index = SimilarityIndex(RDIM, approximate_threshold=1000, training_sample_per_list=0)
    assert index.training_sample_per_list == 0
    assert SimilarityIndex(RDIM).training_sample_per_list == 32
    ids = index.insert_many("ns", rows, [b""] * 1200)
    assert index.wait_idle() and index.is_approximate("ns")
    assert all(finds_itself(index, rows[i], ids[i]) for i in range(1200))
    with pytest.raises(ValueError, match="timeout_s"):
        index.wait_idle(-1.0)
