"""LLM benchmark statistics: one record per generation request and the figures computed from them.

Every figure comes from raw ``time.perf_counter`` timestamps taken where the tokens arrive (an SSE
chunk read by the load generator, or a read of the runtime's handle in-process); percentiles are
computed from them, never averaged. Definitions (as vLLM's ``benchmark_serving`` uses them):

- TTFT: from sending the request to the first generated token's arrival;
- inter-token latency (ITL): the time between successive arrivals of generated text, one value
  per arrival after the first (an arrival carrying several tokens is one interval);
- TPOT: per request, (end - first token) / (completion tokens - 1);
- decode tok/s per stream: per request, (completion tokens - 1) / (end - first token); where a
  server's chunks reach the client in bursts (a tiny model, a starved client) it is inflated;
- stream tok/s: per request, completion tokens / (end - start), prefill included: robust to bursts;
- total tok/s: completion tokens of every successful request / the span from the first request's
  start to the last one's end.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BenchError

PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0))


@dataclass
class Generation:
    """One request's raw timing: when it was sent, when each piece of text arrived, when it ended.

    ``arrivals`` are the times of the arrivals that carried generated tokens (the first is the
    TTFT's end); ``completion_tokens`` is the server's usage count when it sent one, else the
    number of arrivals; ``ok`` is False for an HTTP error or a broken stream (``error`` says why).
    """

    start: float
    end: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    finish_reason: str | None = None
    ok: bool = True
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        """Seconds from the request's start to its first generated token (None without one)."""
        return self.arrivals[0] - self.start if self.arrivals else None

    def intervals(self) -> list[float]:
        """Seconds between successive arrivals (the inter-token latencies of this request)."""
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]

    @property
    def tpot(self) -> float | None:
        """Mean seconds per output token after the first (None with fewer than two tokens)."""
        if not self.arrivals or self.completion_tokens < 2:
            return None
        return (self.end - self.arrivals[0]) / (self.completion_tokens - 1)


def percentiles(values: Sequence[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99 and mean of ``values`` times ``scale`` (seconds to ms by default), rounded.

    Linear interpolation between order statistics (numpy's default). Empty input gives {}.
    """
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64) * scale
    out = {name: round(float(np.percentile(arr, q)), 3) for name, q in PERCENTILES}
    out["mean"] = round(float(arr.mean()), 3)
    return out


def summarize(records: Sequence[Generation], concurrency: int | None = None) -> dict[str, Any]:
    """The report entry of one measured run: counts, total tok/s, TTFT / ITL / TPOT / e2e
    percentiles (ms) and per-request decode tok/s.

    ``total_tok_s`` counts the completion tokens of the successful requests over the span of all
    of them (first start to last end). BenchError for no records.
    """
    if not records:
        raise BenchError("no requests were measured")
    ok = [r for r in records if r.ok]
    out: dict[str, Any] = {"requests": len(records), "ok": len(ok), "errors": len(records) - len(ok)}
    if concurrency is not None:
        out["concurrency"] = concurrency
    errors = sorted({r.error for r in records if not r.ok and r.error})
    if errors:
        out["error_examples"] = errors[:3]
    if not ok:
        return out
    span = max(r.end for r in ok) - min(r.start for r in ok)
    tokens = sum(r.completion_tokens for r in ok)
    out["duration_s"] = round(span, 3)
    out["completion_tokens"] = tokens
    out["completion_tokens_per_request"] = round(tokens / len(ok), 2)
    prompt = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    if prompt:
        out["prompt_tokens_per_request"] = round(sum(prompt) / len(prompt), 2)
    out["total_tok_s"] = round(tokens / span, 3) if span > 0 else 0.0
    out["requests_per_s"] = round(len(ok) / span, 4) if span > 0 else 0.0
    out["ttft_ms"] = percentiles([t for r in ok if (t := r.ttft) is not None])
    out["itl_ms"] = percentiles([i for r in ok for i in r.intervals()])
    out["tpot_ms"] = percentiles([t for r in ok if (t := r.tpot) is not None])
    out["e2e_ms"] = percentiles([r.end - r.start for r in ok])
    decode = [1.0 / t for r in ok if (t := r.tpot) is not None and t > 0]
    out["decode_tok_s_per_stream"] = percentiles(decode, scale=1.0)
    out["stream_tok_s"] = percentiles([r.completion_tokens / (r.end - r.start) for r in ok if r.end > r.start], 1.0)
    out["finish_reasons"] = _counts(r.finish_reason or "none" for r in ok)
    return out


def _counts(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return dict(sorted(counts.items()))


def ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    """``numerator / denominator`` rounded, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, digits)


__all__ = ["PERCENTILES", "Generation", "percentiles", "ratio", "summarize"]
