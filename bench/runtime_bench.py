"""Runtime benchmark: edgeds serve vs the bare engine, the in-process batcher, and peer servers.

One command runs everything side by side on this machine and writes JSON + Markdown::

    .venv/bin/python bench/runtime_bench.py [--duration 10] [--threads 2] [--peers ""]

For the shipped model (models/surface-defect/model.onnx; a MobileNet-shaped stand-in with random
weights if it is not there, said in the report) compiled by ``edgeds.compile`` for the x86-cpu
profile at FP32 and INT8 (ONNX Runtime), it measures:

* the bare engine floor (ONNX Runtime + IOBinding, batch 1..8, no batcher) for each instance layout of
  the same threads (one session with all of them, and one single-thread session per thread running
  at once), before and after the server runs; the best layout and batch is the denominator, and the
  batcher and the server run with that layout (Triton's instance_group count);
* the in-process batcher at concurrency 8 (``Engine.submit``; completion callbacks submit the next
  request, and for comparison the same from 8 blocking client threads);
* ``edgeds serve`` (a separate process) at concurrency 8 over binary OIP, and over OIP JSON;
* peers, each in its own virtual environment created here (``bench/peers/.venv-*``, git-ignored),
  same ONNX file, same intra-op threads, same load generator, loopback, concurrency 8:
  BentoML (adaptive batching, its JSON API), Seldon MLServer (OIP JSON, adaptive batching),
  plain FastAPI + ONNX Runtime (binary OIP payload, no batching);
* memory: the server's RSS growth over 20,000 requests after warm-up, and a tracemalloc check
  of the engine path (in-process);
* an unbatched transport ceiling, in the paired windows: ``bench/peers/bare_socket.py``, the
  thinnest Python server of the same binary requests, one single-thread session per thread. It is
  a reference, not a peer: where the floor's best layout is that one (INT8 here), its share of the
  floor is what loopback TCP and the load generator leave of these cores, and ``serve / bare
  socket`` tells how much of the rest edgeds itself costs;
* with ``--reference TREE`` (another checkout of edgeds, e.g. a ``git worktree`` of an older
  commit), a reference build in the same paired windows: ``edgeds serve`` of the same bundle from
  TREE's package, with the same options and CPU placement under the same load generator, and for
  both servers samples/s, serve / floor and server CPU per request (CPU-seconds of the server
  process / requests, in µs), with the ratio of this tree's to the reference's.

The load generator shares the 2 cores with the server under test, so every CPU microsecond it spends
per request is taken from the server. By default it is ``bench/loadgen/closed_loop.c`` (built here
with the system's C compiler on first use; what perf_analyzer or wrk are to their servers): one
thread driving 8 keep-alive connections with epoll, each sending its next request when its response
is in. ``--loadgen python`` uses edgeds' own (``edgeds.bench.http_closed_loop``: the same closed
loop, one Python thread and a selector, ~1.5x the CPU per request); either drives edgeds and every
peer alike, and the report says which ran. With the native one, the paired windows also measure
``serve`` with the Python one, for comparison with earlier reports.

On a machine with cores to spare, ``--server-cpus 0,1 --loadgen-cpus 2`` keeps them apart: the floor,
the in-process batcher and every server (edgeds, the reference, each peer) run on the server CPUs,
and only the HTTP load generator runs on its own. The report says which placement was used.

This script holds the command line and the measurements. What it is built from is in
:mod:`edgeds.bench`: the CPU placement (``placement``), the load generators (``loadgen``,
``native_loadgen``), the servers under test (``servers``), the layout and batcher sizing rules
(``sizing``) and the verdicts and Markdown report (``runtime_report``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
PEER_PACKAGES = {
    "fastapi": ["fastapi", "uvicorn", "onnxruntime", "numpy"],
    "bentoml": ["bentoml", "onnxruntime", "numpy"],
    "mlserver": ["mlserver", "onnxruntime", "numpy"],
}
if str(ROOT) not in sys.path:  # this checkout's edgeds, run without installing it
    sys.path.insert(0, str(ROOT))

from edgeds import bench as lib  # noqa: E402
from edgeds.bench.energy import energy_entry, power_fields  # noqa: E402
from edgeds.bench.loadgen import LoadGenerator, LoadgenUnavailable  # noqa: E402
from edgeds.bench.placement import Placement, parse_cpus  # noqa: E402
from edgeds.bench.reference import Reference  # noqa: E402
from edgeds.bench.runtime_report import interval, markdown, reference_summary, verdicts  # noqa: E402
from edgeds.bench.servers import (  # noqa: E402
    free_port,
    imported_edgeds,
    start_bare_socket,
    start_serve,
    stop,
    wait_http,
)
from edgeds.bench.sizing import (  # noqa: E402
    BUCKETS,
    batch_candidates,
    best_layout,
    choose_batch,
    full_batches,
    layouts,
)
from edgeds.config import Batching  # noqa: E402
from edgeds.errors import BenchError, EdgedsError  # noqa: E402
from edgeds.power import EnergyWindow, PowerSource, open_source  # noqa: E402
from edgeds.runtime import Engine  # noqa: E402
from edgeds.runtime.oip_requests import oip_binary_body, oip_json_body  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


CONCURRENCY = 8  # clients of every closed loop: in-process, and the HTTP load generator's connections
PLACEMENT = Placement()  # main() sets it from the command line
PYTHON_LOADGEN = LoadGenerator("python", CONCURRENCY)
LOADGEN = PYTHON_LOADGEN  # main() sets it from the command line (native by default)
# this machine's power source (main() opens it); every measured run is an energy window of it
POWER: tuple[PowerSource | None, str] = (None, "no power source: not opened")


def rss_tree(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


# ---------------------------------------------------------------------- model + bundles


def prepare_model(work: Path) -> tuple[Path, bool]:
    """The shipped model, or a MobileNet-shaped stand-in with the tiny model's card."""
    shipped = ROOT / "models" / "surface-defect" / "model.onnx"
    if shipped.exists():
        return shipped, True
    from edgeds.compile.tiny import write_tiny_model
    from edgeds.runtime.testing import mobilenet_like

    model = write_tiny_model(work / "standin")
    mobilenet_like(model)
    return model, False


