"""What ``edgeds bench`` runs for a language model: a single stream and a concurrency sweep.

:func:`bench_lm_path` opens the engine ``edgeds serve`` would run for a causal-lm bundle (or an LM
runtime's model directory) and drives it in-process (:mod:`.llm_engine`); :func:`bench_lm_url`
drives a running OpenAI-compatible server over HTTP (:mod:`.llm_load`). Both send the benchmark's
fixed prompts (:mod:`.llm_prompts`), ``max_tokens`` generated tokens each with ``ignore_eos``,
greedy, a warm-up first (not recorded), and report per concurrency level total tok/s, TTFT, ITL and
per-stream decode tok/s (:mod:`.llm_stats`), plus continuous batching's gain (total tok/s at 8 over
at 1) when both levels ran. Every resource opened here is closed before they return.
"""

from __future__ import annotations

import http.client
import json
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .environment import environment
from .llm_load import Target, run_load
from .llm_prompts import Schedule
from .llm_report import PAIRED_CONCURRENCY, run_at
from .llm_stats import Generation, ratio, summarize


def _no_progress(name: str) -> None:
    """The default ``progress`` callback: ignore the run names."""


def _sweep(
    schedule: Schedule,
    go: Callable[[list[str], int], list[Generation]],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    runs = []
    for run in schedule.runs:
        progress(f"{run.name} ({len(run.prompts)} requests, concurrency {run.concurrency})")
        records = go(list(run.prompts), run.concurrency)
        if not run.warmup:
            runs.append(summarize(records, run.concurrency))
    system = {"sweep": runs}
    one, eight = run_at(system, 1), run_at(system, PAIRED_CONCURRENCY)
    out: dict[str, Any] = {"sweep": runs}
    if one is not None:
        out["single"] = one
    if one is not None and eight is not None:
        out["batching_gain"] = ratio(eight["total_tok_s"], one["total_tok_s"])
    return out


def _settings(schedule: Schedule, max_tokens: int) -> dict[str, Any]:
    return {
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "concurrency": list(schedule.levels),
        "requests_per_level": {str(c): schedule.requests(c) for c in schedule.levels},
        "prompt_words": schedule.words,
        "warmup_requests": schedule.warmup,
    }


def bench_lm_path(
    path: Path,
    *,
    runtime: str | None = None,
    threads: int | None = None,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    max_tokens: int = 64,
    per_client: int = 2,
    min_requests: int = 4,
    prompt_words: int = 60,
    progress: Callable[[str], None] = _no_progress,
) -> dict[str, Any]:
    """The LM benchmark of ``path`` (a causal-lm bundle or a runtime's model directory) in-process,
    on the engine ``edgeds serve`` would open with ``runtime`` and ``threads``. The JSON-able
    report: ``transport``, ``model``, ``runtime``, ``kv_plan``, ``settings``, ``single``,
    ``sweep``, ``batching_gain``, ``environment``."""
    from ..runtime.lm.loading import open_engine
    from .llm_engine import run_engine

    schedule = Schedule(tuple(concurrency), per_client, min_requests, words=prompt_words)
    queue = max(64, 2 * max(concurrency, default=1))
    engine = open_engine(path, runtime=runtime, threads=threads, max_queue=queue)
    with engine:
        engine.start()
        report: dict[str, Any] = {
            "transport": "in-process (LMEngine)",
            "model": engine.name,
            "runtime": engine.runtime,
            "kv_plan": engine.plan.to_dict(),
            "max_num_seqs": engine.spec.max_num_seqs,
            "settings": _settings(schedule, max_tokens),
        }
        report.update(_sweep(schedule, lambda p, c: run_engine(engine, p, max_tokens, c), progress))
    report["environment"] = environment(threads={"threads": threads})
    return report


def served_lm_models(url: str, headers: Mapping[str, str] | None = None) -> list[str] | None:
    """The model ids ``/v1/models`` of the server at ``url`` lists, or None when it has no OpenAI
    API (an image server)."""
    request = urllib.request.Request(f"{url.rstrip('/')}/v1/models", headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            data = json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException):  # 404 (no OpenAI API), refused, not HTTP, not JSON
        return None
    if not isinstance(data, dict):
        return None
    return [str(m["id"]) for m in data.get("data", []) if isinstance(m, dict) and "id" in m]


def bench_lm_url(
    url: str,
    model: str,
    *,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    max_tokens: int = 64,
    per_client: int = 2,
    min_requests: int = 4,
    prompt_words: int = 60,
    headers: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = _no_progress,
) -> dict[str, Any]:
    """The LM benchmark of ``model`` on the OpenAI-compatible server at ``url`` (``/v1/completions``,
    streaming). The report as :func:`bench_lm_path`'s, without the engine's fields."""
    schedule = Schedule(tuple(concurrency), per_client, min_requests, words=prompt_words)
    target = Target(url.rstrip("/"), model, headers=dict(headers or {}))
    report: dict[str, Any] = {
        "transport": "HTTP (OpenAI /v1/completions, streaming)",
        "url": url,
        "model": model,
        "settings": _settings(schedule, max_tokens),
    }
    report.update(_sweep(schedule, lambda p, c: run_load(target, p, max_tokens, c), progress))
    report["environment"] = environment()
    return report


__all__ = ["bench_lm_path", "bench_lm_url", "served_lm_models"]
