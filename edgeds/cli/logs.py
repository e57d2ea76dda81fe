"""``edgeds logs --target T [--host H] [--follow] [--lines N]``: the agent's log from a device."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from ._output import JSON_OPTION, console_err, emit


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def logs(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing lines as they come (Ctrl-C ends)."),
    lines: int = typer.Option(100, "--lines", "-n", min=0, help="How many of the last lines to show first."),
    mqtt: bool = typer.Option(
        False, "--mqtt", help="Read the lines the agents publish to the target's broker (from now on), not over SSH."
    ),
    wait: float | None = typer.Option(None, "--wait", min=0.1, help="With --mqtt: stop after this many seconds."),
    as_json: bool = JSON_OPTION,
) -> None:
    """The agent's log (<install_dir>/logs/agent.log, or the journal of its systemd unit).

    Over SSH for remote devices, directly for the local target. Several hosts are shown one after
    another, each under a `==> host <==` line; --follow reads one host. Exit code 1 when a host
    of several could not be read. --mqtt prints, as they arrive, the lines every agent (or the
    --host ones) publishes on <prefix>/<device>/log, each after its host; --json one JSON object
    a line.
    """
    from ..deploy.logs import follow_log, read_logs

    if mqtt:
        if follow:
            raise typer.BadParameter("--mqtt already prints lines as they come; drop --follow", param_hint="--follow")
        _from_broker(target, hosts or [], wait, as_json)
        return
    if wait is not None:
        raise typer.BadParameter("--wait goes with --mqtt", param_hint="--wait")

    if follow:
        if as_json:
            raise typer.BadParameter("--json shows the last lines once; it cannot --follow", param_hint="--json")
        if hosts and len(hosts) > 1:
            raise typer.BadParameter("--follow reads one host", param_hint="--host")
        try:
            follow_log(target, hosts[0] if hosts else None, _write, lines=lines)
        except KeyboardInterrupt:  # Ctrl-C is how a follow ends: the reader on the device is stopped
            return
        return
    data = read_logs(target, hosts, lines)
    if len(data) == 1:
        (only,) = data.values()
        if isinstance(only, Exception):
            raise only  # one host: its one-line error (exit 2)
    errors = {host: str(value) for host, value in data.items() if isinstance(value, Exception)}

    def human() -> None:
        for host, value in data.items():
            if len(data) > 1:
                _write(f"==> {host} <==\n".encode())
            if isinstance(value, Exception):
                console_err.print(f"[bold red]error:[/] {escape(str(value))}", soft_wrap=True)
            else:
                _write(value.encode())

    out = {
        host: ({"status": "error", "error": str(value)} if isinstance(value, Exception) else {"log": value})
        for host, value in data.items()
    }
    emit(out, as_json, human)
    if errors:
        raise typer.Exit(1)


def _from_broker(target: str, hosts: list[str], wait: float | None, as_json: bool) -> None:
    import json
    import threading

    from ..telemetry.log_watch import LogWatch

    done = threading.Event()

    def on_line(host: str, line: str) -> None:
        text = json.dumps({"host": host, "line": line}) if as_json else f"{host}: {line}"
        try:
            _write((text + "\n").encode())
        except (BrokenPipeError, ValueError):  # the reader went away (| head)
            done.set()

    if hosts:
        from ..deploy.targets import resolve_target

        loaded, _ = resolve_target(target)
        known = [h.name for h in loaded.hosts]
        unknown = [h for h in hosts if h not in known]
        if unknown:
            raise typer.BadParameter(f"no host {unknown[0]!r} in the target (it has {', '.join(known)})")
    watch = LogWatch(target, on_line, hosts=hosts).start()
    try:
        done.wait(wait)
    except KeyboardInterrupt:  # Ctrl-C is how it ends without --wait
        pass
    finally:
        watch.stop()


def register(app: typer.Typer) -> None:
    app.command("logs")(logs)
