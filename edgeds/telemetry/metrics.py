"""What a device reports: host metrics, inference metrics, deploy state, Jetson tegrastats.

The periodic ``telemetry`` payload is a mapping with these sections (all optional except
``host``; absent figures are omitted or ``null``, never invented)::

    host:       HostSampler.sample()          (units in the key names: _percent, _bytes, _c, _s)
    inference:  InferenceRecorder.snapshot()  (throughput_fps, p50_ms/p95_ms/p99_ms, queue_depth,
                                               batch_size_histogram, errors_total, model_load_time_s)
    deploy:     DeployState.as_dict()         (release_id, model_name, model_version, backend, state)
    jetson:     parse_tegrastats(line)        (only where tegrastats runs; edgeds.power.tegrastats)
    power:      edgeds.power.DeviceMeter.sample() (source, watts, energy_j, temperatures_c)

:func:`to_prometheus` renders the same payload as Prometheus text, so the agent's ``/metrics``
shows exactly the figures that go over MQTT.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..power.tegrastats import CpuCore, PowerRail, Tegrastats, TegrastatsReader, parse_tegrastats

log = logging.getLogger(__name__)

__all__ = [  # the tegrastats names live in edgeds.power.tegrastats; telemetry re-exports them
    "CpuCore",
    "DeployState",
    "HostSampler",
    "InferenceRecorder",
    "PowerRail",
    "Tegrastats",
    "TegrastatsReader",
    "kernel_boot_id",
    "parse_tegrastats",
    "to_prometheus",
]

# --------------------------------------------------------------------------- host


def kernel_boot_id() -> str | None:
    """Linux's id of the current OS boot, or None elsewhere."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


class HostSampler:
    """Samples host figures with psutil. CPU percentages are over the time since the previous
    :meth:`sample` (the first call primes the counters). Disk and temperature readings are slower
    and are refreshed at most every ``slow_every_s`` seconds. Not thread-safe: one sampler per thread.
    """

    def __init__(self, disk_path: str | Path = "/", slow_every_s: float = 5.0) -> None:
        import psutil

        self._psutil = psutil
        self.disk_path = str(disk_path)
        self.slow_every_s = slow_every_s
        self._slow: dict[str, Any] = {}
        self._slow_at = -math.inf
        self._boot_time = float(psutil.boot_time())
        self._process = psutil.Process()
        psutil.cpu_percent(percpu=True, interval=None)

    def sample(self) -> dict[str, Any]:
        ps = self._psutil
        per_core = [float(v) for v in ps.cpu_percent(percpu=True, interval=None)]
        vm = ps.virtual_memory()
        sw = ps.swap_memory()
        now = time.monotonic()
        if now - self._slow_at >= self.slow_every_s:
            self._slow = {"disk": self._disk(), "temperatures_c": self._temperatures()}
            self._slow_at = now
        try:
            load = [round(v, 3) for v in ps.getloadavg()]
        except (OSError, AttributeError):
            load = None
        return {
            "cpu_percent": round(sum(per_core) / len(per_core), 2) if per_core else None,
            "cpu_per_core_percent": per_core,
            "load_avg": load,
            "memory": {
                "total_bytes": int(vm.total),
                "available_bytes": int(vm.available),
                "used_bytes": int(vm.total - vm.available),
                "percent": float(vm.percent),
            },
            "swap": {"total_bytes": int(sw.total), "used_bytes": int(sw.used), "percent": float(sw.percent)},
            **self._slow,
            "uptime_s": round(time.time() - self._boot_time, 1),
            "process_rss_bytes": int(self._process.memory_info().rss),
        }

    def _disk(self) -> dict[str, Any] | None:
        try:
            du = self._psutil.disk_usage(self.disk_path)
        except OSError:
            return None
        return {
            "path": self.disk_path,
            "total_bytes": int(du.total),
            "used_bytes": int(du.used),
            "free_bytes": int(du.free),
            "percent": float(du.percent),
        }

    def _temperatures(self) -> dict[str, float]:
        reader = getattr(self._psutil, "sensors_temperatures", None)
        if reader is None:
            return {}
        try:
            groups = reader()
        except (OSError, RuntimeError):
            return {}
        out: dict[str, float] = {}
        for chip, entries in groups.items():
            for i, entry in enumerate(entries):
                name = f"{chip}/{entry.label or i}"
                if entry.current is not None and entry.current > -200:
                    out[name] = round(float(entry.current), 2)
        return out


# --------------------------------------------------------------------------- inference