def compile_bundle(model: Path, precision: str, out: Path) -> Path:
    from edgeds.compile.pipeline import compile_model

    result = compile_model(model, "x86-cpu", precision=precision, out=out)
    if result.backend != "onnxruntime":
        raise BenchError(f"the x86-cpu chain picked {result.backend}, not onnxruntime")
    return result.bundle


# ---------------------------------------------------------------------- measurements


def size_batcher(
    artifact: Path,
    threads: int,
    instances: int,
    candidates: list[int],
    sample: np.ndarray,
    max_queue_size: int,
    rounds: int = 3,
    window_s: float = 1.5,
) -> dict[str, Any]:
    """Measure the in-process batcher (c=8) at each candidate size, in interleaved windows, and pick one
    with :func:`choose_batch` (what Triton's model analyzer does with perf_analyzer sweeps; the engine
    floor alone cannot tell, since it has no per-batch hand-off and a scan is too noisy here).

    The choice reads samples per CPU-second of this process, not samples per second: the candidates
    keep every instance busy (at most half the clients per instance), so what sets them apart is the
    CPU each sample costs, and on a shared host the wall-clock rate moves with the other tenants (one
    slow window of three made batch 1 look 9 % faster than batch 2, which costs ~8-13 % more CPU per
    sample there, and failed the run). The CPU includes each window's 0.2 s warm-up, the same share
    for every candidate.
    """
    engines: dict[int, Engine] = {}
    try:
        for b in candidates:
            batching = full_batches(b, instances, max_queue_size)
            options = {"intra_op_num_threads": threads}
            engines[b] = Engine("onnxruntime", artifact, options=options, batching=batching).start()
        windows: dict[int, list[float]] = {b: [] for b in candidates}
        per_cpu: dict[int, list[float]] = {b: [] for b in candidates}
        for turn in range(rounds):
            shift = turn % len(candidates)  # each candidate goes first in turn
            for b in candidates[shift:] + candidates[:shift]:
                cpu = time.process_time()
                run = lib.summarize(
                    lib.engine_closed_loop(engines[b], {"input": sample}, CONCURRENCY, window_s, warmup_s=0.2)
                )
                cpu = time.process_time() - cpu
                windows[b].append(run["samples_per_s"])
                per_cpu[b].append(round(run["ok"] / max(1e-9, cpu), 2))
    finally:
        for engine in engines.values():
            engine.close()
    medians = {b: round(float(np.median(v)), 2) for b, v in windows.items()}
    efficiency = {b: round(float(np.median(v)), 2) for b, v in per_cpu.items()}
    return {
        "candidates": candidates,
        "samples_per_s": medians,
        "samples_per_cpu_s": efficiency,
        "windows": windows,
        "windows_per_cpu_s": per_cpu,
        "chosen": choose_batch(efficiency),
    }


