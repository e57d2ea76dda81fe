"""LoadGen-style scenarios against an engine in-process or a server over HTTP, and the run of a set of them.

Scenarios (MLPerf names): engine floor (the bare backend at batch 1..N, no batcher), SingleStream
(one query at a time; p90), MultiStream (8 concurrent samples per query; p99 of the query), Server
(Poisson arrivals, open loop; the highest QPS whose p99 stays under a bound), Offline (throughput
at high concurrency) and a closed-loop concurrency sweep. :func:`run_benchmark` runs the chosen
ones and returns a JSON-able report.

Warm-up requests are excluded and the first query is reported separately. The load generator runs
in this process: on a small machine it shares the cores with the server, and the report says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import BenchError
from ..power import EnergyWindow, PowerSource
from ..runtime.oip_requests import oip_binary_inputs
from .clients import Client, EngineClient, HttpClient, stats_snapshot
from .energy import energy_entry, open_bench_power, power_fields
from .loops import closed_loop, poisson_open_loop
from .monitor import ResourceMonitor
from .stats import Samples, batch_stats_delta, summarize

SCENARIOS = ("floor", "single", "multi", "server", "offline", "sweep")


def engine_floor(
    backends: Any,
    inputs_for: Callable[[Any, int], Mapping[str, np.ndarray]],
    batches: Sequence[int],
    duration_s: float = 2.0,
) -> dict[str, Any]:
    """Bare backends (no batcher, no copies beyond the backend's own): samples/s per batch size.

    ``backends`` is one opened backend, or several (engine instances, each with its share of the
    threads) that run back to back in a thread each, all at once: samples/s is their sum.
    ``inputs_for(backend, batch)`` gives the arrays to feed that backend (e.g. its staging inputs).
    """
    group = list(backends) if isinstance(backends, (list, tuple)) else [backends]
    rows: list[dict[str, Any]] = []
    for batch in batches:
        feeds = [inputs_for(backend, batch) for backend in group]
        samples_per_s, lat = floor_window(group, feeds, batch, duration_s)
        arr = np.asarray(lat) * 1000
        rows.append(
            {
                "batch": batch,
                "iterations": len(lat),
                "samples_per_s": round(samples_per_s, 2),
                "p50_ms": round(float(np.percentile(arr, 50)), 3),
                "p99_ms": round(float(np.percentile(arr, 99)), 3),
            }
        )
    best = max(rows, key=lambda r: r["samples_per_s"])
    return {
        "instances": len(group),
        "per_batch": rows,
        "best_batch": best["batch"],
        "best_samples_per_s": best["samples_per_s"],
    }


def floor_window(
    backends: Sequence[Any], feeds: Sequence[Mapping[str, np.ndarray]], batch: int, duration_s: float
) -> tuple[float, list[float]]:
    """Run each backend on its feed back to back for ``duration_s`` (one warm-up call each first).

    Returns (samples/s summed over the backends, every call's latency in seconds). One backend
    runs on the calling thread; several run on a thread each, all at once.
    """
    for backend, feed in zip(backends, feeds, strict=True):
        backend.infer(feed)
    latencies: list[list[float]] = [[] for _ in backends]

    def loop(index: int, end: float) -> None:
        backend, feed, lat = backends[index], feeds[index], latencies[index]
        while time.perf_counter() < end:
            t = time.perf_counter()
            backend.infer(feed)
            lat.append(time.perf_counter() - t)

    end = time.perf_counter() + duration_s
    if len(backends) == 1:
        loop(0, end)
    else:
        with ThreadPoolExecutor(len(backends)) as pool:  # leaving it waits for every backend
            runs = [pool.submit(loop, i, end) for i in range(len(backends))]
        for run in runs:
            run.result()  # a backend's error is raised here, on the calling thread
    # each backend's rate over the time it spent inferring, summed
    rate = sum(batch * len(lat) / sum(lat) for lat in latencies if lat)
    return rate, [x for lat in latencies for x in lat]


def single_stream(client: Client, duration_s: float) -> dict[str, Any]:
    return summarize(closed_loop(client, 1, duration_s))


def multi_stream(client: Client, duration_s: float, samples_per_query: int = 8) -> dict[str, Any]:
    """Each query is ``samples_per_query`` concurrent single-sample requests; latency = the slowest."""
    queries = Samples()
    with ThreadPoolExecutor(samples_per_query) as pool:
        end = time.perf_counter() + duration_s
        list(pool.map(lambda _: client(), range(samples_per_query)))  # warm-up
        while time.perf_counter() < end:
            t = time.perf_counter()
            statuses = list(pool.map(lambda _: client(), range(samples_per_query)))
            queries.add(t, time.perf_counter(), 200 if all(s == 200 for s in statuses) else max(statuses))
    return summarize(queries, samples_per_query)


def server_scenario(
    client: Client,
    p99_bound_ms: float,
    start_qps: float,
    duration_s: float = 3.0,
    steps: int = 6,
    workers: int = 32,
) -> dict[str, Any]:
    """Highest Poisson QPS with p99 <= bound, no errors and achieved >= 95 % of offered (bisection)."""
    runs: list[dict[str, Any]] = []
    low, high = 0.0, None
    qps = start_qps
    for _ in range(steps):
        samples, offered = poisson_open_loop(client, qps, duration_s, workers=workers)
        summary = summarize(samples)
        summary["offered_qps"] = round(offered, 2)
        ok = (
            summary.get("errors", 1) == 0
            and summary.get("p99_ms", float("inf")) <= p99_bound_ms
            and summary.get("qps", 0) >= 0.95 * offered
        )
        summary["meets_bound"] = ok
        runs.append(summary)
        if ok:
            low = qps
            qps = qps * 2 if high is None else (qps + high) / 2
        else:
            high = qps
            qps = (low + qps) / 2 if low else qps / 2
    best = max((r for r in runs if r["meets_bound"]), key=lambda r: r["offered_qps"], default=None)
    return {"p99_bound_ms": p99_bound_ms, "runs": runs, "max_qps_under_bound": best["offered_qps"] if best else 0.0}


def offline(client: Client, concurrency: int, duration_s: float) -> dict[str, Any]:
    return summarize(closed_loop(client, concurrency, duration_s))


def concurrency_sweep(client: Client, levels: Sequence[int], duration_s: float) -> list[dict[str, Any]]:
    out = []
    for level in levels:
        summary = summarize(closed_loop(client, level, duration_s))
        summary["concurrency"] = level
        out.append(summary)
    return out


def run_benchmark(
    *,
    engine: Any = None,
    url: str | None = None,
    model: str | None = None,
    sample: np.ndarray,
    input_name: str,
    scenarios: Sequence[str] = SCENARIOS,
    duration_s: float = 3.0,
    concurrency: Sequence[int] = (1, 2, 4, 8, 16),
    p99_bound_ms: float = 50.0,
    floor_backends: Sequence[Any] = (),
    max_batch: int = 8,
    server_pid: int | None = None,
    progress: Callable[[str], None] = lambda _: None,
    power: tuple[PowerSource | None, str | None] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Run ``scenarios`` against an in-process ``engine`` or a server at ``url``; a JSON-able report.

    ``sample`` is one sample with its batch dim (``[1, ...]``) of the input ``input_name``;
    ``extra`` one sample of each other input of a multi-input model, by name. ``floor_backends`` (opened with buckets
    1..max_batch; one per engine instance) give the engine floor; it is skipped unless given.
    BenchError without an engine or a server's ``url`` and ``model``, or if the target does not
    answer a first valid query with 200.

    Energy (:mod:`.energy`): each measured scenario gets ``energy`` over its window, divided by the
    samples the engine inferred in it; the report gets ``power_source`` and
    ``power_unavailable_reason``. ``power`` is an opened ``(source, reason)`` pair (the caller
    closes it); by default this machine's source is opened here and closed before returning.
    """
    report: dict[str, Any] = {"transport": "in-process" if engine is not None else "http", "scenarios": {}}
    if engine is not None:
        samples = {input_name: sample, **(extra or {})}
        client: Client = EngineClient(engine, samples)

        def snapshot() -> Any:
            return engine.stats()

        pid = os.getpid()
    else:
        if url is None or model is None:
            raise BenchError("run_benchmark needs an engine, or a server's url and model name")
        host, _, port = url.removeprefix("http://").partition(":")
        samples = {input_name: sample, **(extra or {})}
        body, headers = oip_binary_inputs(samples)
        client = HttpClient(host, int(port or 80), f"/v2/models/{model}/infer", body, headers)

        def snapshot() -> Any:
            return stats_snapshot(url, model)

        pid = server_pid or os.getpid()
    opened = power is None
    source, reason = open_bench_power(url if engine is None else None) if power is None else power
    report.update(power_fields(source, reason))
    try:
        start = time.perf_counter()
        status = client()
        report["first_query_s"] = round(time.perf_counter() - start, 4)
        if status != 200:
            raise BenchError(f"the target answered {status} to a valid request")
        out = report["scenarios"]

        def measured(name: str, fn: Callable[[], Any]) -> None:
            progress(name)
            before = snapshot()
            with ResourceMonitor(pid) as monitor, EnergyWindow(source, reason or "") as window:
                result = fn()
            after = snapshot()
            entry = result if isinstance(result, dict) else {"runs": result}
            entry.update(batch_stats_delta(before, after))
            entry["resources"] = monitor.report()
            entry["energy"] = energy_entry(window.result, after.inference_count - before.inference_count)
            out[name] = entry

        if "floor" in scenarios and floor_backends:
            progress("floor")

            def feed(backend: Any, n: int) -> Mapping[str, np.ndarray]:
                staged = getattr(backend, "staging_inputs", None)
                arrays = dict(staged(n)) if staged is not None else {}
                if not arrays:
                    return {name: np.repeat(one, n, axis=0) for name, one in samples.items()}
                for name, one in samples.items():
                    arrays[name][...] = one
                return arrays

            batches = list(range(1, max_batch + 1))
            out["floor"] = engine_floor(floor_backends, feed, batches, duration_s=duration_s / 2)
        if "single" in scenarios:
            measured("single", lambda: single_stream(client, duration_s))
        if "multi" in scenarios:
            measured("multi", lambda: multi_stream(client, duration_s))
        if "offline" in scenarios:
            measured("offline", lambda: offline(client, max(16, 2 * max_batch), duration_s))
        if "sweep" in scenarios:
            measured("sweep", lambda: concurrency_sweep(client, concurrency, duration_s))
        if "server" in scenarios:
            start_qps = max(10.0, 0.5 * float(out.get("offline", {}).get("qps", 50.0)))
            measured("server", lambda: server_scenario(client, p99_bound_ms, start_qps, duration_s))
    finally:
        if opened and source is not None:
            source.close()
        if isinstance(client, HttpClient):
            client.close()
    return report


__all__ = [
    "SCENARIOS",
    "concurrency_sweep",
    "engine_floor",
    "floor_window",
    "multi_stream",
    "offline",
    "run_benchmark",
    "server_scenario",
    "single_stream",
]
