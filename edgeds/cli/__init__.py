"""The ``edgeds`` command line: a thin typer skin over the Python API.

Each module in this package that defines ``register(app)`` adds its commands; they are found
by walking the package, so adding a command group means adding one module. Modules import
heavy libraries inside their commands, never at import time.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer
from rich.markup import escape

from .._version import __version__
from ..errors import EdgedsError
from ._output import console_err

app = typer.Typer(
    name="edgeds",
    help="Take a trained model to edge devices and keep it running there.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgeds {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Take a trained model to edge devices and keep it running there."""


def _register_all() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


def main() -> None:
    """Entry point. An :class:`EdgedsError` becomes a one-line message on stderr and exit status 2."""
    try:
        app()
    except EdgedsError as exc:
        console_err.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