def open_instances(artifact: Path, threads: int, instances: int, buckets: list[int]) -> list[Any]:
    """``instances`` bare ONNX Runtime sessions sharing ``threads`` the way the engine splits them."""
    from edgeds.backends.base import Backend
    from edgeds.backends.onnxruntime import OnnxRuntimeBackend
    from edgeds.runtime.engine import instance_options

    template: Backend = OnnxRuntimeBackend({"intra_op_num_threads": threads})
    opened: list[Any] = []
    try:
        for options in instance_options(template, instances):
            opened.append(type(template)(options))
            opened[-1].open(artifact, buckets)
    except BaseException:
        for backend in opened:
            backend.close()
        raise
    return opened


def staged_feed(backend: Any, n: int, sample: np.ndarray) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = backend.staging_inputs(n)
    arrays["input"][...] = sample
    return arrays


def floor(artifact: Path, threads: int, duration: float, sample: np.ndarray, instances: int = 1) -> dict[str, Any]:
    opened = open_instances(artifact, threads, instances, list(range(1, 9)))
    try:
        return lib.engine_floor(
            opened, lambda b, n: staged_feed(b, n, sample), list(range(1, 9)), duration_s=duration / 4
        )
    finally:
        for backend in opened:
            backend.close()


def in_process(artifact: Path, threads: int, batching: Batching, duration: float, sample: np.ndarray) -> dict[str, Any]:
    engine = Engine("onnxruntime", artifact, options={"intra_op_num_threads": threads}, batching=batching).start()
    try:
        before = engine.stats()
        with EnergyWindow(*POWER) as window:
            samples = lib.engine_closed_loop(engine, {"input": sample}, CONCURRENCY, duration, warmup_s=1.0)
        after = engine.stats()
        result = lib.summarize(samples)
        result.update(lib.batch_stats_delta(before, after))
        result["energy"] = energy_entry(window.result, after.inference_count - before.inference_count)
        # the same load from 8 client threads that block on their requests (thread wake-ups included)
        client = lib.EngineClient(engine, {"input": sample})
        result["client_threads"] = lib.summarize(lib.closed_loop(client, CONCURRENCY, duration, warmup_s=1.0))
        result["first_inference_s"] = round(engine.first_inference_s or 0.0, 4)  # open + warm every bucket
        result["tracemalloc"] = tracemalloc_check(engine, sample)
        return result
    finally:
        engine.close()


def tracemalloc_check(engine: Engine, sample: np.ndarray, requests: int = 2000) -> dict[str, Any]:
    """Python-heap allocations on the engine path (submit -> batch -> views -> release)."""

    def grown() -> int:
        return sum(pool.slots_allocated for pool in engine.pools)

    for _ in range(200):
        r = engine.submit({"input": sample})
        r.wait()
        r.release()
    slots = grown()
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    for _ in range(requests):
        r = engine.submit({"input": sample})
        r.wait()
        r.release()
    current, peak = tracemalloc.get_traced_memory()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    big = [s for s in snapshot.statistics("lineno") if s.size >= sample.nbytes]
    return {
        "requests": requests,
        "sample_bytes": int(sample.nbytes),
        "peak_over_base_bytes": int(peak - base),
        "retained_bytes": int(current - base),
        "allocations_of_a_sample_or_more": [str(s) for s in big[:5]],
        "pool_slots_grown": grown() - slots,
        "no_per_request_tensor": bool(peak - base < sample.nbytes and grown() == slots),
    }


def measure_http(
    client: lib.HttpClient, duration: float, pid: int, url: str | None = None, model: str | None = None
) -> dict[str, Any]:
    before = lib.stats_snapshot(url, model) if url and model else None
    with lib.ResourceMonitor(pid) as monitor, EnergyWindow(*POWER) as window:
        result = lib.summarize(PLACEMENT.drive(client, duration, LOADGEN, warmup_s=1.0))
    result["resources"] = monitor.report()
    inferences = int(result.get("ok", 0))  # a peer has no stats: its answered requests, one sample each
    if before is not None and url and model:
        after = lib.stats_snapshot(url, model)
        result.update(lib.batch_stats_delta(before, after))
        inferences = after.inference_count - before.inference_count
    result["energy"] = energy_entry(window.result, inferences)
    client.close()
    return result


