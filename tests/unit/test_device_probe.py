"""The device probe runs on a bare device: its source alone, standard library only, one JSON line out."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from edgeds.deploy.device import probe

KEYS = {
    "arch",
    "os",
    "kernel",
    "python",
    "executable",
    "cpu_count",
    "memory_mb",
    "disk_free_mb",
    "disk_total_mb",
    "backends",
    "gpu",
    "tensorrt",
    "jetpack_l4t",
    "systemd",
    "install_dir",
}


def test_probe_imports_only_the_standard_library() -> None:
    tree = ast.parse(Path(probe.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import on line {node.lineno}: the piped source has no package"
            assert node.module is not None
            imported.add(node.module.split(".")[0])
    outside = sorted(imported - set(sys.stdlib_module_names) - {"__future__"})
    assert not outside, f"probe.py imports {outside}: it is piped to a device that has no edgeds yet"


def test_piped_source_probes_without_site_packages(tmp_path: Path) -> None:
    """What ``edgeds device setup`` does: ``python3 - probe --root DIR`` with the source on stdin."""
    root = tmp_path / "install"
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-", "probe", "--root", str(root)],  # -S: no site-packages
        input=Path(probe.__file__).read_bytes(),
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().strip().splitlines()
    assert len(lines) == 1
    data = json.loads(lines[0])
    assert set(data) == KEYS
    assert data["install_dir"] == str(root) and root.is_dir()
    assert data["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(data["backends"]) == set(probe.BACKEND_MODULES)
    assert data["disk_total_mb"] >= data["disk_free_mb"] >= 0


def test_probe_in_process_matches_the_piped_shape(tmp_path: Path) -> None:
    data = probe.probe(tmp_path / "dev")
    assert set(data) == KEYS
    assert data["arch"] == probe.machine()
    assert data["backends"]["onnxruntime"] is True  # installed here, unlike under -S


def test_probe_step_answers_the_same_shape(tmp_path: Path) -> None:
    """Once edgeds is installed, ``python -m edgeds.deploy.device probe`` gives the same answer."""
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "edgeds.deploy.device", "probe", "--root", str(tmp_path / "dev"), "--json"],
        input=b"",
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert set(json.loads(proc.stdout.decode().strip().splitlines()[-1])) == KEYS
