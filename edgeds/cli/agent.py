"""``edgeds agent``: the on-device process the service runs (serve ``current``, reload on SIGHUP)."""

from __future__ import annotations

import typer

from ._output import JSON_OPTION


def agent_command(
    root: str = typer.Option("~/edgeds", "--root", help="The device's install dir (holds current/, releases/)."),
    host: str | None = typer.Option(None, "--host", help="HTTP bind address (default: agent-config.json)."),
    port: int | None = typer.Option(
        None, "--port", min=1, max=65535, help="HTTP port (default: agent-config.json, else 8000)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Serve the current release over the Open Inference Protocol until SIGTERM; SIGHUP reloads.

    Writes run/agent.pid and run/agent.json under --root. Normally started by the service that
    `edgeds device setup` installs, not by hand. --json is accepted; the agent logs to stderr.
    """
    from ..agent import run_agent

    run_agent(root, host, port)


def register(app: typer.Typer) -> None:
    app.command("agent")(agent_command)