def serve_edgeds(
    bundle: Path,
    threads: int,
    duration: float,
    sample: np.ndarray,
    batching: Batching | None = None,
    full: bool = True,
) -> dict[str, Any]:
    """``edgeds serve`` in its own process; binary OIP at c=8 (+ JSON and a bad request if ``full``)."""
    proc, port, model = start_serve(bundle, threads, batching)
    url = f"http://127.0.0.1:{port}"
    try:
        path = f"/v2/models/{model}/infer"
        body, headers = oip_binary_body("input", sample)
        out: dict[str, Any] = {
            "binary": measure_http(
                lib.HttpClient("127.0.0.1", port, path, body, headers), duration, proc.pid, url, model
            )
        }
        if not full:
            return out
        body, headers = oip_json_body("input", sample)
        out["json"] = measure_http(
            lib.HttpClient("127.0.0.1", port, path, body, headers), duration, proc.pid, url, model
        )
        bad = lib.HttpClient(
            "127.0.0.1", port, path, b'{"inputs": [{"name": "nope", "shape": [1], "datatype": "FP32", "data": [1]}]}'
        )
        out["bad_request_status"] = bad()
        out["still_serving_status"] = lib.HttpClient("127.0.0.1", port, path, body, headers)()
        return out
    finally:
        stop(proc)


def rss_fresh(bundle: Path, threads: int, batching: Batching, sample: np.ndarray, requests: int) -> dict[str, Any]:
    """RSS growth of a server that only ever sees binary requests (nothing else inflates its heap)."""
    proc, port, model = start_serve(bundle, threads, batching)
    try:
        body, headers = oip_binary_body("input", sample)
        client = lib.HttpClient("127.0.0.1", port, f"/v2/models/{model}/infer", body, headers)
        return rss_growth(client, proc.pid, requests)
    finally:
        stop(proc)


