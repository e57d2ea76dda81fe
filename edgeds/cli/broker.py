"""``edgeds broker``: the embedded MQTT broker (amqtt, MQTT 3.1.1) on loopback."""

from __future__ import annotations

import json
import sys
import threading

import typer

from ._output import JSON_OPTION, console_err


def broker(
    host: str = typer.Option("127.0.0.1", help="Loopback address to listen on."),
    port: int = typer.Option(1883, min=1, max=65535, help="TCP port."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the embedded MQTT broker in the foreground (Ctrl-C stops it).

    The `local` target's telemetry goes here when its mqtt.url is unset. MQTT 3.1.1 only,
    anonymous, in-memory, loopback only: point real fleets at mosquitto (docs/telemetry.md).
    """
    from ..telemetry.broker import serve

    ready = threading.Event()
    url = f"mqtt://{host}:{port}"

    def announce() -> None:
        ready.wait()
        if as_json:
            sys.stdout.write(json.dumps({"event": "listening", "url": url, "protocol": "3.1.1"}) + "\n")
            sys.stdout.flush()
        else:
            console_err.print(f"embedded MQTT broker (amqtt, MQTT 3.1.1) listening on {url} — Ctrl-C to stop")

    threading.Thread(target=announce, daemon=True).start()
    serve(host, port, ready=ready)


def register(app: typer.Typer) -> None:
    app.command("broker")(broker)
