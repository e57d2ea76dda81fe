"""LoadGen-style benchmarks of an engine in-process or a server over HTTP.

The package re-exports what the ``edgeds bench`` command, the HIL runner and the benchmark scripts
use; each submodule holds one job:

- :mod:`.clients`: the clients that send queries (in-process, raw HTTP) and HTTP reads of a server
- :mod:`.environment`: the machine, versions and model a report was measured with
- :mod:`.monitor`: CPU% and RSS of the measured process during a run
- :mod:`.stats`: raw per-request records, percentiles, the median's interval, batch-size deltas
- :mod:`.loops`: load patterns (closed loops, a Poisson open loop)
"""

from __future__ import annotations

from .clients import EngineClient, HttpClient, http_json, stats_snapshot
from .environment import environment
from .loops import *  # noqa: F403
from .loops import __all__ as _loops_all
from .monitor import ResourceMonitor
from .stats import Samples, batch_stats_delta, median_interval, summarize

__all__ = [
    *_loops_all,
    "EngineClient",
    "environment",
    "ResourceMonitor",
    "HttpClient",
    "http_json",
    "stats_snapshot",
    "Samples",
    "batch_stats_delta",
    "median_interval",
    "summarize",
]
