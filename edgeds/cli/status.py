"""``edgeds status``, ``edgeds rollback``, ``edgeds releases prune``: releases on a target's devices."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from ._output import JSON_OPTION, console, emit, table

releases_app = typer.Typer(help="Releases kept on the devices.", no_args_is_help=True)


def status(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Per host: current and previous release, model version, pending activation, agent health."""
    from ..deploy.fleet import each_host

    data = each_host(target, hosts, "status")

    def human() -> None:
        rows = []
        for host, st in data.items():
            if st.get("status") == "error":
                rows.append([host, "-", "-", "-", "-", "-", escape(st["error"])])
                continue
            cur, prev, agent = st.get("current") or {}, st.get("previous") or {}, st.get("agent") or {}
            health = "ready" if agent.get("ready") else (agent.get("state") or "not running")
            opened = cur.get("opened") or {}
            notes = [] if st.get("consistent") else ["pending activation"]
            if opened.get("fallback"):
                notes.append(f"fallback: {opened['fallback']}")
            if agent.get("state") == "failed" and agent.get("error"):
                notes.append(f"load failed: {agent['error']}")
            rows.append(
                [
                    host,
                    cur.get("id", "-"),
                    f"{cur.get('model', '-')} {cur.get('model_version', '')}",
                    escape(_runs_on(opened) or "-"),
                    prev.get("id", "-"),
                    health,
                    escape("; ".join(notes)),
                ]
            )
        console.print(table("Status", ["host", "current", "model", "runs on", "previous", "agent", "note"], rows))

    emit(data, as_json, human)
    if any(st.get("status") == "error" for st in data.values()):
        raise typer.Exit(1)


def _runs_on(opened: dict[str, Any]) -> str:
    """``onnxruntime fp32 on CPUExecutionProvider`` from a device's ``opened`` record ('' when none)."""
    if not opened:
        return ""
    where = opened.get("device") or opened.get("delegate")
    engine = f" engine {opened['engine']}" if opened.get("engine") else ""
    return (
        f"{opened.get('runtime', '')} {opened.get('precision') or ''}".strip()
        + (f" on {where}" if where else "")
        + engine
    )


def rollback(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    to: str | None = typer.Option(None, "--to", help="Release id (default: the previous committed release)."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Switch back to the previous (or --to) release on each host and reload the agent."""
    from ..deploy.fleet import each_host

    data = each_host(target, hosts, "rollback", {"to": to} if to else {})

    def human() -> None:
        rows = [
            [h, r.get("status"), r.get("release", ""), escape(str(r.get("message") or r.get("error") or ""))]
            for h, r in data.items()
        ]
        console.print(table("Rollback", ["host", "status", "release", "message"], rows))

    emit(data, as_json, human)
    if any(r.get("status") != "SUCCEEDED" for r in data.values()):
        raise typer.Exit(1)


@releases_app.command("prune")
def prune(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    keep: int = typer.Option(3, "--keep", min=1, help="Newest releases to keep (current/previous always kept)."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Delete old releases and the objects nothing references any more."""
    from ..deploy.fleet import each_host

    data = each_host(target, hosts, "prune", {"keep": keep})

    def human() -> None:
        rows = [
            [
                h,
                len(r.get("removed", [])),
                len(r.get("kept", [])),
                r.get("objects_removed", ""),
                escape(str(r.get("error", ""))),
            ]
            for h, r in data.items()
        ]
        console.print(table("Prune", ["host", "releases removed", "kept", "objects removed", "error"], rows))

    emit(data, as_json, human)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("rollback")(rollback)
    app.add_typer(releases_app, name="releases")
