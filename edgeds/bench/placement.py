"""Where a benchmark's servers and its HTTP load generator run: on every CPU, or on CPU sets apart.

CPU sets are written in ``taskset``'s list syntax (:func:`parse_cpus`); :class:`Placement` pins the
server side once and moves the load generator's thread to its own CPUs only while it drives load.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import BenchError
from .clients import HttpClient
from .loadgen import LoadGenerator
from .stats import Samples


def parse_cpus(text: str) -> frozenset[int]:
    """CPU numbers in ``taskset``'s list syntax (``0,1`` or ``0-3,6``); BenchError names a bad part."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()) or (dash and int(last) < int(first)):
            raise BenchError(f"not a CPU number or range: {part!r} (in {text!r})")
        cpus.update(range(int(first), int(last if dash else first) + 1))
    return frozenset(cpus)


class Placement:
    """Where the servers and the load generator run: all on every CPU (the default), or apart.

    Affinity is per thread, and threads and processes inherit their starter's. So the main thread is
    pinned to the server CPUs once (the floor's and the batcher's engine threads, and every server
    process started later, inherit them), and :meth:`drive` moves it to the load generator's CPUs
    only while it drives HTTP load.

    ``server`` and ``loadgen`` are CPU sets (None: every CPU this process may use); BenchError if
    they overlap, name CPUs this process may not use, or only the load generator has its own.
    """

    def __init__(self, server: frozenset[int] | None = None, loadgen: frozenset[int] | None = None) -> None:
        allowed = os.sched_getaffinity(0)
        if loadgen is not None and server is None:
            raise BenchError("--loadgen-cpus needs --server-cpus: the two sets must be apart")
        for flag, cpus in (("--server-cpus", server), ("--loadgen-cpus", loadgen)):
            if cpus is not None and not cpus <= allowed:
                raise BenchError(f"{flag}: CPUs {sorted(cpus - allowed)} are not available (have {sorted(allowed)})")
        if server is not None and loadgen is not None and server & loadgen:
            raise BenchError(f"--server-cpus and --loadgen-cpus share CPUs {sorted(server & loadgen)}")
        self.server, self.loadgen = server, loadgen

    def pin_server_side(self) -> None:
        """Pin the calling thread to the server CPUs (when they are set); what it starts inherits them."""
        if self.server is not None:
            os.sched_setaffinity(0, self.server)

    def drive(
        self,
        client: HttpClient,
        duration_s: float,
        generator: LoadGenerator,
        *,
        warmup_s: float = 0.5,
        max_queries: int | None = None,
    ) -> Samples:
        """``generator``'s closed loop over ``client``, on the load generator's CPUs when it has its
        own (a native load generator inherits them); the thread is back on the server side after."""
        if self.loadgen is not None:
            os.sched_setaffinity(0, self.loadgen)
        try:
            return generator.run(client, duration_s, warmup_s=warmup_s, max_queries=max_queries)
        finally:
            self.pin_server_side()

    def describe(self) -> dict[str, Any]:
        """The placement for a report: CPU lists, or ``all`` / ``the servers' own``."""
        return {
            "server_cpus": sorted(self.server) if self.server is not None else "all",
            "loadgen_cpus": sorted(self.loadgen) if self.loadgen is not None else "the servers' own",
        }


__all__ = ["Placement", "parse_cpus"]
