"""Energy of the benchmarked runs, where this machine measures it (:mod:`edgeds.power`).

:func:`open_bench_power` opens the machine's power source for a run, or gives the reason there is
none: also when the server under test is on another machine (its power cannot be read from
here). :func:`energy_entry` is a scenario's ``energy`` in the report: joules, seconds, average
watts and joules per inference over exactly the scenario's measured window, or null values and
the reason. A figure is never estimated. RAPL counts the whole package: the load generator and
anything else running beside the server are in it (the report's ``power_scope`` says so).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..power import Energy, PowerSource, Unmeasured, open_source

NOT_AVAILABLE = "n/a"
_LOCAL = ("localhost", "::1")


def open_bench_power(url: str | None = None) -> tuple[PowerSource, None] | tuple[None, str]:
    """This machine's power source, for an in-process run or a server at a loopback ``url``."""
    if url is not None:
        host = urlsplit(url if "//" in url else f"http://{url}").hostname or ""
        if not (host in _LOCAL or host.startswith("127.")):
            return None, f"no power source: the server at {host} is another machine (its power is not read here)"
    return open_source()


def power_fields(source: PowerSource | None, reason: str | None) -> dict[str, Any]:
    """The report's top-level ``power_source`` / ``power_unavailable_reason`` / ``power_scope``."""
    scope = None
    if source is not None:
        scope = "whole board (tegrastats input rail)" if source.name.startswith("tegrastats") else "CPU packages"
        scope += ", every process on it: the load generator and the server alike"
    return {
        "power_source": source.name if source is not None else None,
        "power_unavailable_reason": reason,
        "power_scope": scope,
    }


def energy_entry(result: Energy | Unmeasured, inferences: int) -> dict[str, Any]:
    """A scenario's ``energy``: the measured window's figures per ``inferences`` (samples inferred)."""
    entry = result.as_dict(inferences)
    entry["inferences"] = inferences
    return entry


def per_inference_text(energy: dict[str, Any] | None) -> str:
    """``J/inf`` for a table: the figure, or ``n/a``."""
    value = (energy or {}).get("joules_per_inference")
    return f"{value:.4g}" if isinstance(value, (int, float)) else NOT_AVAILABLE


def watts_text(energy: dict[str, Any] | None) -> str:
    """``W`` for a table: the average, or ``n/a``."""
    value = (energy or {}).get("watts_avg")
    return f"{value:.3g}" if isinstance(value, (int, float)) else NOT_AVAILABLE


def unavailable_line(report: dict[str, Any]) -> str | None:
    """``energy: n/a (no power source: ...)`` when the report's run had no power source."""
    reason = report.get("power_unavailable_reason")
    if reason:
        return f"energy: {NOT_AVAILABLE} ({reason})"
    if report.get("power_source"):
        return f"energy: measured by {report['power_source']} ({report.get('power_scope')})"
    return None
