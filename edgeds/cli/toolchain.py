"""``edgeds toolchain install|status``: isolated compile toolchains (onnx2tf for LiteRT, the LM exporters)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from ._output import JSON_OPTION, console, console_err, emit, table

toolchain_app = typer.Typer(help="Isolated compile toolchains that edgeds creates and pins.", no_args_is_help=True)


@toolchain_app.command("install")
def install(
    name: Annotated[
        str,
        typer.Argument(help="Toolchain to install: litert (onnx2tf + TensorFlow) or llm (the LM exporters); pinned."),
    ],
    as_json: bool = JSON_OPTION,
) -> None:
    """Create the pinned toolchain venv under the cache dir (a no-op when it is already there)."""
    from ..compile.toolchains import installable

    toolchain = installable(name)
    started = time.perf_counter()
    already = toolchain.installed()
    with console_err.status(f"installing the {name} toolchain (pinned, {len(toolchain.LOCK)} packages)..."):
        root = toolchain.install(log=lambda line: console_err.print(f"  {line}", markup=False) if not as_json else None)
    data = {
        "toolchain": name,
        "path": str(root),
        "already_installed": already,
        "seconds": round(time.perf_counter() - started, 1),
        "lock": toolchain.lock_hash(),
    }
    emit(
        data,
        as_json,
        lambda: console.print(
            f"{name} toolchain {'already installed' if already else 'installed'} at {root} in {data['seconds']} s"
        ),
    )


@toolchain_app.command("status")
def status(as_json: bool = JSON_OPTION) -> None:
    """Which toolchains are installed and where."""
    from ..compile.toolchains import INSTALLABLE, installable

    rows: list[dict[str, Any]] = []
    for name in INSTALLABLE:
        toolchain = installable(name)
        rows.append(
            {
                "toolchain": name,
                "installed": toolchain.installed(),
                "path": str(toolchain.toolchain_dir()),
                "lock": toolchain.lock_hash(),
            }
        )
    emit(
        rows,
        as_json,
        lambda: console.print(
            table("Toolchains", ["toolchain", "installed", "path", "lock"], [list(r.values()) for r in rows])
        ),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(toolchain_app, name="toolchain")
