"""Exact percentiles over recorded samples.

Why exact sorted arrays rather than an HDR histogram: a bench run here keeps at most a few hundred
thousand samples (100k floats is ~0.8 MB and sorts in ~20 ms), so there is no memory pressure that
would justify trading precision for buckets; p99.9 of 10k samples is then a real observed value,
not a bucket edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["PERCENTILES", "Distribution", "percentile", "summarize"]

#: The percentiles every distribution reports.
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0, 99.9)

#: How the percentiles are computed, stated in every report.
METHOD = "exact: nearest-rank over all sorted samples"


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of ascending `sorted_values`.

    Nearest rank: the smallest sample such that at least p% of samples are <= it, i.e. the value at
    1-based rank ceil(p/100 * n). It is always an observed sample (no interpolation), so a p99.9
    never reports a latency that no request had.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty sample set is undefined")
    if not 0.0 < p <= 100.0:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    # The small epsilon keeps e.g. 99.9% of 1000 at rank 999 despite float rounding (999.0000001).
    rank = math.ceil(p / 100.0 * n - 1e-9)
    return sorted_values[max(rank, 1) - 1]


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one sample set (same unit as the samples)."""

    count: int
    min: float
    mean: float
    max: float
    percentiles: dict[float, float]

    def to_dict(self, scale: float = 1.0) -> dict[str, float | int]:
        """JSON-ready dict; `scale` converts units (e.g. 1000 for seconds -> milliseconds)."""
        out: dict[str, float | int] = {
            "count": self.count,
            "min": self.min * scale,
            "mean": self.mean * scale,
            "max": self.max * scale,
        }
        for p, v in self.percentiles.items():
            out[f"p{p:g}"] = v * scale
        return out


def summarize(values: Iterable[float]) -> Distribution | None:
    """Count, min, mean, max and `PERCENTILES` of `values`; None when there are no samples."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Distribution(
        count=len(ordered),
        min=ordered[0],
        mean=math.fsum(ordered) / len(ordered),
        max=ordered[-1],
        percentiles={p: percentile(ordered, p) for p in PERCENTILES},
    )
