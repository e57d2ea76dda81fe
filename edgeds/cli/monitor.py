"""``edgeds monitor``: a live table of a target's devices from their MQTT telemetry."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import typer

from ._output import JSON_OPTION, console, table

if TYPE_CHECKING:
    from ..telemetry.view import DeviceRow


def monitor(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path (its mqtt section)."),
    once: bool = typer.Option(False, "--once", help="Listen for --wait seconds, print once, exit."),
    wait: float = typer.Option(3.0, "--wait", min=0.1, help="Seconds to listen with --once."),
    url: str | None = typer.Option(None, "--url", help="Override the target's broker URL."),
    protocol: str | None = typer.Option(None, "--protocol", help="Override the MQTT protocol: 5 or 3.1.1."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show each device: online/offline, model version, fps, p99, CPU, memory, temperature, spool depth.

    Live (refreshing) by default; --json streams one JSON line per device update instead, and
    --once --json prints one JSON array of device rows.
    """
    from rich.live import Live

    from ..telemetry.view import COLUMNS
    from ..telemetry.watch import FleetWatch

    stream = as_json and not once
    done = threading.Event()

    def on_row(row: DeviceRow) -> None:
        if stream and not done.is_set():
            try:
                sys.stdout.write(json.dumps(row.as_dict()) + "\n")
                sys.stdout.flush()
            except (BrokenPipeError, ValueError):  # the reader went away (| head)
                done.set()

    watch = FleetWatch(target, url=url, protocol=protocol, on_row=on_row)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        done.set()

    with contextlib.suppress(ValueError):  # only possible from the main thread
        signal.signal(signal.SIGTERM, on_sigterm)

    watch.start(wait_s=10.0)

    def render() -> Any:
        return table(f"{target} · {watch.settings.url}", COLUMNS, watch.table_rows())

    try:
        if once:
            time.sleep(wait)
            if as_json:
                sys.stdout.write(json.dumps(watch.rows(), indent=2) + "\n")
            else:
                console.print(render())
        elif stream:
            done.wait()
        else:
            with Live(render(), console=console, refresh_per_second=2) as live:
                while not done.wait(0.5):
                    live.update(render())
    except KeyboardInterrupt:
        pass
    finally:
        watch.stop()


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