def rss_growth(client: lib.HttpClient, pid: int, requests: int, warmup: int = 5000) -> dict[str, Any]:
    """RSS of the server after ``warmup`` requests, then after each tenth of ``requests`` more (c=8)."""
    PLACEMENT.drive(client, 1e9, LOADGEN, warmup_s=0.0, max_queries=warmup)
    time.sleep(0.5)
    before = rss_tree(pid)
    series = []
    ok = 0
    step = max(1, requests // 10)
    done = 0
    while done < requests:
        chunk = min(step, requests - done)
        samples = PLACEMENT.drive(client, 1e9, LOADGEN, warmup_s=0.0, max_queries=chunk)
        ok += sum(1 for st in samples.status if st == 200)
        done += chunk
        series.append(round(rss_tree(pid) / 2**20, 2))
    time.sleep(0.5)
    after = rss_tree(pid)
    client.close()
    return {
        "warmup_requests": warmup,
        "requests": requests,
        "ok": ok,
        "rss_before_mb": round(before / 2**20, 2),
        "rss_after_mb": round(after / 2**20, 2),
        "rss_series_mb": series,
        "rss_growth_mib": round((after - before) / 2**20, 3),
        "rss_max_over_before_mib": round(max(series) - before / 2**20, 3),
    }


def bare_window(client: lib.HttpClient, window_s: float) -> float:
    """One window of the bare-socket reference; samples/s. A failing reference would flatter every
    ratio to it, so any error fails the run."""
    result = lib.summarize(PLACEMENT.drive(client, window_s, LOADGEN, warmup_s=0.0))
    if result["errors"] or not result["ok"]:
        raise BenchError(f"the bare-socket reference failed: {result['errors']} errors, {result['ok']} answers")
    return float(result["samples_per_s"])


def paired(
    artifact: Path,
    bundle: Path,
    threads: int,
    tuned: Batching,
    sample: np.ndarray,
    windows: int,
    window_s: float,
    floor_batch: int,
    reference: Reference | None = None,
    work: Path | None = None,
) -> dict[str, Any]:
    """Interleaved windows of bare floor (at ``floor_batch``, the best bucket, with the ``tuned``
    instance layout), in-process batcher (c=8, completion callbacks submit the next request), serve
    (c=8, binary OIP, :data:`LOADGEN`), both with the ``tuned`` batching, and the
    unbatched transport ceiling (``bench/peers/bare_socket.py``: the thinnest Python server of the
    same requests, one single-thread session per thread; what any server that does not batch can
    reach once the bytes cross loopback).

    On a shared machine the load from other processes drifts by 2x within minutes; comparing each
    window with the floor measured right before it cancels most of that drift. Ratios are the
    medians of the per-window ratios. When :data:`LOADGEN` is the native one, each window also
    drives serve with the Python load generator (``serve_python_loadgen``).

    With a ``reference`` build, each window also drives its ``edgeds serve`` of the same bundle with
    the same options (started the same way, its output in ``work``/reference-serve-BUNDLE.log), and the
    rows and the result's ``reference`` summary hold both servers' samples/s and CPU per request
    (CPU-seconds of the server process over the window, per request answered). A reference that
    fails a request fails the run: its figures would flatter it.
    """
    compare_python = LOADGEN.kind != "python"
    best = floor_batch
    body, headers = oip_binary_body("input", sample)
    with contextlib.ExitStack() as stack:  # closes and stops everything below, last started first
        bare = open_instances(artifact, threads, tuned.instances, [best])
        for backend in bare:
            stack.callback(backend.close)
        feeds = [staged_feed(b, best, sample) for b in bare]
        engine = Engine("onnxruntime", artifact, options={"intra_op_num_threads": threads}, batching=tuned).start()
        stack.callback(engine.close)
        proc, port, model = start_serve(bundle, threads, tuned)
        stack.callback(stop, proc)
        http = lib.HttpClient("127.0.0.1", port, f"/v2/models/{model}/infer", body, headers)
        stack.callback(http.close)
        bare_proc, bare_port = start_bare_socket(artifact, threads)
        stack.callback(stop, bare_proc)
        bare_http = lib.HttpClient("127.0.0.1", bare_port, "/v2/models/bare/infer", body, headers)
        stack.callback(bare_http.close)
        import psutil

        me = psutil.Process()
        servers = {"serve": (http, psutil.Process(proc.pid)), "serve_python": (http, psutil.Process(proc.pid))}
        log_file = (work or Path(tempfile.gettempdir())) / f"reference-serve-{bundle.name}.log"
        if reference is not None:
            ref_proc, ref_port, ref_model = start_serve(bundle, threads, tuned, tree=reference.tree, log=log_file)
            stack.callback(stop, ref_proc)
            ref_http = lib.HttpClient("127.0.0.1", ref_port, f"/v2/models/{ref_model}/infer", body, headers)
            stack.callback(ref_http.close)
            if (status := ref_http()) != 200:
                raise BenchError(f"the reference build answered a valid request with {status}; see {log_file}")
            servers["reference"] = (ref_http, psutil.Process(ref_proc.pid))

        def cpu(p: Any) -> float:
            t = p.cpu_times()
            return float(t.user + t.system)

        rows: list[dict[str, float]] = []
        for window in range(windows):
            c0 = cpu(me)
            floor_sps, lat = lib.floor_window(bare, feeds, best, window_s)
            n = len(lat)
            floor_eff = n * best / max(1e-9, cpu(me) - c0)
            c0 = cpu(me)
            e = lib.summarize(lib.engine_closed_loop(engine, {"input": sample}, CONCURRENCY, window_s, warmup_s=0.0))
            inproc_eff = e["ok"] / max(1e-9, cpu(me) - c0)
            # serve, the bare socket (and the reference build, and serve under the Python load
            # generator) take turns going first, so none is always further from its floor than the others
            turns = ["serve", "bare"] + (["reference"] if reference is not None else [])
            turns += ["serve_python"] if compare_python else []
            shift = window % len(turns)
            measured: dict[str, Any] = {}
            for turn in turns[shift:] + turns[:shift]:
                if turn == "bare":
                    measured[turn] = bare_window(bare_http, window_s)
                    continue
                client, server = servers[turn]
                c0 = cpu(server)
                generator = PYTHON_LOADGEN if turn == "serve_python" else LOADGEN
                measured[turn] = lib.summarize(PLACEMENT.drive(client, window_s, generator, warmup_s=0.0))
                spent = cpu(server) - c0
                measured[turn]["per_cpu_s"] = measured[turn]["ok"] / max(1e-9, spent)
                measured[turn]["cpu_us_per_request"] = 1e6 * spent / max(1, measured[turn]["ok"])
                if turn == "reference" and (measured[turn]["errors"] or not measured[turn]["ok"]):
                    raise BenchError(
                        f"the reference build failed: {measured[turn]['errors']} errors, "
                        f"{measured[turn]['ok']} answers; see {log_file}"
                    )
            h, bare_sps = measured["serve"], measured["bare"]
            serve_eff = h["per_cpu_s"]
            rows.append(
                {
                    "floor": round(floor_sps, 2),
                    "in_process": e["samples_per_s"],
                    "serve": h["samples_per_s"],
                    "bare_socket": bare_sps,
                    "in_process_ratio": round(e["samples_per_s"] / floor_sps, 3),
                    "serve_ratio": round(h["samples_per_s"] / floor_sps, 3),
                    "bare_socket_ratio": round(bare_sps / floor_sps, 3),
                    "serve_over_bare_socket": round(h["samples_per_s"] / bare_sps, 3),  # > 0: bare_window checked
                    # samples per CPU-second: robust to other processes taking the cores
                    "floor_per_cpu_s": round(floor_eff, 2),
                    "in_process_per_cpu_s": round(inproc_eff, 2),
                    "serve_per_cpu_s": round(serve_eff, 2),
                    "in_process_cpu_ratio": round(inproc_eff / floor_eff, 3),
                    "serve_cpu_ratio": round(serve_eff / floor_eff, 3),
                }
            )
            if compare_python:
                rows[-1]["serve_python_loadgen"] = measured["serve_python"]["samples_per_s"]
                rows[-1]["serve_python_loadgen_ratio"] = round(measured["serve_python"]["samples_per_s"] / floor_sps, 3)
                rows[-1]["serve_python_loadgen_per_cpu_s"] = round(measured["serve_python"]["per_cpu_s"], 2)
            if reference is not None:
                ref = measured["reference"]
                rows[-1].update(
                    {
                        "reference": ref["samples_per_s"],
                        "reference_ratio": round(ref["samples_per_s"] / floor_sps, 3),
                        "serve_over_reference": round(h["samples_per_s"] / ref["samples_per_s"], 3),
                        "serve_cpu_us_per_request": round(h["cpu_us_per_request"], 1),
                        "reference_cpu_us_per_request": round(ref["cpu_us_per_request"], 1),
                        "cpu_per_request_over_reference": round(
                            h["cpu_us_per_request"] / max(1e-9, ref["cpu_us_per_request"]), 3
                        ),
                    }
                )
            log(f"  window: {rows[-1]}")
    out: dict[str, Any] = {
        "windows": rows,
        "window_s": window_s,
        "batch": best,
        "instances": tuned.instances,
        "serve_ratio_median": round(float(np.median([r["serve_ratio"] for r in rows])), 3),
        "serve_python_loadgen_ratio_median": (
            round(float(np.median([r["serve_python_loadgen_ratio"] for r in rows])), 3) if compare_python else None
        ),
        "serve_ratio_interval": interval([r["serve_ratio"] for r in rows]),
        "in_process_ratio_interval": interval([r["in_process_ratio"] for r in rows]),
        "bare_socket_ratio_median": round(float(np.median([r["bare_socket_ratio"] for r in rows])), 3),
        "serve_over_bare_socket_median": round(float(np.median([r["serve_over_bare_socket"] for r in rows])), 3),
        "serve_cpu_ratio_median": round(float(np.median([r["serve_cpu_ratio"] for r in rows])), 3),
        "in_process_cpu_ratio_median": round(float(np.median([r["in_process_cpu_ratio"] for r in rows])), 3),
        "in_process_ratio_median": round(float(np.median([r["in_process_ratio"] for r in rows])), 3),
        "serve_ratio_of_means": round(
            float(np.mean([r["serve"] for r in rows]) / np.mean([r["floor"] for r in rows])), 3
        ),
        "in_process_ratio_of_means": round(
            float(np.mean([r["in_process"] for r in rows]) / np.mean([r["floor"] for r in rows])), 3
        ),
    }
    if reference is not None:
        out["reference"] = reference_summary(rows)
    return out


# ---------------------------------------------------------------------- peers


def ensure_venv(name: str) -> Path | str:
    """The peer's venv (created and installed on first use); a string says why it is unavailable."""
    venv = PEERS / f".venv-{name}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.exists():
        return python
    log(f"creating {venv} ({', '.join(PEER_PACKAGES[name])})")
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *PEER_PACKAGES[name]],
            check=True,
            capture_output=True,
            timeout=900,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        return f"pip install failed: {' | '.join(tail)}"
    except subprocess.TimeoutExpired:
        return "pip install timed out"
    stamp.write_text("ok\n")
    return python


