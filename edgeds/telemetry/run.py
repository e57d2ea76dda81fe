"""A telemetry-only process: ``python -m edgeds.telemetry.run --target T --device-id D``.

Publishes host metrics (plus a ``tick`` counter) at ``--rate`` Hz through a
:class:`~edgeds.telemetry.publisher.TelemetryPublisher` with its own spool, until SIGTERM /
SIGINT (clean shutdown: ``offline`` published) or ``--duration`` seconds. Used by the telemetry
integration tests (which kill it with -9) and as the smallest example of embedding the publisher.
Prints one JSON line ``{"event": "started", ...}`` on stdout once running and
``{"event": "stopped", ...}`` at exit.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from .._version import __version__
from ..config import load_target
from ..errors import EdgedsError
from .publisher import TelemetryPublisher


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgeds.telemetry.run", description=__doc__.split("\n")[0])
    parser.add_argument("--target", required=True, help="target name or YAML path (its mqtt section is used)")
    parser.add_argument("--device-id", required=True)
    parser.add_argument("--spool", type=Path, default=None, help="spool file (default ./<device>-spool.db)")
    parser.add_argument("--rate", type=float, default=None, help="samples per second (default: target's interval)")
    parser.add_argument("--url", default=None, help="override the target's broker URL")
    parser.add_argument("--protocol", choices=["5", "3.1.1"], default=None)
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--reconnect-max", type=float, default=10.0, help="max reconnect backoff, seconds")
    parser.add_argument("--no-host-metrics", action="store_true", help="send only the tick counter")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ticks = [0]

    def source() -> dict[str, Any]:
        ticks[0] += 1
        return {"tick": ticks[0]}

    try:
        target = load_target(args.target)
        publisher = TelemetryPublisher(
            target.mqtt,
            args.device_id,
            args.spool or Path(f"{args.device_id}-spool.db"),
            __version__,
            metrics_source=source,
            url=args.url,
            protocol=args.protocol,
            interval_s=1.0 / args.rate if args.rate else None,
            host_metrics=not args.no_host_metrics,
            reconnect_max_s=args.reconnect_max,
        ).start()
    except EdgedsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"event": "started", **publisher.stats()}), flush=True)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        stop.wait(0.1)
    publisher.stop()
    print(json.dumps({"event": "stopped", **publisher.stats()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
