"""Energy over a window from what the hardware measures: RAPL counters or tegrastats power.

A :class:`PowerSource` is opened once (:func:`open_source`: tegrastats where the program runs,
else RAPL package counters, else None with the reason), marks the start of a window
(:meth:`PowerSource.mark`) and gives the :class:`Energy` since a mark (:meth:`PowerSource.energy`),
or :class:`Unmeasured` with the reason. Nothing is estimated: a window that the source did not
measure has no figure. :meth:`PowerSource.close` ends what the source started (the tegrastats
child process). Units: joules, seconds, watts, °C.

RAPL: the package counters' difference, exact to the counter's resolution; the whole package
(every process on it, idle power included; not DRAM). tegrastats: the board's input power
(:func:`~.tegrastats.board_power_mw`) sampled every ``interval_ms``, integrated by the trapezoid
rule over the window, each edge held at its nearest sample; at least two samples must fall
inside the window.
"""

from __future__ import annotations

import itertools
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rapl import POWERCAP, RaplReader, open_rapl
from .tegrastats import TegrastatsReader, logged_power_mw
from .thermal import THERMAL, thermal_zones


@dataclass(frozen=True)
class Energy:
    """Energy measured over ``seconds`` by ``source`` (which counter or rail)."""

    joules: float
    seconds: float
    watts_avg: float
    source: str

    def as_dict(self, inferences: int | None = None) -> dict[str, Any]:
        """The JSON form; with ``inferences`` (completed in the window) also ``joules_per_inference``."""
        per = self.joules / inferences if inferences else None
        return {
            "joules": round(self.joules, 6),
            "seconds": round(self.seconds, 4),
            "watts_avg": round(self.watts_avg, 4),
            "joules_per_inference": None if per is None else round(per, 9),
            "source": self.source,
            "unavailable_reason": None,
        }


@dataclass(frozen=True)
class Unmeasured:
    """No energy figure for a window, and why (one line)."""

    reason: str

    def as_dict(self, inferences: int | None = None) -> dict[str, Any]:
        return {
            "joules": None,
            "seconds": None,
            "watts_avg": None,
            "joules_per_inference": None,
            "source": None,
            "unavailable_reason": self.reason,
        }


class PowerSource(ABC):
    """One opened source of measured energy (see the module docstring). Not thread-safe."""

    name: str

    @abstractmethod
    def mark(self) -> Any:
        """The start of a window: an opaque reading to hand to :meth:`energy`."""

    @abstractmethod
    def energy(self, since: Any) -> Energy | Unmeasured:
        """The energy from the mark ``since`` until now."""

    @abstractmethod
    def temperatures_c(self) -> dict[str, float]:
        """Temperatures by sensor, °C, from the same hardware (thermal zones, or tegrastats)."""

    @abstractmethod
    def close(self) -> None:
        """End what the source started."""


class RaplSource(PowerSource):
    """RAPL package energy counters (:mod:`.rapl`)."""

    def __init__(self, reader: RaplReader, thermal_root: Path = THERMAL) -> None:
        self.reader = reader
        self.name = reader.name
        self.thermal_root = thermal_root

    def mark(self) -> tuple[float, tuple[int, ...]]:
        return self.reader.read()

    def energy(self, since: Any) -> Energy | Unmeasured:
        t0, start = since
        t1, end = self.reader.read()
        seconds = t1 - t0
        if seconds <= 0:
            return Unmeasured("empty window")
        joules = self.reader.joules(start, end)
        return Energy(joules, seconds, joules / seconds, self.name)

    def temperatures_c(self) -> dict[str, float]:
        return thermal_zones(self.thermal_root)

    def close(self) -> None:
        """Nothing to end: the counters are files read on demand."""


def integrate_mw(samples: Sequence[tuple[float, int]], start: float, end: float) -> float:
    """Joules from ``(time s, power mW)`` samples over ``[start, end]``: the trapezoid rule between
    samples, each edge of the window held at its nearest sample. Needs at least one sample."""
    if not samples:
        raise ValueError("no samples to integrate")
    pts = sorted(samples)
    mj = pts[0][1] * max(pts[0][0] - start, 0.0) + pts[-1][1] * max(end - pts[-1][0], 0.0)
    for (ta, pa), (tb, pb) in itertools.pairwise(pts):
        mj += (pa + pb) / 2 * (tb - ta)
    return mj / 1000.0


def logged_energy(lines: Iterable[str]) -> Energy | Unmeasured:
    """The energy over a recorded tegrastats log (:func:`~.tegrastats.logged_power_mw`): from its
    first to its last dated line, the trapezoid rule between lines."""
    samples = logged_power_mw(lines)
    if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
        return Unmeasured(f"{len(samples)} dated tegrastats line(s) with power rails: need two, a second apart")
    start, end = samples[0][0], samples[-1][0]
    joules = integrate_mw([(t, mw) for t, mw, _ in samples], start, end)
    rails = sorted({rail for _, _, rail in samples})
    return Energy(joules, end - start, joules / (end - start), f"tegrastats {'/'.join(rails)}")


