"""The Prometheus text of ``/metrics`` on the LM server, under the names vLLM uses, so dashboards
made for vLLM read it as it is.

A pure function of the engines' statistics snapshots (:meth:`LMEngine.stats`) and the server's
failed answers; every family carries a ``model_name`` label. Histograms are Prometheus histograms
(cumulative ``_bucket{le=...}``, ``_sum``, ``_count``), in seconds; counters end in ``_total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from ..views import rss_bytes


class Histogram(Protocol):
    """What a histogram of a statistics snapshot gives (:class:`~edgeds.runtime.lm.stats.HistogramSnapshot`):
    bucket upper bounds (ascending, seconds), the observations per bucket, not cumulative (one more
    than the bounds: the last counts those above them all), their count and their sum."""

    @property
    def buckets(self) -> Sequence[float]: ...
    @property
    def counts(self) -> Sequence[int]: ...
    @property
    def count(self) -> int: ...
    @property
    def total(self) -> float: ...


class Stats(Protocol):
    """What a statistics snapshot of an LM engine gives (:class:`~edgeds.runtime.lm.engine.LMStats`)."""

    @property
    def running(self) -> int: ...
    @property
    def waiting(self) -> int: ...
    @property
    def kv_usage(self) -> float: ...
    @property
    def preemptions(self) -> int | None: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def generation_tokens(self) -> int: ...
    @property
    def requests(self) -> Mapping[str, int]: ...
    @property
    def ttft(self) -> Histogram: ...
    @property
    def inter_token(self) -> Histogram: ...
    @property
    def e2e(self) -> Histogram: ...
    @property
    def queue_time(self) -> Histogram: ...


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus_text(models: Iterable[tuple[str, Stats]], failures: Mapping[int, int], started_at: float) -> str:
    """The exposition of each (model name, snapshot), the server's ``failures`` (answers of status
    400 or more by code), the process's RSS and the uptime since ``started_at`` (``time.time()``)."""
    rows = [(f'model_name="{_label(name)}"', stats) for name, stats in models]
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    def gauge(name: str, help_text: str, pick: str) -> None:
        family(name, "gauge", help_text)
        lines.extend(f"{name}{{{labels}}} {_value(getattr(s, pick))}" for labels, s in rows)

    def counter(name: str, help_text: str, pick: str) -> None:
        family(f"{name}_total", "counter", help_text)  # text format 0.0.4: the family is the sample's name
        lines.extend(f"{name}_total{{{labels}}} {_value(getattr(s, pick) or 0)}" for labels, s in rows)

    def histogram(name: str, help_text: str, pick: str) -> None:
        family(name, "histogram", help_text)
        for labels, s in rows:
            h: Histogram = getattr(s, pick)
            cumulative = 0
            for bound, count in zip(h.buckets, h.counts, strict=False):
                cumulative += count
                lines.append(f'{name}_bucket{{{labels},le="{bound!r}"}} {cumulative}')
            lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {h.count}')
            lines.append(f"{name}_sum{{{labels}}} {_value(float(h.total))}")
            lines.append(f"{name}_count{{{labels}}} {h.count}")

    gauge("vllm:num_requests_running", "Sequences in the runtime (prefill or decode)", "running")
    gauge("vllm:num_requests_waiting", "Requests waiting in the queue in front of the runtime", "waiting")
    gauge("vllm:kv_cache_usage_perc", "Share of the KV cache in use (1 = full)", "kv_usage")
    counter("vllm:num_preemptions", "Sequences preempted by the runtime's scheduler", "preemptions")
    counter("vllm:prompt_tokens", "Prompt tokens processed", "prompt_tokens")
    counter("vllm:generation_tokens", "Tokens generated", "generation_tokens")
    family("vllm:request_success_total", "counter", "Requests finished, by finish reason")
    for labels, s in rows:
        for reason, n in sorted(s.requests.items()):
            lines.append(f'vllm:request_success_total{{{labels},finished_reason="{_label(reason)}"}} {n}')
    histogram("vllm:time_to_first_token_seconds", "Time to the first token (from arrival)", "ttft")
    histogram("vllm:inter_token_latency_seconds", "Time between two tokens of a sequence", "inter_token")
    histogram("vllm:e2e_request_latency_seconds", "Request latency from arrival to the last token", "e2e")
    histogram("vllm:request_queue_time_seconds", "Time waiting in the queue before the runtime took it", "queue_time")
    family("edgeds_http_request_failures_total", "counter", "Requests answered 4xx or 5xx, framing errors included")
    lines.extend(
        f'edgeds_http_request_failures_total{{class="{code // 100}xx",code="{code}"}} {n}'
        for code, n in failures.items()
    )
    family("edgeds_process_resident_memory_bytes", "gauge", "RSS of the server process")
    lines.append(f"edgeds_process_resident_memory_bytes {rss_bytes()}")
    family("edgeds_uptime_seconds", "gauge", "Seconds since the server started")
    lines.append(f"edgeds_uptime_seconds {time.time() - started_at!r}")
    return "\n".join(lines) + "\n"


__all__ = ["Histogram", "Stats", "prometheus_text"]
