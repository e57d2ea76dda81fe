"""How the runtime benchmark lays out its engine and sizes its batcher, from what it measured.

The engine floor is scanned for each instance layout of the same threads (:func:`layouts`); the
layout with the best floor at a bucket size wins (:func:`best_layout`). The batcher's size is then
measured, not read off the floor: of the bucket sizes that let the next batch gather while one runs
(:func:`batch_candidates`), the one that served the most samples per CPU-second wins, a larger one
within :data:`BATCH_TIE` of it winning the tie (:func:`choose_batch`); :func:`full_batches` is the
batching that runs batches of exactly that size.
"""

from __future__ import annotations

from typing import Any

from ..config import Batching

BUCKETS = (1, 2, 4, 8)  # the batch sizes the engine runs (powers of two: other batches are padded up)
BATCH_TIE = 0.97  # measured batcher throughputs this close count as equal: the larger batch wins


def batch_candidates(concurrency: int) -> list[int]:
    """Bucket sizes for the batcher under a closed loop of ``concurrency`` clients per instance: at
    most half of them, so that the next batch gathers while one runs (a batch of every client idles
    its instance while they all turn around: 0.70 of the floor at batch 4 on 2 instances)."""
    return [b for b in BUCKETS if b <= max(1, concurrency // 2)]


def choose_batch(measured: dict[int, float]) -> int:
    """The batcher size that served most samples per CPU-second in-process; a larger one within 3 % of
    it wins (it shares the per-batch hand-off and Python pass, and 3 % is below the windows' noise)."""
    best = max(measured.values())
    return max(b for b, v in measured.items() if v >= BATCH_TIE * best)


def full_batches(batch: int, instances: int, max_queue_size: int) -> Batching:
    """A batcher that runs batches of exactly ``batch`` under a closed loop (waiting up to 5 ms to fill one)."""
    return Batching(
        max_batch_size=batch,
        preferred_batch_sizes=(batch,),
        max_queue_delay_us=0 if batch == 1 else 5000,
        max_queue_size=max_queue_size,
        instances=instances,
    )


def layouts(threads: int) -> list[int]:
    """Instance counts to scan: one session with every thread, and one single-thread session per thread."""
    return sorted({1, threads})


def best_layout(scans: list[dict[str, Any]]) -> dict[str, Any]:
    """The scan (one instance layout) with the highest floor, counting only bucket sizes."""

    def best_bucket(scan: dict[str, Any]) -> float:
        return float(max(r["samples_per_s"] for r in scan["per_batch"] if r["batch"] in BUCKETS))

    return max(scans, key=best_bucket)


__all__ = ["BATCH_TIE", "BUCKETS", "batch_candidates", "best_layout", "choose_batch", "full_batches", "layouts"]
