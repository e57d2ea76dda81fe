"""The HIL report: ``report.json`` (machines), ``report.md`` (people), PNG plots (matplotlib, Agg).

Plots: ``latency-cdf.png`` (request latency CDF per device), ``throughput.png`` (completed
requests/s per 0.25 s bin per device), ``temperature.png`` (hottest sensor per telemetry report;
a placeholder text when no device reported a temperature). Every expectation is one row with its
bound and the measured value; ``passed`` None means "not measured" and does not fail the run. The
performance table gives each device's joules per inference and watts from its telemetry's power
section (:mod:`.power`), or "n/a" and the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..bench.energy import NOT_AVAILABLE, per_inference_text, watts_text
from .runner import RunResult

PLOTS = ("latency-cdf.png", "throughput.png", "temperature.png")


def to_dict(result: RunResult) -> dict[str, Any]:
    data = asdict(result)
    data["passed"] = result.passed
    data["failed"] = [f"{c.device}: {c.name}" for c in result.checks if c.passed is False]
    return data


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed else ("n/a" if passed is None else "FAIL")


def markdown(result: RunResult) -> str:
    lines = [
        f"# HIL run on rig `{result.rig}`: {'PASS' if result.passed else 'FAIL'}",
        "",
        f"Suites: {', '.join(result.suites)} · {result.seconds:.1f} s · {len(result.devices)} device(s)",
        "",
        "| check | device | bound | measured | result | note |",
        "|---|---|---|---|---|---|",
    ]
    for c in result.checks:
        measured = json.dumps(c.measured) if isinstance(c.measured, dict) else str(c.measured)
        lines.append(f"| {c.name} | {c.device} | {c.bound} | {measured} | {_verdict(c.passed)} | {c.note} |")
    lines += [
        "",
        "## Performance",
        "",
        "| device | samples/s | p50 ms | p99 ms | errors | J/inf | W | power source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reasons: list[str] = []
    for name, info in result.devices.items():
        perf = info.get("perf") or {}
        energy = info.get("energy")
        source = (energy or {}).get("source") or NOT_AVAILABLE
        lines.append(
            f"| {name} | {perf.get('samples_per_s', '-')} | {perf.get('p50_ms', '-')} | "
            f"{perf.get('p99_ms', '-')} | {perf.get('errors', '-')} | {per_inference_text(energy)} | "
            f"{watts_text(energy)} | {source} |"
        )
        if energy and energy.get("unavailable_reason"):
            reasons.append(f"- {name}: energy {NOT_AVAILABLE} ({energy['unavailable_reason']})")
    if reasons:
        lines += ["", *reasons]
    lines += [
        "",
        "J/inf: the device's average watts over the perf window (its own telemetry) divided by the "
        "samples per second served; never estimated.",
    ]
    lines += ["", "Plots: " + ", ".join(f"![{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def plots(result: RunResult, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    fig, ax = plt.subplots(figsize=(7, 4))
    for device, lat in sorted(result.latencies_ms.items()):
        values = np.sort(np.asarray(lat))
        ax.plot(values, np.arange(1, len(values) + 1) / max(len(values), 1), label=f"{device} (n={len(values)})")
    ax.set(xlabel="latency (ms)", ylabel="fraction of requests", title="Request latency CDF through the agent")
    ax.grid(True, alpha=0.3)
    if result.latencies_ms:
        ax.legend()
    save(fig, PLOTS[0])

    def over_time(data: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str, title: str) -> Any:
        """One line per device of (seconds, value) samples."""
        fig, ax = plt.subplots(figsize=(7, 4))
        for device, series in sorted(data.items()):
            ax.plot([t for t, _ in series], [v for _, v in series], marker=".", label=device)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        ax.grid(True, alpha=0.3)
        if data:
            ax.legend()
        return fig, ax

    fig, _ = over_time(result.throughput, "time since perf start (s)", "requests/s", "Throughput over time")
    save(fig, PLOTS[1])
    fig, ax = over_time(result.temperature, "time since run start (s)", "°C", "Hottest sensor over time (telemetry)")
    if not result.temperature:
        ax.text(0.5, 0.5, "no device reported a temperature sensor", ha="center", va="center", transform=ax.transAxes)
    save(fig, PLOTS[2])
    return written


def write_report(result: RunResult, out: Path) -> dict[str, Path]:
    """Write report.json, report.md and the plots into ``out``; returns their paths by kind."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(json.dumps(to_dict(result), indent=2, default=str))
    md_path.write_text(markdown(result))
    files = {"json": json_path, "markdown": md_path}
    for path in plots(result, out):
        files[path.stem] = path
    return files
