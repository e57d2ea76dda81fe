"""LoadGen-style benchmarks of an engine in-process or a server over HTTP.

The package re-exports what the ``edgeds bench`` command, the HIL runner and the benchmark scripts
use; each submodule holds one job:

- :mod:`.stats`: raw per-request records, percentiles, the median's interval, batch-size deltas
- :mod:`.loops`: load patterns (closed loops, a Poisson open loop)
"""

from __future__ import annotations

from .loops import *  # noqa: F403
from .loops import __all__ as _loops_all
from .stats import Samples, batch_stats_delta, median_interval, summarize

__all__ = [*_loops_all, "Samples", "batch_stats_delta", "median_interval", "summarize"]
