"""The consumer side without MQTT: fold received messages into one row per device, dedupe,
flatten for CSV. Used by ``edgeds monitor`` and ``edgeds telemetry export``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import TelemetryError
from .envelope import Envelope, decode, split_topic


@dataclass
class DeviceRow:
    """What the monitor shows for one device. None = not reported yet."""

    device: str
    state: str = "unknown"
    model_version: str | None = None
    runs_on: str | None = None  # runtime, precision and device the agent opened
    fallback: str | None = None  # why that is not the bundle's first choice as asked
    fps: float | None = None
    p99_ms: float | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    temperature_c: float | None = None
    watts: float | None = None  # measured power (RAPL, tegrastats); None where the device has no source
    spool_depth: int | None = None
    dropped_total: int | None = None
    last_seq: int | None = None
    last_seen: float | None = None
    agent_version: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _get(node: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _opened(row: DeviceRow, section: Any) -> None:
    """Take what a device reports it opened (``section["opened"]``: ``Selection.as_dict``, or None
    when it serves nothing) into its row; a section without the key (an older agent) changes nothing."""
    if not isinstance(section, Mapping) or "opened" not in section:
        return
    opened = section["opened"]
    if not isinstance(opened, Mapping):
        row.runs_on = row.fallback = None
        return
    where = opened.get("device") or opened.get("delegate")
    text = f"{opened.get('runtime', '')} {opened.get('precision') or ''}".strip()
    row.runs_on = text + (f" on {where}" if where else "")
    fallback = opened.get("fallback")
    row.fallback = str(fallback) if fallback else None


class FleetView:
    """Rows keyed by device id, updated by :meth:`update` with each (topic, payload bytes)."""

    def __init__(self, prefix: str = "edgeds") -> None:
        self.prefix = prefix
        self.rows: dict[str, DeviceRow] = {}
        self.malformed = 0

    def update(self, topic: str, payload: bytes) -> DeviceRow | None:
        """Fold one message in; returns the device's row, or None when the message is not ours."""
        where = split_topic(self.prefix, topic)
        if where is None:
            return None
        try:
            env = decode(payload)
        except TelemetryError:
            self.malformed += 1
            return None
        row = self.rows.setdefault(where[0], DeviceRow(where[0]))
        row.agent_version = env.agent_version
        if env.kind == "status":
            row.state = str(env.payload.get("state", "unknown"))
            return row
        row.spool_depth, row.dropped_total = env.spool_depth, env.dropped_total
        if row.last_seen is None or env.ts >= row.last_seen:
            row.last_seen = env.ts
            row.last_seq = env.seq
        if env.kind == "telemetry" and not env.is_historical:
            self._telemetry(row, env)
        elif env.kind == "deploy":
            if isinstance(env.payload.get("model_version"), str):
                row.model_version = env.payload["model_version"]
            _opened(row, env.payload)
        return row

    @staticmethod
    def _telemetry(row: DeviceRow, env: Envelope) -> None:
        p = env.payload
        if row.state == "unknown":
            row.state = "online"
        version = _get(p, "deploy", "model_version") or _get(p, "model", "version")
        if isinstance(version, str):
            row.model_version = version
        _opened(row, _get(p, "deploy"))
        row.fps = _num(_get(p, "inference", "throughput_fps"))
        row.p99_ms = _num(_get(p, "inference", "p99_ms"))
        row.cpu_percent = _num(_get(p, "host", "cpu_percent"))
        row.memory_percent = _num(_get(p, "host", "memory", "percent"))
        temps = [v for v in (_get(p, "host", "temperatures_c") or {}).values() if _num(v) is not None]
        jetson = _get(p, "jetson", "temperatures_c") or {}
        temps += [v for v in jetson.values() if _num(v) is not None]
        power_temps = _get(p, "power", "temperatures_c") or {}
        temps += [v for v in power_temps.values() if _num(v) is not None]
        row.temperature_c = max(temps) if temps else None
        row.watts = _num(_get(p, "power", "watts"))

    def table_rows(self, now: float | None = None) -> list[list[Any]]:
        now = time.time() if now is None else now
        out = []
        for row in sorted(self.rows.values(), key=lambda r: r.device):
            age = f"{now - row.last_seen:.0f}" if row.last_seen else "-"
            out.append(
                [
                    row.device,
                    row.state,
                    row.model_version or "-",
                    (row.runs_on or "-") + (f" (fallback: {row.fallback})" if row.fallback else ""),
                    _fmt(row.fps, 1),
                    _fmt(row.p99_ms, 2),
                    _fmt(row.cpu_percent, 0),
                    _fmt(row.memory_percent, 0),
                    _fmt(row.temperature_c, 1),
                    _fmt(row.watts, 1),
                    row.spool_depth if row.spool_depth is not None else "-",
                    row.dropped_total if row.dropped_total is not None else "-",
                    age,
                ]
            )
        return out


COLUMNS = [
    "device",
    "state",
    "model",
    "runs on",
    "fps",
    "p99 ms",
    "CPU %",
    "mem %",
    "temp °C",
    "power W",
    "spool",
    "dropped",
    "seen s ago",
]


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


class Deduper:
    """Remembers ``(device_id, boot_id, seq)`` keys; :meth:`first` is True the first time."""

    def __init__(self) -> None:
        self._seen: set[tuple[str, str, int]] = set()
        self.duplicates = 0

    def first(self, env: Envelope) -> bool:
        if env.kind == "status":
            return True
        if env.key in self._seen:
            self.duplicates += 1
            return False
        self._seen.add(env.key)
        return True


ENVELOPE_COLUMNS = [
    "topic",
    "schema",
    "kind",
    "device_id",
    "boot_id",
    "seq",
    "ts",
    "is_historical",
    "agent_version",
    "spool_depth",
    "dropped_total",
]


def record(topic: str, env: Envelope) -> dict[str, Any]:
    """A capture record: the envelope as JSON (``schema`` by its wire name) plus ``topic``."""
    return {"topic": topic, **env.model_dump(mode="json", by_alias=True)}


def flatten(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row: envelope columns, then ``payload.a.b`` leaves; lists as JSON text."""
    out: dict[str, Any] = {k: rec.get(k) for k in ENVELOPE_COLUMNS}

    def walk(node: Any, name: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, f"{name}.{key}")
        elif isinstance(node, (list, tuple)):
            out[name] = json.dumps(node, separators=(",", ":"))
        else:
            out[name] = node

    walk(rec.get("payload") or {}, "payload")
    return out


def csv_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Envelope columns first, then every payload column seen, sorted."""
    extra: set[str] = set()
    for row in rows:
        extra.update(k for k in row if k not in ENVELOPE_COLUMNS)
    return ENVELOPE_COLUMNS + sorted(extra)
