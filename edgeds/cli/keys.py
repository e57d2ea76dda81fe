"""``edgeds keys generate``: the ed25519 key pair that signs bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._output import JSON_OPTION, console, emit

keys_app = typer.Typer(help="Signing keys for bundles (ed25519).", no_args_is_help=True)


@keys_app.command("generate")
def generate(
    directory: Annotated[Path, typer.Option("--dir", "-d", help="Where to write <name>.key and <name>.pub.")] = Path(
        "keys"
    ),
    name: str = typer.Option("edgeds", "--name", help="File name stem."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write a new key pair: <name>.key (private, mode 0600, PKCS#8 PEM) and <name>.pub (PEM). Never overwrites."""
    from ..bundle import generate_keypair

    private, public = generate_keypair(directory, name)
    data = {"private_key": str(private), "public_key": str(public)}
    emit(
        data,
        as_json,
        lambda: console.print(
            f"private key: {private} (keep it secret; sign with `edgeds compile --key {private}`)\n"
            f"public key:  {public} (give it to devices; `edgeds bundle verify --key {public}`)"
        ),
    )


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
