"""``edgeds enroll --target T``: fetch each device's SSH host key, show it, pin it in known_hosts."""

from __future__ import annotations

from typing import Annotated, Any

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
    from ..deploy.ssh import fetch_host_key, pin_host_key, pinned_keys
    from ..deploy.targets import host_plans, resolve_target
    from ..errors import HostKeyError

    loaded, path = resolve_target(target)
    rows: list[dict[str, Any]] = []
    for plan in host_plans(loaded, path, hosts or None):
        endpoint = plan.endpoint
        key = fetch_host_key(endpoint.address, endpoint.port, endpoint.connect_timeout_s)
        pinned = [k for k in pinned_keys(endpoint.known_hosts, key.host_id) if k.key_type == key.key_type]
        if pinned and pinned[0].base64 != key.base64:
            raise HostKeyError(
                f"{plan.host.name} ({key.host_id}): HOST KEY CHANGED! presents {key.fingerprint}, "
                f"{endpoint.known_hosts} pins {pinned[0].fingerprint}. Possible man-in-the-middle: refusing."
            )
        if not pinned and not yes:
            console.print(f"{plan.host.name} ({key.host_id}) presents {key.key_type} {key.fingerprint}")
            if not typer.confirm("Pin this key?", default=False):
                rows.append({"host": plan.host.name, "fingerprint": key.fingerprint, "result": "skipped"})
                continue
        added = pin_host_key(endpoint.known_hosts, key)
        rows.append(
            {
                "host": plan.host.name,
                "address": key.host_id,
                "key_type": key.key_type,
                "fingerprint": key.fingerprint,
                "result": "pinned" if added else "already pinned",
                "known_hosts": str(endpoint.known_hosts),
            }
        )

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
