"""A reference build for the runtime benchmark: a tree is accepted only if its ``edgeds serve`` runs
from its own package and takes every option the benchmark passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgeds.bench.reference import Reference, git_commit
from edgeds.bench.servers import SERVE_FLAGS, imported_edgeds, serve_flags
from edgeds.config import REPO_ROOT
from edgeds.errors import BenchError


def test_this_checkout_is_a_reference_build_of_its_own_commit() -> None:
    reference = Reference.check(REPO_ROOT)
    assert reference.edgeds_file == (REPO_ROOT / "edgeds" / "__init__.py").resolve()
    assert set(SERVE_FLAGS) <= serve_flags(REPO_ROOT)
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    assert reference.commit == (head.stdout.strip() if head.returncode == 0 else None)
    assert reference.describe() == {
        "tree": str(REPO_ROOT.resolve()),
        "commit": reference.commit,
        "edgeds_file": str(reference.edgeds_file),
    }


def test_a_tree_without_an_edgeds_package_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="no edgeds package there"):
        Reference.check(tmp_path)


def test_a_tree_whose_serve_lacks_an_option_is_refused_naming_it(tmp_path: Path) -> None:
    package = tmp_path / "edgeds"
    package.mkdir()
    (package / "__init__.py").write_text("")
    # an edgeds whose `serve --help` lists every option the benchmark passes but --instances
    flags = " ".join(flag for flag in SERVE_FLAGS if flag != "--instances")
    (package / "__main__.py").write_text(f"print({flags!r})\n")
    assert imported_edgeds(tmp_path) == (package / "__init__.py").resolve()  # its own, not this checkout's
    assert git_commit(tmp_path) is None
    with pytest.raises(BenchError, match="its edgeds serve has no --instances, so it cannot serve"):
        Reference.check(tmp_path)


def test_a_tree_whose_edgeds_cannot_start_is_refused_with_its_error(tmp_path: Path) -> None:
    package = tmp_path / "edgeds"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("raise SystemExit('no serve here')\n")
    with pytest.raises(BenchError, match=r"edgeds serve --help of .* failed with 1: no serve here"):
        Reference.check(tmp_path)
