"""Output for people (rich) and machines (``--json``), shared by every command.

``console`` (stdout) lays tables out to the terminal's width, or ``$COLUMNS`` when set; piped
without ``$COLUMNS`` it is :data:`PIPE_WIDTH` wide, so a table keeps each row on one line for
``grep`` and ``cut`` instead of rich's default of 80 columns. Tables (:func:`table`) never cut a
value at any width (:mod:`edgeds.cli._tables`). Neither console hard-wraps a printed line (rich's
``soft_wrap``; the terminal wraps it): a message, and an error on ``console_err`` (stderr:
errors, progress), stays one line however narrow the terminal.

Importing this module loads rich and typer only: the ``--help`` path stays light.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ._tables import FitTable

PIPE_WIDTH = 4096
"""Columns of stdout when it is not a terminal and ``$COLUMNS`` is unset."""


def _stdout_console() -> Console:
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


console = _stdout_console()
console_err = Console(stderr=True, highlight=False, soft_wrap=True)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables.")
CardOption = Annotated[
    Path | None,
    typer.Option(
        "--card",
        help="Model card of the ONNX model (default: <model>.yaml beside it, else the one card naming it).",
    ),
]
"""``--card`` of the commands that take an ONNX model (compile, deploy, inspect)."""


def to_jsonable(value: Any) -> Any:
    """Pydantic models, dataclasses, paths and tuples as plain JSON values."""
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    """Print ``data`` as JSON when ``as_json``, else call ``human`` to render it."""
    if as_json:
        sys.stdout.write(json.dumps(to_jsonable(data), indent=2) + "\n")
    else:
        human()


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> FitTable:
    """A table with ``columns`` and stringified ``rows`` (markup) that shows every value whole at any width."""
    return FitTable(title, columns, rows)


def print_yaml(text: str) -> None:
    """YAML on stdout: highlighted and wrapped on a terminal, the plain text when piped."""
    if console.is_terminal:
        from rich.syntax import Syntax

        console.print(Syntax(text, "yaml", word_wrap=True))
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
