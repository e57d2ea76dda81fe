"""``edgeds profiles`` and ``edgeds targets``: what is shipped and configured."""

from __future__ import annotations

from typing import Any

import typer

from ._output import JSON_OPTION, console, emit, print_yaml, table, to_jsonable

profiles_app = typer.Typer(
    help="List and show device profiles (shipped, ./profiles, $EDGEDS_PROFILES).", no_args_is_help=True
)
targets_app = typer.Typer(
    help="List and show deploy targets (shipped, ./targets, $EDGEDS_TARGETS).", no_args_is_help=True
)


@profiles_app.command("list")
def profiles_list(as_json: bool = JSON_OPTION) -> None:
    """List every profile on the search path with its backend chain."""
    from .. import config

    rows: list[dict[str, Any]] = []
    for name, path in config.list_profiles().items():
        profile = config.load_profile(path)
        rows.append(
            {
                "name": name,
                "description": profile.description,
                "chain": [f"{b}:{p}" for b, p, _ in profile.chain()],
                "max_batch_size": profile.batching.max_batch_size,
                "memory_budget_mb": profile.memory.budget_mb,
                "path": str(path),
            }
        )
    emit(
        rows,
        as_json,
        lambda: console.print(
            table(
                "Profiles",
                ["name", "backend chain", "max batch", "memory MiB", "description"],
                [
                    [r["name"], " → ".join(r["chain"]), r["max_batch_size"], r["memory_budget_mb"], r["description"]]
                    for r in rows
                ],
            )
        ),
    )


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
    """List every target on the search path (plus the embedded ``local``)."""
    from .. import config

    rows: list[dict[str, Any]] = [
        {
            "name": t.name,
            "profile": t.profile,
            "local": t.local,
            "hosts": [f"{h.name}={h.address}:{h.port}" for h in t.hosts],
            "broker": t.mqtt.url or "embedded",
            "description": t.description,
        }
        for t in config.load_targets()
    ]
    emit(
        rows,
        as_json,
        lambda: console.print(
            table(
                "Targets",
                ["name", "profile", "hosts", "broker", "description"],
                [[r["name"], r["profile"], len(r["hosts"]) or "local", r["broker"], r["description"]] for r in rows],
            )
        ),
    )


@targets_app.command("show")
def targets_show(name: str = typer.Argument(..., help="Target name or path."), as_json: bool = JSON_OPTION) -> None:
    """Show one target, with the profile it resolves to."""
    import yaml

    from .. import config

    target = config.load_target(name)
    data = to_jsonable(target)
    data["resolved_profile"] = config.resolve_target_profile(target).name
    emit(data, as_json, lambda: print_yaml(yaml.safe_dump(data, sort_keys=False)))


def register(app: typer.Typer) -> None:
    app.add_typer(profiles_app, name="profiles")
    app.add_typer(targets_app, name="targets")
