"""``edgeds publish``: push a signed bundle to an OCI registry; prints its reference by digest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import JSON_OPTION, console, emit


def publish(
    bundle: Annotated[Path, typer.Argument(help="Signed bundle directory or .tar.")],
    registry: str = typer.Option(..., "--registry", help="https://HOST[:PORT] (http:// only to a loopback address)."),
    repository: str | None = typer.Option(None, "--repository", help="Repository name [default: the model name]."),
    tag: str | None = typer.Option(None, "--tag", help="Tag [default: v<bundle version>]."),
    key: Annotated[Path | None, typer.Option("--key", help="Public key: check the signature before pushing.")] = None,
    as_json: bool = JSON_OPTION,
) -> None:
    """Push BUNDLE as one OCI artifact (the bundle tar, manifest.json and manifest.sig as layers, model,
    version, profile and bundle digest as annotations) and print the reference by digest that devices
    fetch. The bundle is verified first; an unsigned one is refused."""
    from ..fleet.oci import publish_bundle

    published = publish_bundle(bundle, registry, repository=repository, tag=tag, public_key=key)
    emit(
        published.to_dict(),
        as_json,
        lambda: console.print(
            f"{published.reference}\n"
            f"  tag {published.tagged}, {published.manifest.model.name} {published.manifest.model.version} "
            f"(bundle version {published.manifest.version}, {published.size} bytes, "
            f"bundle digest {published.bundle_digest})",
            highlight=False,
            soft_wrap=True,
        ),
    )


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
