"""``edgeds bundle verify|show``: check and inspect bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import JSON_OPTION, console, emit, table

bundle_app = typer.Typer(help="Verify and inspect bundles (directory or .tar).", no_args_is_help=True)


@bundle_app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    public_key: Annotated[
        Path | None,
        typer.Option(
            "--key", "-k", help="ed25519 public key; without it only integrity (checksums, listing) is checked."
        ),
    ] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Check every file's sha256 and size, unlisted files, archive safety and (with --key) the signature."""
    from ..bundle import verify_bundle

    manifest = verify_bundle(path, public_key)
    data = {
        "bundle": str(path),
        "ok": True,
        "signature": "verified" if public_key else "not checked (no --key)",
        "files": len(manifest.files),
        "model": manifest.model.model_dump(),
        "version": manifest.version,
    }
    emit(
        data,
        as_json,
        lambda: console.print(
            f"[green]OK[/] {path}: {len(manifest.files)} files verified, signature {data['signature']}"
        ),
    )


@bundle_app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="Bundle directory or .tar.")],
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a bundle's manifest summary (reads without verifying; use `verify` for that)."""
    from ..bundle import describe, load_bundle

    with load_bundle(path, verify=False) as loaded:
        manifest = loaded.manifest
    summary = describe(manifest)

    def human() -> None:
        rows = [[k, v] for k, v in summary.items() if not isinstance(v, dict)]
        rows += [[f"tools.{k}", v] for k, v in summary["tools"].items()]
        rows += [[f"accuracy.{k}", v] for k, v in summary["accuracy"].items() if v is not None]
        console.print(table(f"Bundle {path}", ["field", "value"], rows))

    emit(manifest if as_json else summary, as_json, human)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
