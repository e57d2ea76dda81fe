"""``edgeds device setup|probe``: prepare devices (agent environment, publisher key, service)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, console_err, emit, table

device_app = typer.Typer(help="Prepare and inspect devices of a target.", no_args_is_help=True)


@device_app.command("setup")
def setup(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    public_key: Annotated[
        Path | None, typer.Option("--public-key", help="Bundle publisher key (PEM) to trust.")
    ] = None,
    wheelhouse: Annotated[
        Path | None,
        typer.Option("--wheelhouse", help="Directory of wheels to install offline (devices without a package index)."),
    ] = None,
    python: str | None = typer.Option(
        None,
        "--python",
        help="Use this interpreter on the device instead of creating a venv (sim rigs sharing packages).",
    ),
    no_start: bool = typer.Option(False, "--no-start", help="Install, but do not start the agent service."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Probe each device, install the agent (wheel + venv), trust the publisher key, start the service.

    Hosts run in parallel (the target's rollout.parallelism). Idempotent: re-running updates the
    environment and leaves a running agent running.
    """
    from ..deploy.fleet import setup_hosts

    def note(host: str, event: str, data: dict[str, Any]) -> None:
        console_err.print(f"{host}: {event} {data if data else ''}")

    results = setup_hosts(
        target,
        hosts,
        public_key=public_key.read_bytes() if public_key else None,
        python=python,
        wheelhouse=wheelhouse,
        start_agent=not no_start,
        progress=note,
    )

    def human() -> None:
        rows = [
            [
                r.host,
                "ok" if r.ok else "FAILED",
                r.probe.get("arch", ""),
                r.probe.get("python", ""),
                r.environment,
                r.service,
                f"{r.installed_seconds:.1f}",
                r.message,
            ]
            for r in results
        ]
        console.print(
            table(
                "Device setup",
                ["host", "result", "arch", "python", "environment", "service", "time s", "message"],
                rows,
            )
        )
        for r in results:
            if r.agent_user:
                console.print(f"{r.host}: the agent runs as {r.agent_user}")
            for line in r.secrets:
                console.print(f"{r.host}: installed {line}")

    emit(results, as_json, human)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@device_app.command("probe")
def probe(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Arch, OS, Python, disk, memory, importable backends, GPU/TensorRT/JetPack of each device."""
    from ..deploy.fleet import probe_hosts

    out = probe_hosts(target, hosts)

    def human() -> None:
        rows = [
            [
                name,
                p["arch"],
                p["os"],
                p["python"],
                p["memory_mb"],
                p["disk_free_mb"],
                ", ".join(b for b, ok in p["backends"].items() if ok),
                p.get("gpu") or "-",
                p.get("jetpack_l4t") or "-",
            ]
            for name, p in out.items()
        ]
        console.print(
            table(
                "Devices",
                ["host", "arch", "os", "python", "mem MiB", "free disk MiB", "backends", "gpu", "jetpack"],
                rows,
            )
        )

    emit(out, as_json, human)


@device_app.command("stop")
def stop(
    target: str = typer.Option("local", "--target", "-t", help="A target reached without SSH (local)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Stop the agent this machine runs for a local target (started by `deploy --target local`);
    the installed releases stay, and the next deploy starts it again."""
    from ..deploy.local_agent import stop_local_agent
    from ..deploy.targets import host_plans, resolve_target
    from ..errors import DeployError

    resolved, path = resolve_target(target)
    if not resolved.local:
        raise DeployError(f"target {resolved.name!r} is reached over SSH: stop its agent on the device (systemctl)")
    stopped = {plan.host.name: stop_local_agent(plan) for plan in host_plans(resolved, path)}
    emit(
        stopped,
        as_json,
        lambda: console.print(", ".join(f"{h}: {'stopped' if ok else 'still running'}" for h, ok in stopped.items())),
    )
    if not all(stopped.values()):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(device_app, name="device")
