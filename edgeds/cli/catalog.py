"""``edgeds profiles`` and ``edgeds targets``: what is shipped and configured."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from ._output import JSON_OPTION, console, console_err, emit, print_yaml, table, to_jsonable

if TYPE_CHECKING:
    from ..config import Unloadable

profiles_app = typer.Typer(
    help="List and show device profiles (shipped, ./profiles, $EDGEDS_PROFILES).", no_args_is_help=True
)
targets_app = typer.Typer(
    help="List and show deploy targets (shipped, ./targets, $EDGEDS_TARGETS).", no_args_is_help=True
)


@profiles_app.command("list")
def profiles_list(as_json: bool = JSON_OPTION) -> None:
    """List every profile on the search path with its backend chain; a file that does not load
    is reported (stderr; ``errors`` in JSON) and the rest are listed."""
    from .. import config

    profiles, broken = config.scan_profiles()
    paths = config.list_profiles()
    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "description": profile.description,
            "chain": [f"{b}:{p}" for b, p, _ in profile.chain()],
            "max_batch_size": profile.batching.max_batch_size,
            "memory_budget_mb": profile.memory.budget_mb,
            "path": str(paths[name]),
        }
        for name, profile in profiles.items()
    ]

    def human() -> None:
        console.print(
            table(
                "Profiles",
                ["name", "backend chain", "max batch", "memory MiB", "description"],
                [
                    [r["name"], " → ".join(r["chain"]), r["max_batch_size"], r["memory_budget_mb"], r["description"]]
                    for r in rows
                ],
            )
        )
        _report_unloadable("profile", broken)

    emit({"profiles": rows, "errors": _unloadable_json(broken)}, as_json, human)


@profiles_app.command("show")
def profiles_show(name: str = typer.Argument(..., help="Profile name or path."), as_json: bool = JSON_OPTION) -> None:
    """Show one profile with ``extends:`` resolved."""
    import yaml

    from .. import config

    profile = config.load_profile(name)
    data = to_jsonable(profile)
    emit(data, as_json, lambda: print_yaml(yaml.safe_dump(data, sort_keys=False)))


@targets_app.command("list")
def targets_list(as_json: bool = JSON_OPTION) -> None:
    """List every target on the search path (plus the embedded ``local``); a file that does not
    load is reported (stderr; ``errors`` in JSON) and the rest are listed."""
    from .. import config

    targets, broken = config.scan_targets()
    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "profile": t.profile,
            "local": t.local,
            "hosts": [f"{h.name}={h.address}:{h.port}" for h in t.hosts],
            "broker": t.mqtt.url or "embedded",
            "description": t.description,
        }
        for t in targets
    ]

    def human() -> None:
        console.print(
            table(
                "Targets",
                ["name", "profile", "hosts", "broker", "description"],
                [[r["name"], r["profile"], len(r["hosts"]) or "local", r["broker"], r["description"]] for r in rows],
            )
        )
        _report_unloadable("target", broken)

    emit({"targets": rows, "errors": _unloadable_json(broken)}, as_json, human)


@targets_app.command("show")
def targets_show(name: str = typer.Argument(..., help="Target name or path."), as_json: bool = JSON_OPTION) -> None:
    """Show one target, with the profile it resolves to."""
    import yaml

    from .. import config

    target = config.load_target(name)
    data = to_jsonable(target)
    data["resolved_profile"] = config.resolve_target_profile(target).name
    emit(data, as_json, lambda: print_yaml(yaml.safe_dump(data, sort_keys=False)))


def _unloadable_json(broken: list[Unloadable]) -> list[dict[str, Any]]:
    return [{"name": b.name, "path": str(b.path), "problems": str(b.error).splitlines()} for b in broken]


def _report_unloadable(kind: str, broken: list[Unloadable]) -> None:
    """One stderr line for each file that did not load: its first ``file:line: field: message``
    and, when it has more, how many and the command that shows them all."""
    for item in broken:
        first, *rest = str(item.error).splitlines() or [""]
        more = f" (and {len(rest)} more: edgeds {kind}s show {item.name})" if rest else ""
        console_err.print(f"[bold red]error:[/] {kind} {item.name!r} not listed: {escape(first)}{more}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
    app.add_typer(targets_app, name="targets")
