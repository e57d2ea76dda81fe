"""The device's command line: ``python -m edgeds.deploy.device COMMAND --root <install_dir>``.

The host runs it over SSH (through :func:`.server.step_argv`) with a JSON request on stdin;
it writes ONE JSON result object on stdout and progress events (JSON lines ``{"event": ...}``)
on stderr (see :mod:`.protocol`). Exit code 0 whenever a result was written: the result says
whether the step worked. ``session`` answers several steps in one process, one request line and
one result line each; ``serve`` runs the step server the agent starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from ...errors import DeviceError, EdgedsError
from .admission import plan
from .probe import probe
from .protocol import Emit
from .server import serve
from .steps import apply, prune, rollback, status, trust
from .store import Store, recover

log = logging.getLogger(__name__)


COMMANDS: dict[str, Callable[[Store, dict[str, Any], Emit], dict[str, Any]]] = {
    "plan": plan,
    "apply": apply,
    "rollback": rollback,
    "prune": prune,
    "status": status,
    "trust": trust,
    "probe": lambda store, request, emit: probe(store.root),
    "recover": lambda store, request, emit: {"recovered": recover(store)},
}


def main(argv: list[str] | None = None) -> int:
    """``python -m edgeds.deploy.device COMMAND --root DIR [--json]`` with the request on stdin."""
    parser = argparse.ArgumentParser(prog="edgeds.deploy.device", description=main.__doc__)
    parser.add_argument("command", choices=[*sorted(COMMANDS), "session", "serve"])
    parser.add_argument("--root", required=True, help="install dir on the device")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.root, main)
    store = Store(args.root)

    def emit(event: str, data: dict[str, Any]) -> None:
        sys.stderr.write(json.dumps({"event": event, **data}) + "\n")
        sys.stderr.flush()

    def run(command: str, request: dict[str, Any]) -> None:
        # A step that raises still answers one result line, {"status": "error"}: the host raises
        # DeviceError for it, and a session goes on with its next request.
        step = COMMANDS.get(command)
        try:
            if step is None:
                raise DeviceError(f"unknown command {command!r} (known: {', '.join(sorted(COMMANDS))})")
            result = step(store, request, emit)
        except EdgedsError as exc:  # a refused request: unknown command, a trusted key that is no key, ...
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # a failure nobody planned for: reported the same way, traceback on stderr
            log.exception("device step %r failed", command)
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()

    if args.command == "session":
        # One process for several steps (saves an interpreter start per step): one JSON request
        # per line ``{"command": ..., "request": {...}}``, one JSON result line each, until EOF.
        for line in sys.stdin:
            if line.strip():
                message = json.loads(line)
                run(str(message.get("command")), dict(message.get("request") or {}))
        return 0
    raw = sys.stdin.read() if not sys.stdin.isatty() else ""
    run(args.command, json.loads(raw) if raw.strip() else {})
    return 0
