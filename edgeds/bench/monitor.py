"""The CPU and memory a benchmarked process uses while a scenario runs.

:class:`ResourceMonitor` is a context manager around one measured run: CPU% over the run, and RSS
sampled every ``interval`` seconds, of a process and all its children (a server and its workers).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np
import psutil


class ResourceMonitor:
    """Samples CPU% and RSS of a process (psutil) every ``interval`` seconds.

    ``pid`` is the process to watch (default: this one); its children count with it. Enter it
    once, around the run; :meth:`report` gives CPU% over the run and the peak and steady RSS (MB).
    A child that exits between listing and reading is left out of that sample.
    """

    def __init__(self, pid: int | None = None, interval: float = 0.2) -> None:
        self.proc = psutil.Process(pid or os.getpid())
        self.interval = interval
        self.rss: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = 0.0
        self._t_start = 0.0
        self.cpu_percent = 0.0

    def _times(self) -> float:
        total = 0.0
        for proc in [self.proc, *self.proc.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:  # a child may exit meanwhile
                continue
        return total

    def _rss(self) -> int:
        total = 0
        for proc in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a child may exit meanwhile
                continue
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.rss.append(self._rss())

    def __enter__(self) -> ResourceMonitor:
        self._cpu_start = self._times()
        self._t_start = time.perf_counter()
        self.rss.append(self._rss())
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.rss.append(self._rss())
        elapsed = time.perf_counter() - self._t_start
        self.cpu_percent = 100.0 * (self._times() - self._cpu_start) / elapsed if elapsed > 0 else 0.0

    def report(self) -> dict[str, Any]:
        return {
            "cpu_percent": round(self.cpu_percent, 1),
            "rss_peak_mb": round(max(self.rss) / 2**20, 2) if self.rss else None,
            "rss_steady_mb": round(float(np.median(self.rss[len(self.rss) // 2 :])) / 2**20, 2) if self.rss else None,
        }


__all__ = ["ResourceMonitor"]