class InferenceRecorder:
    """Inference figures fed by the serving path, read by the telemetry thread.

    ``record(latency_s, batch_size)`` is called per request (``batch_size`` = its samples) or once
    per executed batch with every request's latency. It takes no lock and does no I/O: it appends
    one tuple to a deque (atomic in CPython); the events are folded into the counters by
    :meth:`snapshot`, or by ``record`` itself once ``max_pending`` have piled up, so memory stays
    bounded when nobody reads. :meth:`snapshot` computes throughput over the time since the
    previous snapshot and latency percentiles over the last ``window`` requests; the ``*_total``
    attributes are current as of the last fold.
    """

    def __init__(
        self, window: int = 2048, queue_depth: Callable[[], int] | None = None, max_pending: int = 1 << 16
    ) -> None:
        self._lock = threading.Lock()
        self._pending: deque[tuple[float | Sequence[float], int]] = deque()
        self._max_pending = max_pending
        self._latencies: deque[float] = deque(maxlen=window)
        self._queue_depth = queue_depth
        self._hist: dict[int, int] = {}
        self.requests_total = 0
        self.samples_total = 0
        self.batches_total = 0
        self.errors_total = 0
        self.model_load_time_s: float | None = None
        self._last_samples = 0
        self._last_at = time.monotonic()

    def record(self, latencies_s: float | Sequence[float], batch_size: int) -> None:
        self._pending.append((latencies_s, batch_size))
        if len(self._pending) > self._max_pending:
            with self._lock:
                self._fold()

    def _fold(self) -> None:
        """Move pending events into the counters (caller holds the lock)."""
        pending, hist = self._pending, self._hist
        while True:
            try:
                latencies, batch = pending.popleft()
            except IndexError:
                break
            if isinstance(latencies, (int, float)):
                self._latencies.append(latencies)
                self.requests_total += 1
            else:
                self._latencies.extend(latencies)
                self.requests_total += len(latencies)
            self.samples_total += batch
            self.batches_total += 1
            hist[batch] = hist.get(batch, 0) + 1

    def record_error(self, count: int = 1) -> None:
        with self._lock:
            self.errors_total += count

    def set_model_load_time(self, seconds: float) -> None:
        self.model_load_time_s = seconds

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._fold()
            lat = np.fromiter(self._latencies, dtype=np.float64, count=len(self._latencies))
            now = time.monotonic()
            elapsed = now - self._last_at
            fps = (self.samples_total - self._last_samples) / elapsed if elapsed > 0 else 0.0
            self._last_samples, self._last_at = self.samples_total, now
            hist = {str(k): v for k, v in sorted(self._hist.items())}
            counts = (self.requests_total, self.samples_total, self.batches_total, self.errors_total)
        p50, p95, p99 = (float(x) * 1e3 for x in np.percentile(lat, [50, 95, 99])) if lat.size else (None, None, None)
        depth = None
        if self._queue_depth is not None:
            try:
                depth = int(self._queue_depth())
            except Exception:  # a failing gauge callback costs only its gauge: queue_depth is null
                log.warning("queue depth callback failed", exc_info=True)
        return {
            "throughput_fps": round(fps, 3),
            "p50_ms": _r(p50),
            "p95_ms": _r(p95),
            "p99_ms": _r(p99),
            "latency_window": int(lat.size),
            "queue_depth": depth,
            "requests_total": counts[0],
            "samples_total": counts[1],
            "batches_total": counts[2],
            "errors_total": counts[3],
            "batch_size_histogram": hist,
            "model_load_time_s": self.model_load_time_s,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --------------------------------------------------------------------------- deploy state


@dataclass
class DeployState:
    """What the device is serving. ``state``: idle | loading | serving | failed."""

    state: str = "idle"
    release_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    backend: str | None = None
    precision: str | None = None
    since: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- prometheus

_PROM_NAME = re.compile(r"[^a-zA-Z0-9_]")


def to_prometheus(payload: Mapping[str, Any], prefix: str = "edgeds", labels: Mapping[str, str] | None = None) -> str:
    """The numeric leaves of a telemetry payload as Prometheus text exposition (gauges).

    Nested keys join with ``_``; list items and dict keys that are not identifiers become a label
    (``core``, ``key``). Booleans become 0/1; None and strings are skipped.
    """
    base = dict(labels or {})
    lines: list[str] = []
    seen: set[str] = set()
    for name, extra, value in _leaves(payload, prefix, {}):
        metric = _PROM_NAME.sub("_", name)
        if metric not in seen:
            lines.append(f"# TYPE {metric} gauge")
            seen.add(metric)
        all_labels = {**base, **extra}
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in all_labels.items())
        lines.append(f"{metric}{{{label_text}}} {value}" if label_text else f"{metric} {value}")
    return "\n".join(lines) + "\n"


def _leaves(node: Any, name: str, labels: dict[str, str]) -> Iterable[tuple[str, dict[str, str], float]]:
    if isinstance(node, bool):
        yield name, labels, float(node)
    elif isinstance(node, (int, float)):
        if math.isfinite(node):
            yield name, labels, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            key = str(key)
            if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                yield from _leaves(value, f"{name}_{key}", labels)
            else:
                yield from _leaves(value, name, {**labels, "key": key})
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _leaves(value, name, {**labels, "index": str(i)})


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