def peer_version(python: Path, package: str) -> str:
    code = f"from importlib.metadata import version; print(version({package!r}))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False).stdout.strip()


def run_peer(
    name: str, artifact: Path, threads: int, duration: float, sample: np.ndarray, work: Path
) -> dict[str, Any]:
    python = ensure_venv(name)
    if isinstance(python, str):
        return {"error": python}
    bin_dir = python.parent
    port = free_port()
    env = {
        **os.environ,
        "EDGEDS_PEER_MODEL": str(artifact),
        "EDGEDS_PEER_THREADS": str(threads),
        "EDGEDS_PEER_MAX_BATCH": "8",
        "EDGEDS_PEER_MAX_LATENCY_MS": "1000",
        "PYTHONPATH": str(PEERS),
        "OMP_NUM_THREADS": str(threads),
    }
    if name == "fastapi":
        cmd = [
            str(bin_dir / "uvicorn"),
            "fastapi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        ready, path = "/v2/health/ready", "/v2/models/peer/infer"
        body, headers = oip_binary_body("input", sample)
        protocol = "binary OIP payload (same bytes as edgeds), JSON response, no batching"
    elif name == "bentoml":
        cmd = [
            str(bin_dir / "bentoml"),
            "serve",
            "bentoml_service:Classifier",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        ready, path = "/readyz", "/predict"
        body, headers = json.dumps({"x": sample.tolist()}).encode(), {"Content-Type": "application/json"}
        protocol = "BentoML JSON API, adaptive batching (max_batch_size 8, max_latency_ms 1000)"
    else:
        model_dir = work / "mlserver" / "peer"
        model_dir.mkdir(parents=True, exist_ok=True)
        (work / "mlserver" / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": port,
                    "grpc_port": free_port(),
                    "metrics_port": free_port(),
                    "parallel_workers": 0,
                    "host": "127.0.0.1",
                }
            )
        )
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": "peer",
                    "implementation": "mlserver_runtime.OnnxModel",
                    "max_batch_size": 8,
                    "max_batch_time": 0.001,
                }
            )
        )
        cmd = [str(bin_dir / "mlserver"), "start", str(work / "mlserver")]
        ready, path = "/v2/models/peer/ready", "/v2/models/peer/infer"
        body, headers = oip_json_body("input", sample)
        protocol = (
            "OIP JSON (MLServer has no binary extension over REST), adaptive batching (8, 1 ms), parallel_workers 0"
        )
    log_file = work / f"{name}.log"
    with open(log_file, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=PEERS, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready}", 120, proc)
        client = lib.HttpClient("127.0.0.1", port, path, body, headers)
        if client() != 200:
            return {"error": f"a valid request failed; see {log_file}"}
        result = measure_http(client, duration, proc.pid)
        result["protocol"] = protocol
        result["version"] = peer_version(
            python, {"fastapi": "fastapi", "bentoml": "bentoml", "mlserver": "mlserver"}[name]
        )
        return result
    except BenchError as exc:  # a peer that does not start or fails under load
        tail = log_file.read_text(errors="replace").strip().splitlines()[-5:]
        return {"error": f"{exc}: {' | '.join(tail)}"}
    finally:
        stop(proc)


def exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a CI timeout, ``kill``) unwinds like Ctrl-C: the ``finally`` blocks stop every server started."""
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured run")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for every system")
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--peers", default="bentoml,mlserver,fastapi", help="comma list; empty for none")
    ap.add_argument("--rss-requests", type=int, default=20000)
    ap.add_argument("--windows", type=int, default=12, help="paired floor / in-process / serve windows")
    ap.add_argument("--window", type=float, default=2.0, help="seconds per paired window")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--server-cpus", help="pin the floor, the batcher and every server to these CPUs (e.g. 0,1)")
    ap.add_argument("--loadgen-cpus", help="run the HTTP load generator on these CPUs, apart from --server-cpus")
    ap.add_argument(
        "--reference",
        type=Path,
        metavar="TREE",
        help="another checkout of edgeds: its edgeds serve runs beside this one's in the paired windows",
    )
    ap.add_argument(
        "--loadgen",
        choices=("native", "python"),
        default="native",
        help="the HTTP load generator: bench/loadgen/closed_loop.c (built with cc) or edgeds' Python one",
    )
    args = ap.parse_args()
    global PLACEMENT, LOADGEN, POWER
    try:
        LOADGEN = LoadGenerator(args.loadgen, CONCURRENCY)
    except LoadgenUnavailable as exc:
        ap.error(str(exc))
    try:
        PLACEMENT = Placement(
            parse_cpus(args.server_cpus) if args.server_cpus else None,
            parse_cpus(args.loadgen_cpus) if args.loadgen_cpus else None,
        )
    except BenchError as exc:
        ap.error(str(exc))
    reference = None
    if args.reference is not None:
        try:
            reference = Reference.check(args.reference)
        except BenchError as exc:
            ap.error(str(exc))
        log(f"this tree's edgeds serve imports {imported_edgeds(ROOT)}")
        log(
            f"reference build {reference.tree} at {reference.commit or '(not a git checkout)'}: "
            f"its edgeds serve imports {reference.edgeds_file}"
        )
    PLACEMENT.pin_server_side()
    args.out.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    source, reason = open_source()
    POWER = (source, reason or "")
    log(f"energy: {source.name if source is not None else reason}")
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory(prefix="edgeds-rtbench-") as tmp:
        if source is not None:
            stack.callback(source.close)
        work = Path(tmp)
        model, shipped = prepare_model(work)
        log(f"model {model} ({'shipped' if shipped else 'stand-in'})")
        report: dict[str, Any] = {
            "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else model.name,
            "shipped_model": shipped,
            "threads": args.threads,
            "duration_s": args.duration,
            "environment": lib.environment(model, {"intra_op_num_threads": args.threads}),
            "placement": PLACEMENT.describe(),
            "load_generator": LOADGEN.describe(),
            **power_fields(source, reason),
            "results": {},
        }
        if reference is not None:
            report["reference"] = reference.describe()
        for precision in args.precisions.split(","):
            log(f"compiling {precision}")
            try:
                bundle = compile_bundle(model, precision, work / f"bundle-{precision}")
            except EdgedsError as exc:  # this precision cannot be built here: say why, run the others
                report["results"][precision] = {"error": f"compile failed: {type(exc).__name__}: {exc}"}
                continue
            from edgeds.bundle import load_bundle

            with load_bundle(bundle, verify=False) as b:
                artifact = b.artifact_path
                batching = Batching.from_manifest(b.manifest.batching)
                golden, _ = b.golden()
            sample = np.ascontiguousarray(golden[:1].astype(np.float32))
            entry: dict[str, Any] = {
                "artifact_sha256": lib.environment(artifact)["model_sha256"],
                "batching": batching.model_dump(mode="json"),
            }
            entry["floor"] = []
            for instances in layouts(args.threads):
                log(f"{precision}: engine floor, {instances} instance(s) sharing {args.threads} threads")
                entry["floor"].append(floor(artifact, args.threads, args.duration, sample, instances))
            # the engine runs bucket sizes (powers of two; odd batches are padded up), so the batcher is
            # tuned to the best bucket of the best layout; the strict best over every batch size stays
            # in the table
            layout = best_layout(entry["floor"])
            per_batch = {r["batch"]: r["samples_per_s"] for r in layout["per_batch"]}
            best = max((b for b in BUCKETS if b in per_batch), key=lambda b: per_batch[b])
            # the batcher's size is measured, not read off the floor: full batches of `batch` form at
            # concurrency 8, and with batch <= half the clients per instance the next batch gathers
            # while the current one runs. The floor in every ratio stays the best bucket's.
            candidates = batch_candidates(CONCURRENCY // layout["instances"])
            if len(candidates) > 1:
                log(
                    f"{precision}: sizing the batcher in-process "
                    f"({layout['instances']} instance(s), sizes {candidates})"
                )
                entry["batcher_sizing"] = size_batcher(
                    artifact, args.threads, layout["instances"], candidates, sample, batching.max_queue_size
                )
                batch = entry["batcher_sizing"]["chosen"]
            else:
                batch = candidates[0]
            tuned = full_batches(batch, layout["instances"], batching.max_queue_size)
            entry["tuned_batching"] = tuned.model_dump(mode="json")
            entry["floor_best_batch"] = best
            entry["floor_best_instances"] = layout["instances"]
            log(
                f"{precision}: in-process batcher ({tuned.instances} instance(s), max_batch_size {batch}; "
                f"the floor's best bucket is {best})"
            )
            entry["in_process"] = in_process(artifact, args.threads, tuned, args.duration, sample)
            log(f"{precision}: edgeds serve (binary, JSON, a bad request)")
            entry["serve"] = serve_edgeds(bundle, args.threads, args.duration, sample, tuned)
            log(f"{precision}: RSS of a fresh edgeds serve over {args.rss_requests} binary requests after warm-up")
            entry["serve"]["memory"] = rss_fresh(bundle, args.threads, tuned, sample, args.rss_requests)
            log(f"{precision}: edgeds serve with the bundle's own batching")
            entry["serve_bundle_batching"] = serve_edgeds(bundle, args.threads, args.duration, sample, None, full=False)
            entry["peers"] = {}
            for peer in peers:
                log(f"{precision}: peer {peer}")
                entry["peers"][peer] = run_peer(peer, artifact, args.threads, args.duration, sample, work)
            log(f"{precision}: paired windows (floor / in-process / serve{' / reference' if reference else ''})")
            entry["paired"] = paired(
                artifact,
                bundle,
                args.threads,
                tuned,
                sample,
                args.windows,
                args.window,
                floor_batch=best,
                reference=reference,
                work=work,
            )
            for instances in layouts(args.threads):
                log(f"{precision}: engine floor again, {instances} instance(s)")
                entry["floor"].append(floor(artifact, args.threads, args.duration, sample, instances))
            entry["verdicts"] = verdicts(entry)
            report["results"][precision] = entry
            log(f"{precision}: {json.dumps(entry['verdicts'])}")
        (args.out / "runtime_bench.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "runtime_bench.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
