"""Benchmark statistics: raw per-request records and what is computed from them.

Every latency comes from raw per-request timestamps (``time.perf_counter`` seconds); percentiles
are computed from them, never averaged. :class:`Samples` is what every load pattern returns,
:func:`summarize` turns it into a report entry, :func:`median_interval` says how far a median of
noisy windows can be trusted, and :func:`batch_stats_delta` reads what the batcher did in between
two statistics snapshots.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BenchError


@dataclass
class Samples:
    """Raw per-request records: start, end (perf_counter seconds), status."""

    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)

    def add(self, start: float, end: float, status: int) -> None:
        self.starts.append(start)
        self.ends.append(end)
        self.status.append(status)

    def peak_in_flight(self) -> int:
        """The most requests outstanding at once (the concurrency the load really had)."""
        events = sorted([(t, 1) for t in self.starts] + [(t, -1) for t in self.ends])
        level = peak = 0
        for _, step in events:  # at equal times an end (-1) sorts before a start
            level += step
            peak = max(peak, level)
        return peak

    def merge(self, other: Samples) -> None:
        self.starts.extend(other.starts)
        self.ends.extend(other.ends)
        self.status.extend(other.status)


def median_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """The median of ``values`` and a distribution-free confidence interval for it.

    The interval is a pair of order statistics, ``(x_(k), x_(n+1-k))`` with the largest ``k`` whose
    coverage, ``1 - 2 * P(Binomial(n, 1/2) < k)``, is at least ``confidence``: it assumes only that
    the values are independent draws of one distribution (paired benchmark windows on a noisy
    host), not that they are normal. With too few values for ``confidence`` (n <= 5 at 95 %) it is
    the range, and ``coverage`` says what that range really covers (below what was asked).

    Returns ``median``, ``low``, ``high`` and ``coverage`` (0..1). BenchError for no values (a
    benchmark that measured no windows) or a ``confidence`` outside (0, 1).
    """
    if not values:
        raise BenchError("median_interval needs at least one value")
    if not 0.0 < confidence < 1.0:
        raise BenchError(f"confidence must be in (0, 1), got {confidence}")
    ordered = sorted(float(v) for v in values)
    n = len(ordered)

    def coverage(k: int) -> float:  # P(x_(k) <= median < x_(n+1-k)) for the true median
        below = sum(math.comb(n, i) for i in range(k)) / 2.0**n
        return 1.0 - 2.0 * below

    k = 1
    while k + 1 <= n // 2 and coverage(k + 1) >= confidence:
        k += 1
    return {
        "median": float(np.median(ordered)),
        "low": ordered[k - 1],
        "high": ordered[n - k],
        "coverage": round(coverage(k), 4),
    }


def summarize(samples: Samples, samples_per_query: int = 1) -> dict[str, Any]:
    """Percentiles (ms) from raw timestamps, throughput, errors."""
    if not samples.starts:
        return {"queries": 0}
    starts = np.asarray(samples.starts)
    ends = np.asarray(samples.ends)
    status = np.asarray(samples.status)
    ok = status == 200
    lat = (ends - starts)[ok] * 1000.0
    span = float(ends.max() - starts.min()) or 1e-9
    out: dict[str, Any] = {
        "queries": len(starts),
        "ok": int(ok.sum()),
        "errors": int((~ok).sum()),
        "status_503": int((status == 503).sum()),
        "duration_s": round(span, 4),
        "qps": round(float(ok.sum()) / span, 2),
        "samples_per_s": round(float(ok.sum()) * samples_per_query / span, 2),
    }
    if len(lat):
        for name, q in (("p50", 50), ("p90", 90), ("p95", 95), ("p99", 99), ("p99.9", 99.9)):
            out[f"{name}_ms"] = round(float(np.percentile(lat, q)), 3)
        out["max_ms"] = round(float(lat.max()), 3)
        out["mean_ms"] = round(float(lat.mean()), 3)
    return out


def batch_stats_delta(before: Any, after: Any) -> dict[str, Any]:
    """Mean batch size and histogram between two :class:`EngineStats` snapshots."""
    executions = after.execution_count - before.execution_count
    samples = after.inference_count - before.inference_count
    hist = {k: v - before.batch_sizes.get(k, 0) for k, v in after.batch_sizes.items()}
    return {
        "mean_batch_size": round(samples / executions, 3) if executions else 0.0,
        "batch_histogram": {str(k): v for k, v in sorted(hist.items()) if v},
    }


__all__ = ["Samples", "batch_stats_delta", "median_interval", "summarize"]
