"""Statistics of an LM engine: counters and latency histograms, in seconds.

Written only by the engine's step-loop thread; :meth:`EngineCounters.snapshot` may be called
from any thread and copies the figures without a lock (a snapshot taken mid-step may be one
token behind, never torn within one histogram's bucket list). The histograms' buckets are
vLLM's, so ``/metrics`` can export them under vLLM's names.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
TOKEN_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


@dataclass(frozen=True)
class HistogramSnapshot:
    """``counts[i]`` observations were ``<= buckets[i]`` and above the previous bound (not cumulative);
    ``counts[-1]`` is the ``+Inf`` bucket. ``total`` is the sum of the observations (seconds)."""

    buckets: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    total: float

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Histogram:
    """Fixed-bucket histogram; ``observe`` is O(log buckets)."""

    __slots__ = ("_buckets", "_counts", "count", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self._buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self._counts[bisect_left(self._buckets, seconds)] += 1
        self.count += 1
        self.total += seconds

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._buckets, tuple(self._counts), self.count, self.total)


@dataclass(frozen=True)
class LMStats:
    """A snapshot of an engine. ``running``: sequences in the runtime; ``waiting``: in edgeds' queue;
    ``kv_usage`` 0..1 and ``kv_bytes`` from the runtime; ``preemptions`` None when it does not report
    them; ``requests`` counts finished requests by finish reason; latencies in seconds."""

    running: int
    waiting: int
    kv_usage: float
    kv_bytes: int
    preemptions: int | None
    prompt_tokens: int
    generation_tokens: int
    requests: Mapping[str, int]
    rejected: Mapping[str, int]
    ttft: HistogramSnapshot
    inter_token: HistogramSnapshot
    e2e: HistogramSnapshot
    queue_time: HistogramSnapshot


class EngineCounters:
    """The engine's mutable figures (step-loop thread writes; see the module docstring)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.requests: dict[str, int] = {"stop": 0, "length": 0, "abort": 0, "timeout": 0}
        self.rejected: dict[str, int] = {"queue_full": 0, "too_large": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.inter_token = Histogram(TOKEN_BUCKETS)
        self.e2e = Histogram(REQUEST_BUCKETS)
        self.queue_time = Histogram(REQUEST_BUCKETS)

    def snapshot(
        self, *, running: int, waiting: int, kv_usage: float, kv_bytes: int, preemptions: int | None
    ) -> LMStats:
        return LMStats(
            running=running,
            waiting=waiting,
            kv_usage=kv_usage,
            kv_bytes=kv_bytes,
            preemptions=preemptions,
            prompt_tokens=self.prompt_tokens,
            generation_tokens=self.generation_tokens,
            requests=dict(self.requests),
            rejected=dict(self.rejected),
            ttft=self.ttft.snapshot(),
            inter_token=self.inter_token.snapshot(),
            e2e=self.e2e.snapshot(),
            queue_time=self.queue_time.snapshot(),
        )
