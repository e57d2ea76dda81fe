"""``edgeds engine build``: build a bundle's TensorRT engine on this device from its recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import JSON_OPTION, console, console_err, emit

engine_app = typer.Typer(help="TensorRT engines built on the device from a bundle's recipe.", no_args_is_help=True)


@engine_app.command("build")
def build(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory or .tar with a TensorRT recipe.")],
    key: Annotated[Path | None, typer.Option("--key", "-k", help="ed25519 public key to verify the bundle.")] = None,
    cache: Annotated[
        Path | None, typer.Option("--cache-dir", help="Engine cache root (default: <cache dir>/tensorrt).")
    ] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build even when a cached engine matches.")] = False,
    as_json: bool = JSON_OPTION,
) -> None:
    """Verify the bundle, then return this device's cached engine or build it (TensorRT 10 or 11)."""
    from ..compile.toolchains import tensorrt

    root = cache or tensorrt.default_cache_root()
    with console_err.status("building the TensorRT engine (minutes on a Jetson)..."):
        engine, built = tensorrt.ensure_bundle_engine(bundle, key, root, rebuild=rebuild)
    data = {"engine": str(engine), "built": built, "cache": str(root)}
    emit(data, as_json, lambda: console.print(f"engine {'built' if built else 'cached'}: {engine}"))


def register(app: typer.Typer) -> None:
    app.add_typer(engine_app, name="engine")
