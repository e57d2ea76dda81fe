"""``edgeds doctor``: which backends work here, and how to install the missing ones."""

from __future__ import annotations

import typer
from rich.markup import escape

from ._output import JSON_OPTION, console, emit, table


def doctor(as_json: bool = JSON_OPTION) -> None:
    """Show Python, platform, each backend (available or not, why, how to install, version, devices) and
    toolchain, and which hardware paths this build was not verified on."""
    from ..doctor import diagnose

    report = diagnose()

    def human() -> None:
        console.print(
            f"edgeds {report.edgeds_version} · Python {report.python} · {report.platform} · "
            f"{report.cpu_count} CPUs · local profile: [bold]{report.local_profile}[/]"
        )
        rows = [
            [
                b.name,
                "[green]yes[/]" if b.available else "[red]no[/]",
                b.version or "-",
                ", ".join(b.devices) or "-",
                "" if b.available else escape(f"{b.reason} → {b.hint}"),
            ]
            for b in report.backends
        ]
        console.print(table("Backends", ["backend", "available", "version", "devices", "reason / install"], rows))
        lms = [
            [
                b.name,
                "[green]yes[/]" if b.available else "[red]no[/]",
                b.version or "-",
                ", ".join(b.devices) or "-",
                "" if b.available else escape(f"{b.reason} → {b.hint}"),
            ]
            for b in report.lm_runtimes
        ]
        console.print(table("LM runtimes", ["runtime", "available", "version", "batching", "reason / install"], lms))
        tools = [
            [
                t.name,
                "[green]yes[/]" if t.available else "[red]no[/]",
                t.version or "-",
                "" if t.available else escape(f"{t.reason} → {t.hint}"),
            ]
            for t in report.toolchains
        ]
        console.print(table("Toolchains", ["toolchain", "installed", "version", "reason / install"], tools))
        hardware = [
            [h.name, "[green]yes[/]" if h.verified else "[yellow]no[/]", escape(f"{h.note} → check: {h.check}")]
            for h in report.hardware
        ]
        console.print(table("Verified on hardware", ["path", "verified", "note / how to check"], hardware))
        console.print(f"power source (J/inf, W in bench and HIL): {escape(report.power)}")

    emit(report, as_json, human)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
