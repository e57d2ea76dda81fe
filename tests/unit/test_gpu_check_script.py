"""hil/gpu-check.sh: valid bash, and on a machine without TensorRT it stops at its prerequisite check."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

from edgeds.config import REPO_ROOT

SCRIPT = REPO_ROOT / "hil" / "gpu-check.sh"


def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed here")
def test_script_is_shellcheck_clean() -> None:
    subprocess.run(["shellcheck", str(SCRIPT)], check=True, timeout=60)


def test_header_says_it_was_not_run_here() -> None:
    header = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert "NOT RUN IN THE WORKPLACE" in header and "no TensorRT and no GPU" in header


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed: the check runs")
def test_without_tensorrt_it_ends_with_one_fail_line_naming_it() -> None:
    env = {**os.environ, "EDGEDS_PYTHON": sys.executable, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    verdicts = [line for line in lines if line == "PASS" or line.startswith("FAIL: ")]
    assert verdicts == [lines[-1]], "exactly one verdict, on the last line"
    assert lines[-1].startswith("FAIL: tensorrt is not importable")
    assert "== compile" not in proc.stdout, "prerequisites are checked before any compile"
