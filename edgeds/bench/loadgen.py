"""The HTTP load generator a benchmark drives servers with: the native program or the Python loop.

Both run the same closed loop over an :class:`HttpClient`'s request and return the same records;
the native one (:mod:`.native_loadgen`) spends far less of the CPU it shares with the server.
"""

from __future__ import annotations

from typing import Any

from ..errors import BenchError
from . import native_loadgen
from .clients import HttpClient
from .loops import http_closed_loop
from .native_loadgen import LoadgenUnavailable
from .stats import Samples

KINDS = ("native", "python")


class LoadGenerator:
    """The closed-loop HTTP load generator that drives every server at ``concurrency``: ``native``
    (``bench/loadgen/closed_loop.c``, built on construction; :class:`LoadgenUnavailable` without a
    C compiler or its source) or ``python`` (:func:`edgeds.bench.http_closed_loop`). BenchError
    for another ``kind``."""

    def __init__(self, kind: str, concurrency: int) -> None:
        if kind not in KINDS:
            raise BenchError(f"unknown load generator {kind!r} (native or python)")
        self.kind = kind
        self.concurrency = concurrency
        self.binary = native_loadgen.build() if kind == "native" else None

    def run(
        self, client: HttpClient, duration_s: float, *, warmup_s: float = 0.5, max_queries: int | None = None
    ) -> Samples:
        """One closed loop over ``client``'s request; the records of the requests sent after ``warmup_s``."""
        if self.binary is not None:
            return native_loadgen.closed_loop(
                client, self.concurrency, duration_s, warmup_s, max_queries, binary=self.binary
            )
        return http_closed_loop(client, self.concurrency, duration_s, warmup_s, max_queries)

    def describe(self) -> dict[str, Any]:
        """Which load generator this is, for a report (with the compiler that built a native one)."""
        if self.binary is None:
            return {"kind": "python", "what": "edgeds.bench.http_closed_loop (one thread, selectors)"}
        return {
            "kind": "native",
            "what": "bench/loadgen/closed_loop.c (one thread, epoll)",
            "compiler": native_loadgen.compiler_version(),
        }


__all__ = ["KINDS", "LoadGenerator", "LoadgenUnavailable"]