class TegrastatsSource(PowerSource):
    """The board's input power from a running tegrastats (:mod:`.tegrastats`), integrated."""

    def __init__(self, reader: TegrastatsReader, min_samples: int = 2) -> None:
        self.reader = reader
        self.name = "tegrastats"
        self.min_samples = min_samples

    def mark(self) -> float:
        return time.monotonic()

    def energy(self, since: Any) -> Energy | Unmeasured:
        end = time.monotonic()
        samples = self.reader.power_samples(float(since), end)
        if len(samples) < max(self.min_samples, 1):
            return Unmeasured(
                f"{len(samples)} tegrastats power sample(s) in {end - since:.2f} s at "
                f"{self.reader.interval_ms} ms: measure longer"
            )
        joules = integrate_mw(samples, float(since), end)
        seconds = end - float(since)
        return Energy(joules, seconds, joules / seconds, f"tegrastats {self.reader.rail}")

    def temperatures_c(self) -> dict[str, float]:
        latest = self.reader.latest()
        return dict(latest.temperatures_c) if latest is not None else {}

    def close(self) -> None:
        self.reader.stop()


def open_source(
    *,
    powercap_root: Path = POWERCAP,
    thermal_root: Path = THERMAL,
    tegrastats: str | None = "tegrastats",
    interval_ms: int = 100,
    reader: TegrastatsReader | None = None,
) -> tuple[PowerSource, None] | tuple[None, str]:
    """The first source this machine measures, or None and why (``"no power source: ..."``).

    tegrastats (``tegrastats``: a name on PATH or a path; None to skip it) is started here at
    ``interval_ms``, unless ``reader`` is an already running one that keeps a history; then RAPL
    under ``powercap_root``. The caller closes the source.
    """
    reasons: list[str] = []
    if reader is not None:
        return TegrastatsSource(reader), None
    if tegrastats:
        if shutil.which(tegrastats) is None:
            reasons.append(f"{tegrastats} not found")
        else:
            started = TegrastatsReader(interval_ms, tegrastats, history=1 << 16)
            if started.start():
                return TegrastatsSource(started), None
            reasons.append(f"{tegrastats} cannot be run")
    rapl = open_rapl(powercap_root)
    if isinstance(rapl, RaplReader):
        return RaplSource(rapl, thermal_root), None
    return None, "no power source: " + "; ".join([rapl, *reasons])


class EnergyWindow:
    """``with EnergyWindow(source) as w: ...`` measures the block; ``w.result`` after it.

    With ``source`` None the result is :class:`Unmeasured` with ``reason``.
    """

    def __init__(self, source: PowerSource | None, reason: str = "no power source") -> None:
        self.source = source
        self.result: Energy | Unmeasured = Unmeasured(reason)
        self._mark: Any = None

    def __enter__(self) -> EnergyWindow:
        if self.source is not None:
            self._mark = self.source.mark()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.source is not None:
            self.result = self.source.energy(self._mark)


class DeviceMeter:
    """What a device reports each telemetry interval: :meth:`sample` gives
    ``{"source", "unavailable_reason", "watts", "energy_j", "temperatures_c"}``: ``watts`` is the
    average since the previous sample (None when unmeasured: with tegrastats, an interval in which
    no line came; one line is enough, held over the interval), ``energy_j`` the
    sum since the meter was made, ``temperatures_c`` the source's sensors (thermal zones without
    a power source). The meter does not own a reader handed to it; :meth:`close` closes only a
    source it opened.
    """

    def __init__(
        self,
        *,
        reader: TegrastatsReader | None = None,
        powercap_root: Path = POWERCAP,
        thermal_root: Path = THERMAL,
    ) -> None:
        self.thermal_root = thermal_root
        self.source: PowerSource | None
        self.reason: str | None
        if reader is not None:  # one line per interval is enough: each is a measured reading
            self.source, self.reason = TegrastatsSource(reader, min_samples=1), None
        else:
            opened = open_source(powercap_root=powercap_root, thermal_root=thermal_root, tegrastats=None)
            self.source, self.reason = opened
        self._owned = reader is None
        self._mark: Any = self.source.mark() if self.source is not None else None
        self.energy_j = 0.0

    def sample(self) -> dict[str, Any]:
        watts: float | None = None
        reason = self.reason
        if self.source is not None:
            result = self.source.energy(self._mark)
            self._mark = self.source.mark()
            if isinstance(result, Energy):
                watts = round(result.watts_avg, 3)
                self.energy_j += result.joules
            else:
                reason = result.reason
            temps = self.source.temperatures_c()
        else:
            temps = thermal_zones(self.thermal_root)
        return {
            "source": self.source.name if self.source is not None else None,
            "unavailable_reason": reason if watts is None else None,
            "watts": watts,
            "energy_j": round(self.energy_j, 3) if self.source is not None else None,
            "temperatures_c": temps,
        }

    def close(self) -> None:
        if self.source is not None and self._owned:
            self.source.close()
