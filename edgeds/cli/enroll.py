"""``edgeds enroll --target T``: fetch each device's SSH host key, show it, pin it in known_hosts."""

from __future__ import annotations

from typing import Annotated

import typer

from ._output import JSON_OPTION, console, emit, table


def enroll(
    target: str = typer.Option(..., "--target", "-t", help="Target name or YAML path."),
    hosts: Annotated[list[str] | None, typer.Option("--host", help="Only these hosts (repeatable).")] = None,
    yes: bool = typer.Option(False, "--yes", "-y", help="Pin without asking (you checked the fingerprints)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Pin each host's SSH key into the target's known_hosts (trust on first use, after you confirm).

    A key that differs from the pinned one is refused loudly (exit 2) and never replaced:
    remove the old line by hand if the device was really reinstalled.
    """
    from ..deploy.enroll import enroll_hosts
    from ..deploy.ssh import HostKey

    def confirm(host: str, key: HostKey) -> bool:
        console.print(f"{host} ({key.host_id}) presents {key.key_type} {key.fingerprint}")
        return typer.confirm("Pin this key?", default=False)

    enrolled = enroll_hosts(target, hosts, None if yes else confirm)
    rows = [e.as_dict() for e in enrolled]

    def human() -> None:
        console.print(
            table(
                "Host keys",
                ["host", "address", "fingerprint", "result"],
                [[r["host"], r.get("address", ""), r["fingerprint"], r["result"]] for r in rows],
            )
        )

    emit(rows, as_json, human)


def register(app: typer.Typer) -> None:
    app.command("enroll")(enroll)
