"""Counts of the server's failed answers: every request answered 4xx or 5xx, by status code.

One :class:`StatusCounts` per server, shared by its event loops' connection groups
(:mod:`edgeds.runtime.http1` counts each failed answer as it is sent, framing errors that never
reach a route or a model included); :func:`edgeds.runtime.views.prometheus_text` exposes it in
``/metrics``. Only failures are counted, so a successful request costs nothing here.
"""

from __future__ import annotations

import threading


class StatusCounts:
    """Cumulative counts of failed answers by status code (400-599), safe from any thread.

    :meth:`add` is called by whichever thread sends the answer (an event loop or an engine worker);
    :meth:`snapshot` gives a copy for the exposition. Counts only grow (a Prometheus counter).
    """

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, status: int) -> None:
        """Count one answer with ``status``."""
        with self._lock:
            self._counts[status] = self._counts.get(status, 0) + 1

    def snapshot(self) -> dict[int, int]:
        """Status code -> answers so far (a copy, in code order)."""
        with self._lock:
            return dict(sorted(self._counts.items()))

    def total(self) -> int:
        """Every failed answer so far."""
        with self._lock:
            return sum(self._counts.values())


__all__ = ["StatusCounts"]
