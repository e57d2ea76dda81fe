"""The import-linter contracts in pyproject.toml hold, and an upward import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(REPO / "edgeds", root / "edgeds", ignore=shutil.ignore_patterns("__pycache__", "data"))
    shutil.copy(REPO / "pyproject.toml", root)
    return root


def test_the_layer_contracts_hold(tmp_path: Path) -> None:
    proc = _lint(_copy(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "edgeds" / "runtime" / "batcher.py").open("a") as handle:
        handle.write("\nfrom ..cli import app as _app  # upward: runtime must not know the CLI\n")
    proc = _lint(root)
    assert proc.returncode != 0
    assert "edgeds.runtime is not allowed to import edgeds.cli" in proc.stdout


def test_the_device_side_never_imports_the_host_side(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "edgeds" / "deploy" / "device" / "store.py").open("a") as handle:
        handle.write("\nfrom edgeds.deploy import ssh as _ssh  # the device has no SSH client\n")
    proc = _lint(root)
    assert proc.returncode != 0
    assert "the device side of deploy never imports the host side BROKEN" in proc.stdout
