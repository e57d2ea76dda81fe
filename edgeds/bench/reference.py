"""A reference build: another checkout of edgeds whose ``edgeds serve`` runs beside this one's.

``bench/runtime_bench.py --reference TREE`` serves the same bundle from ``TREE``'s package in the
same paired windows, with the same options and CPU placement, to compare samples/s and server CPU
per request of two builds in one run. :meth:`Reference.check` makes sure, before anything is
measured, that ``TREE`` is such a build: that ``python -m edgeds`` run from it imports its own
package and that its ``edgeds serve`` takes every option the benchmark passes.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BenchError
from .servers import SERVE_FLAGS, imported_edgeds, serve_flags


def git_commit(tree: Path) -> str | None:
    """``git rev-parse --short HEAD`` of ``tree``; None when it is no git checkout (or git is missing)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:  # no git on this machine: the report says the tree, without a commit
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


@dataclass(frozen=True)
class Reference:
    """A checked reference build: its tree, its commit (None outside git) and the package file that
    ``edgeds serve`` run from it imports."""

    tree: Path
    commit: str | None
    edgeds_file: Path

    @classmethod
    def check(cls, tree: Path) -> Reference:
        """``tree`` as a reference build. BenchError if it holds no ``edgeds`` package, if
        ``python -m edgeds`` run from it imports another one, or if its ``edgeds serve`` lacks one of
        :data:`.servers.SERVE_FLAGS` (the reference would not get the same arguments)."""
        tree = tree.resolve()
        if not (tree / "edgeds" / "__init__.py").is_file():
            raise BenchError(f"--reference {tree}: no edgeds package there (edgeds/__init__.py)")
        imported = imported_edgeds(tree)
        if not imported.is_relative_to(tree):
            raise BenchError(f"--reference {tree}: python run from it imports {imported}, not its own edgeds")
        missing = [flag for flag in SERVE_FLAGS if flag not in serve_flags(tree)]
        if missing:
            raise BenchError(
                f"--reference {tree}: its edgeds serve has no {', '.join(missing)}, "
                "so it cannot serve with the same arguments"
            )
        return cls(tree, git_commit(tree), imported)

    def describe(self) -> dict[str, Any]:
        """The reference build for a report: tree, commit and the imported package file."""
        return {"tree": str(self.tree), "commit": self.commit, "edgeds_file": str(self.edgeds_file)}


__all__ = ["Reference", "git_commit"]
