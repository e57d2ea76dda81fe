"""A HIL run's device power and temperature, from the ``power`` section of each device's telemetry.

The devices measure (:class:`edgeds.power.DeviceMeter` in their agent: tegrastats on Jetson, RAPL
on x86, thermal zones); this module only collects what they reported. :class:`PowerLog` keeps,
per device, each telemetry report's average watts (with its time) and hottest temperature;
:meth:`PowerLog.energy` gives a device's perf-window figures: the mean of the watts reported in
that window and joules per inference = watts / samples per second, or null figures and the
reason (the device's own, e.g. ``no power source: /sys/class/powercap absent``). An agent whose
telemetry has no ``power`` section (older edgeds) is said so, never estimated.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DevicePower:
    """What one device reported: (time, W) pairs, its source and reason, (time, hottest °C) pairs."""

    watts: list[tuple[float, float]] = field(default_factory=list)
    source: str | None = None
    reason: str | None = None
    temperatures: list[tuple[float, float]] = field(default_factory=list)
    reports: int = 0


def hottest_c(payload: dict[str, Any]) -> float | None:
    """The hottest of a telemetry payload's ``power.temperatures_c``, °C (None without one)."""
    section = payload.get("power")
    temps = section.get("temperatures_c") if isinstance(section, dict) else None
    values = [float(v) for v in (temps or {}).values() if isinstance(v, (int, float))]
    return max(values) if values else None


class PowerLog:
    """The ``power`` sections of a run's telemetry, by device (see the module docstring)."""

    def __init__(self) -> None:
        self.devices: dict[str, DevicePower] = {}

    def add(self, device: str, ts: float, payload: dict[str, Any]) -> None:
        """One telemetry payload of ``device`` sent at ``ts`` (seconds since the epoch)."""
        section = payload.get("power")
        if not isinstance(section, dict):
            return
        entry = self.devices.setdefault(device, DevicePower())
        entry.reports += 1
        entry.source = section.get("source") or entry.source
        if section.get("unavailable_reason"):
            entry.reason = str(section["unavailable_reason"])
        watts = section.get("watts")
        if isinstance(watts, (int, float)):
            entry.watts.append((ts, float(watts)))
        hottest = hottest_c(payload)
        if hottest is not None:
            entry.temperatures.append((ts, hottest))

    def energy(self, device: str, window: tuple[float, float] | None, samples_per_s: float | None) -> dict[str, Any]:
        """The device's perf-window energy: ``watts_avg``, ``joules_per_inference``, ``source``,
        ``reports`` (telemetry reports averaged) and ``unavailable_reason`` (None when measured).

        A report counts when sent inside the window or within one report interval after its end
        (each report's watts are the average over the interval before it)."""
        entry = self.devices.get(device)
        figures: dict[str, Any] = {
            "watts_avg": None,
            "joules_per_inference": None,
            "source": None,
            "reports": 0,
            "unavailable_reason": None,
        }
        if entry is None:
            figures["unavailable_reason"] = "the device's telemetry has no power section (its agent predates it)"
            return figures
        if window is None:
            figures["unavailable_reason"] = "no perf window was run"
            return figures
        if entry.source is None:
            figures["unavailable_reason"] = entry.reason or "no power source"
            return figures
        start, end = window
        times = sorted(t for t, _ in entry.watts)
        step = min((b - a for a, b in itertools.pairwise(times) if b > a), default=0.0)
        inside = [w for t, w in entry.watts if start < t <= end + step]
        if not inside:
            figures["unavailable_reason"] = f"no power report from {entry.source} during the perf window"
            return figures
        watts = sum(inside) / len(inside)
        figures.update(
            watts_avg=round(watts, 4),
            source=entry.source,
            reports=len(inside),
            joules_per_inference=round(watts / samples_per_s, 9) if samples_per_s else None,
        )
        return figures
