"""The ``edgeds`` command line: a thin typer skin over the Python API.

Each module in this package that defines ``register(app)`` adds its commands; they are found
by walking the package, so adding a command group means adding one module. Modules import
heavy libraries inside their commands, never at import time: ``edgeds --help`` loads every
module, and ``tests/unit/test_cli_output.py`` checks that it loads no heavy library.

``-h`` is ``--help`` everywhere: click hands the root's ``help_option_names`` down to every
command and group.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import NoReturn

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
    context_settings={"help_option_names": ["-h", "--help"]},
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


def _fail(message: str, code: int) -> NoReturn:
    console_err.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)


def main() -> None:
    """Entry point. A user's mistake becomes one line on stderr, never a traceback: an
    :class:`EdgedsError` exits 2, a usage error (a missing or invalid argument or option) exits 2
    naming the command's help, Ctrl-C exits 130."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # typer's click: usage errors and the like
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group alone: rich printed its help already
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)  # a usage error knows its command
        hint = f" (see '{ctx.command_path} -h')" if ctx is not None else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except typer.Abort:  # end of input at a prompt
        _fail("aborted", 1)
    except EdgedsError as exc:
        _fail(str(exc), 2)
    if isinstance(code, int) and code:
        sys.exit(code)
