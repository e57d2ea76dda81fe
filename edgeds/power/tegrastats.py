"""NVIDIA ``tegrastats`` on Jetson: one line parsed, and the program read line by line.

:func:`parse_tegrastats` reads Xavier, Orin and Nano lines (RAM, cores, EMC, GPU, temperatures in
°C, power rails in mW); :class:`TegrastatsReader` runs ``tegrastats --interval <ms>`` and keeps the
latest line, and, when asked (``history``), the board's input power of every line with the time it
was read, which :mod:`edgeds.power.sources` integrates into joules. :func:`board_power_mw` says
which rail (or sum of rails) is the board's input power.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

_ABSENT_C = -256.0


@dataclass(frozen=True)
class CpuCore:
    """One core of a tegrastats ``CPU [...]`` list; ``online`` false for ``off``."""

    online: bool
    load_percent: float | None = None
    freq_mhz: int | None = None


@dataclass(frozen=True)
class PowerRail:
    """A rail's instantaneous and average power, milliwatts (tegrastats prints mW on every
    platform; Orin adds the unit, older releases print bare numbers)."""

    current_mw: int
    average_mw: int


@dataclass(frozen=True)
class Tegrastats:
    timestamp: str | None = None
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    lfb_blocks: int | None = None
    lfb_block_mb: int | None = None
    swap_used_mb: int | None = None
    swap_total_mb: int | None = None
    swap_cached_mb: int | None = None
    cpu: tuple[CpuCore, ...] = ()
    emc_percent: float | None = None
    emc_freq_mhz: int | None = None
    gpu_percent: float | None = None
    gpu_freq_mhz: tuple[int, ...] = ()
    temperatures_c: dict[str, float] = field(default_factory=dict)
    absent_sensors: tuple[str, ...] = ()
    power_mw: dict[str, PowerRail] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_TS = re.compile(r"^\s*(\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2})\s")
_RAM = re.compile(r"\bRAM (\d+)/(\d+)MB(?: \(lfb (\d+)x(\d+)MB\))?")
_SWAP = re.compile(r"\bSWAP (\d+)/(\d+)MB(?: \(cached (\d+)MB\))?")
_CPU = re.compile(r"\bCPU \[([^\]]*)\]")
_CORE = re.compile(r"^(\d+(?:\.\d+)?)%(?:@(\d+))?$")
_EMC = re.compile(r"\bEMC_FREQ (\d+(?:\.\d+)?)%(?:@(\d+))?")
_GR3D = re.compile(r"\bGR3D_FREQ (\d+(?:\.\d+)?)%(?:@\[?([\d,]+)\]?)?")
_TEMP = re.compile(r"(?<![\w@])([A-Za-z][\w.-]*)@(-?\d+(?:\.\d+)?)C(?=\s|$)")
_RAIL = re.compile(r"(?<!\S)([A-Z][A-Z0-9_]*) (\d+)(mW)?/(\d+)(mW)?(?=\s|$)")
_NOT_RAILS = frozenset({"RAM", "SWAP", "IRAM", "NC"})


def parse_tegrastats(line: str) -> Tegrastats:
    """Parse one line of NVIDIA ``tegrastats`` output (Xavier / Orin / Nano formats).

    Cores printed as ``off`` are kept as offline; sensors at -256C are listed in
    ``absent_sensors`` rather than reported as temperatures; power rails are read with or without
    the ``mW`` unit; ``NC`` (not connected) rails are skipped. Fields not in the line stay None.
    """
    ts = _TS.match(line)
    ram, swap, cpu = _RAM.search(line), _SWAP.search(line), _CPU.search(line)
    emc, gr3d = _EMC.search(line), _GR3D.search(line)
    cores: list[CpuCore] = []
    if cpu:
        for token in (t.strip() for t in cpu.group(1).split(",")):
            if not token:
                continue
            if token == "off":
                cores.append(CpuCore(online=False))
                continue
            m = _CORE.match(token)
            if m:
                cores.append(CpuCore(True, float(m.group(1)), int(m.group(2)) if m.group(2) else None))
    temps: dict[str, float] = {}
    absent: list[str] = []
    for name, value in _TEMP.findall(line):
        if float(value) <= _ABSENT_C:
            absent.append(name)
        else:
            temps[name] = float(value)
    rails: dict[str, PowerRail] = {}
    for name, cur, _u1, avg, _u2 in _RAIL.findall(line):
        if name not in _NOT_RAILS:
            rails[name] = PowerRail(int(cur), int(avg))
    return Tegrastats(
        timestamp=ts.group(1) if ts else None,
        ram_used_mb=_int(ram, 1),
        ram_total_mb=_int(ram, 2),
        lfb_blocks=_int(ram, 3),
        lfb_block_mb=_int(ram, 4),
        swap_used_mb=_int(swap, 1),
        swap_total_mb=_int(swap, 2),
        swap_cached_mb=_int(swap, 3),
        cpu=tuple(cores),
        emc_percent=float(emc.group(1)) if emc else None,
        emc_freq_mhz=_int(emc, 2),
        gpu_percent=float(gr3d.group(1)) if gr3d else None,
        gpu_freq_mhz=tuple(int(f) for f in gr3d.group(2).split(",") if f) if gr3d and gr3d.group(2) else (),
        temperatures_c=temps,
        absent_sensors=tuple(absent),
        power_mw=rails,
    )


def _int(match: re.Match[str] | None, group: int) -> int | None:
    if match is None or match.group(group) is None:
        return None
    return int(match.group(group))


class TegrastatsReader:
    """Runs ``tegrastats --interval <ms>`` and keeps the latest parsed line (Jetson only).

    :meth:`start` returns False, and the reader stays idle, when the program is not found or cannot
    be run (a device without it reports no ``jetson`` section; telemetry goes on). :meth:`latest`
    is None until a line has been read, and again once no line has come for three intervals (the
    program died or hangs: a stale reading is not reported as current). :meth:`stop` ends the child's
    process group and the reading thread. Lines in which nothing is recognised (neither RAM nor CPU:
    a warning, a blank line) are skipped and keep the previous reading.

    ``history`` > 0 keeps that many ``(time.monotonic() the line was read, board power mW)`` pairs
    of the latest lines that carry power rails (:func:`board_power_mw`), for :meth:`power_samples`.
    """

    def __init__(self, interval_ms: int = 1000, binary: str = "tegrastats", history: int = 0) -> None:
        self.interval_ms = interval_ms
        self.binary = binary
        self.rail: str | None = None  # what board_power_mw read in the latest line with rails
        self._history: deque[tuple[float, int]] = deque(maxlen=max(history, 1))
        self._keep_history = history > 0
        self._latest: Tegrastats | None = None
        self._latest_at = 0.0  # time.monotonic() of the latest line
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        path = shutil.which(self.binary)
        if path is None:
            return False
        try:
            self._proc = subprocess.Popen(
                [path, "--interval", str(self.interval_ms)],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                start_new_session=True,  # stop() ends its whole group (a wrapper script and what it runs)
            )
        except (OSError, ValueError) as exc:
            log.warning("tegrastats: cannot run %s: %s", path, exc)
            return False
        self._thread = threading.Thread(target=self._read, args=(self._proc,), name="edgeds-tegrastats", daemon=True)
        self._thread.start()
        return True

    def _read(self, proc: subprocess.Popen[str]) -> None:
        if proc.stdout is None:
            return
        with contextlib.suppress(ValueError, OSError):  # stdout closed by stop()
            for line in proc.stdout:
                parsed = parse_tegrastats(line)
                if parsed.ram_used_mb is None and not parsed.cpu:  # not a tegrastats line (a warning, a blank)
                    log.debug("tegrastats: line skipped: %r", line)
                    continue
                now = time.monotonic()
                self._latest, self._latest_at = parsed, now
                if self._keep_history:
                    power = board_power_mw(parsed)
                    if power is not None:
                        self.rail = power[1]
                        self._history.append((now, power[0]))

    def power_samples(self, since: float, until: float) -> list[tuple[float, int]]:
        """The kept ``(monotonic s, board mW)`` samples read between ``since`` and ``until``."""
        return [(t, mw) for t, mw in list(self._history) if since <= t <= until]

    def latest(self) -> Tegrastats | None:
        if self._latest is None or time.monotonic() - self._latest_at > 3 * self.interval_ms / 1000:
            return None
        return self._latest

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, sig)
                try:
                    proc.wait(2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2)  # the child is gone: its stdout ends and the thread with it
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        self._latest = None


# Rails that carry the whole module's input power where the board has one (Orin NX / Nano and Xavier
# NX: VDD_IN; Nano and TX1: POM_5V_IN). Other boards (AGX Xavier, AGX Orin) list only separate
# rails, and their sum is the module's power.
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")


def board_power_mw(line: Tegrastats) -> tuple[int, str] | None:
    """The board's input power in a tegrastats line, mW, and which rail(s) it came from.

    The input rail (``VDD_IN``, ``POM_5V_IN``) where the line has one, else the sum of every rail
    (named ``sum(A+B+...)``); None when the line has no power rails. Instantaneous values (the
    first of ``current/average``).
    """
    rails = line.power_mw
    for name in _INPUT_RAILS:
        if name in rails:
            return rails[name].current_mw, name
    if not rails:
        return None
    return sum(r.current_mw for r in rails.values()), f"sum({'+'.join(rails)})"


def logged_power_mw(lines: Iterable[str]) -> list[tuple[float, int, str]]:
    """``(seconds since the epoch, board mW, rail)`` of each line of a ``tegrastats --logfile`` log
    that has a date prefix (Orin's ``MM-DD-YYYY HH:MM:SS``, one-second resolution) and power
    rails; other lines are skipped."""
    out: list[tuple[float, int, str]] = []
    for line in lines:
        parsed = parse_tegrastats(line)
        power = board_power_mw(parsed)
        if parsed.timestamp is None or power is None:
            continue
        when = datetime.strptime(parsed.timestamp, "%m-%d-%Y %H:%M:%S").timestamp()
        out.append((when, power[0], power[1]))
    return out
