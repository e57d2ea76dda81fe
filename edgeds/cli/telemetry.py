"""``edgeds telemetry export``: telemetry to JSONL or CSV, from a live subscription or a capture."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

import typer

from ._output import JSON_OPTION, console_err

_OUTPUT = typer.Option(None, "--output", "-o", help="File to write (default stdout).")
_INPUT = typer.Option(None, "--input", "-i", help="Read a JSONL capture instead of a broker.")

telemetry_app = typer.Typer(help="Telemetry tools: export what devices publish.", no_args_is_help=True)


@telemetry_app.command("export")
def export(
    target: str | None = typer.Option(None, "--target", "-t", help="Target name or YAML path to subscribe to."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl or csv."),
    duration: float = typer.Option(10.0, "--duration", "-d", min=0.1, help="Seconds to listen."),
    output: Path | None = _OUTPUT,
    capture: Path | None = _INPUT,
    device: str = typer.Option("+", "--device", help="Only this device id (default all)."),
    dedupe: bool = typer.Option(True, "--dedupe/--no-dedupe", help="Drop repeats of (device_id, boot_id, seq)."),
    url: str | None = typer.Option(None, "--url", help="Override the target's broker URL."),
    protocol: str | None = typer.Option(None, "--protocol", help="Override the MQTT protocol: 5 or 3.1.1."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write every telemetry, deploy, inspection and status message as JSONL (one envelope per line,
    with its topic) or CSV (envelope columns, then flattened payload.* columns).

    With --target, subscribes for --duration seconds; with --input, converts a JSONL capture.
    --json prints a summary (counts) on stdout when --output is a file.
    """
    from ..errors import TelemetryError
    from ..telemetry import export as lib

    if fmt not in ("jsonl", "csv"):
        raise TelemetryError(f"--format must be jsonl or csv, got {fmt!r}")
    if (target is None) == (capture is None):
        raise TelemetryError("give exactly one of --target (live subscription) or --input (a JSONL capture)")
    if capture is not None:
        got = lib.read_capture(capture, dedupe=dedupe)
    else:
        assert target is not None
        got = lib.subscribe(target, duration_s=duration, device=device, dedupe=dedupe, url=url, protocol=protocol)

    out: TextIO = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        lib.write_records(got.records, "csv" if fmt == "csv" else "jsonl", out)
    finally:
        if output:
            out.close()
    summary = {
        "messages": len(got.records),
        "duplicates": got.duplicates,
        "malformed": got.malformed,
        "format": fmt,
        "output": str(output) if output else None,
    }
    if output and as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    elif output:
        console_err.print(f"wrote {len(got.records)} message(s) to {output} ({got.duplicates} duplicate(s) dropped)")


def register(app: typer.Typer) -> None:
    app.add_typer(telemetry_app, name="telemetry")
