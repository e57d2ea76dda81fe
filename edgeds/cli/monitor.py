"""``edgeds monitor``: a live table of a target's devices from their MQTT telemetry."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any, cast

import typer

from ._output import JSON_OPTION, console, table


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

    from ..config import load_target
    from ..errors import TelemetryError
    from ..telemetry.mqtt import Message, MqttSubscriber, Protocol, resolve_settings
    from ..telemetry.view import COLUMNS, FleetView

    if protocol not in (None, "5", "3.1.1"):
        raise TelemetryError(f"--protocol must be 5 or 3.1.1, got {protocol!r}")
    cfg = load_target(target).mqtt
    settings = resolve_settings(cfg, url=url, protocol=cast(Protocol | None, protocol))
    view = FleetView(cfg.prefix)
    lock = threading.Lock()
    stream = as_json and not once

    done = threading.Event()

    def on_message(msg: Message) -> None:
        with lock:
            row = view.update(msg.topic, msg.payload)
            if stream and row is not None and not done.is_set():
                try:
                    sys.stdout.write(json.dumps(row.as_dict()) + "\n")
                    sys.stdout.flush()
                except (BrokenPipeError, ValueError):  # the reader went away (| head)
                    done.set()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        done.set()

    with contextlib.suppress(ValueError):  # only possible from the main thread
        signal.signal(signal.SIGTERM, on_sigterm)

    topics = [f"{cfg.prefix}/+/status", f"{cfg.prefix}/+/telemetry", f"{cfg.prefix}/+/deploy/#"]
    sub = MqttSubscriber(settings, topics, on_message).start(wait_s=10.0)

    def render() -> Any:
        with lock:
            return table(f"{target} · {settings.url}", COLUMNS, view.table_rows())

    try:
        if once:
            time.sleep(wait)
            with lock:
                rows = [r.as_dict() for r in sorted(view.rows.values(), key=lambda r: r.device)]
            if as_json:
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
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
        sub.stop()


def register(app: typer.Typer) -> None:
    app.command("monitor")(monitor)
