"""``edgeds telemetry export``: telemetry to JSONL or CSV, from a live subscription or a capture."""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO, cast

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
    from ..telemetry.envelope import Envelope, decode
    from ..telemetry.view import Deduper, csv_columns, flatten, record

    if fmt not in ("jsonl", "csv"):
        raise TelemetryError(f"--format must be jsonl or csv, got {fmt!r}")
    if (target is None) == (capture is None):
        raise TelemetryError("give exactly one of --target (live subscription) or --input (a JSONL capture)")
    records: list[dict[str, Any]] = []
    dedup = Deduper()
    malformed = 0

    def take(topic: str, env: Envelope) -> None:
        if not dedupe or dedup.first(env):
            records.append(record(topic, env))

    if capture is not None:
        try:
            lines = capture.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise TelemetryError(f"cannot read capture {capture}: {exc.strerror}") from exc
        for line in lines:
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                take(str(raw.pop("topic", "")), Envelope.model_validate(raw))
            except (ValueError, TypeError):
                malformed += 1
    else:
        from ..config import load_target
        from ..telemetry.mqtt import Message, MqttSubscriber, Protocol, resolve_settings

        cfg = load_target(cast(str, target)).mqtt
        settings = resolve_settings(cfg, url=url, protocol=cast("Protocol | None", protocol))
        lock = threading.Lock()

        def on_message(msg: Message) -> None:
            nonlocal malformed
            try:
                env = decode(msg.payload)
            except TelemetryError:
                malformed += 1
                return
            with lock:
                take(msg.topic, env)

        with MqttSubscriber(settings, [f"{cfg.prefix}/{device}/#"], on_message).start(wait_s=10.0):
            time.sleep(duration)
        with lock:
            records = list(records)

    out: TextIO = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "jsonl":
            for rec in records:
                out.write(json.dumps(rec, separators=(",", ":")) + "\n")
        else:
            rows = [flatten(r) for r in records]
            writer = csv.DictWriter(out, fieldnames=csv_columns(rows), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    finally:
        if output:
            out.close()
    summary = {
        "messages": len(records),
        "duplicates": dedup.duplicates,
        "malformed": malformed,
        "format": fmt,
        "output": str(output) if output else None,
    }
    if output and as_json:
        sys.stdout.write(json.dumps(summary) + "\n")
    elif output:
        console_err.print(f"wrote {len(records)} message(s) to {output} ({dedup.duplicates} duplicate(s) dropped)")


def register(app: typer.Typer) -> None:
    app.add_typer(telemetry_app, name="telemetry")
