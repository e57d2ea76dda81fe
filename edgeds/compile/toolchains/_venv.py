"""Isolated, pinned toolchain venvs: where they live, how they are installed, how they run offline.

A toolchain venv lives under ``$EDGEDS_TOOLCHAINS/<name>`` (default ``cache_dir()/toolchains/<name>``)
and holds exactly the packages of its lock, installed with ``pip --no-deps``; ``installed.json``
records the lock's hash, so a changed lock re-installs. Subprocesses of a toolchain get
:func:`offline_env`: proxies point to a closed loopback port, so any download attempt fails at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ...errors import ToolchainError
from ...paths import cache_dir


def toolchain_dir(name: str) -> Path:
    """``$EDGEDS_TOOLCHAINS/<name>``, default ``cache_dir()/toolchains/<name>``."""
    root = os.environ.get("EDGEDS_TOOLCHAINS")
    return (Path(root) if root else cache_dir() / "toolchains") / name


def lock_hash(lock: Sequence[str]) -> str:
    """Short sha256 of the lock's lines (the ``installed.json`` stamp and part of compile cache keys)."""
    return hashlib.sha256("\n".join(lock).encode()).hexdigest()[:16]


def venv_python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def installed(root: Path, lock: Sequence[str]) -> bool:
    """Whether the venv under ``root`` exists and was installed from ``lock``."""
    try:
        stamp = json.loads((root / "installed.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(stamp.get("lock") == lock_hash(lock) and venv_python(root).exists())


def install(
    name: str,
    root: Path,
    lock: Sequence[str],
    check: str,
    *,
    python: str | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Create (or re-create) the venv under ``root`` from ``lock``; a no-op when it is installed.

    ``check`` is Python code run by the new venv that must exit 0 and print the versions it
    checked (recorded in ``installed.json``). Raises :class:`ToolchainError` on any failure.
    """
    if installed(root, lock):
        return root
    say = log or (lambda _line: None)
    root.mkdir(parents=True, exist_ok=True)
    venv = root / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    (root / "installed.json").unlink(missing_ok=True)
    interpreter = python or sys.executable
    say(f"creating {venv} with {interpreter}")
    lock_file = root / "requirements.lock"
    lock_file.write_text("\n".join(lock) + "\n")
    pip = [str(venv_python(root)), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    steps = [[interpreter, "-m", "venv", str(venv)], [*pip, "--no-deps", "-r", str(lock_file)]]
    for step in steps:
        say(" ".join(step[:6]) + (" ..." if len(step) > 6 else ""))
        proc = subprocess.run(step, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"installing the {name} toolchain failed at {step[:5]}: {proc.stderr[-2000:]}")
    probe = subprocess.run([str(venv_python(root)), "-c", check], capture_output=True, text=True, env=offline_env())
    if probe.returncode != 0:
        raise ToolchainError(f"the {name} toolchain does not import: {probe.stderr[-2000:]}")
    (root / "installed.json").write_text(json.dumps({"lock": lock_hash(lock), "versions": probe.stdout.split()}))
    return root


def offline_env() -> dict[str, str]:
    """Environment for a toolchain subprocess: proxies to a closed loopback port (no internet)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    dead = "http://127.0.0.1:9"
    env.update(
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        ALL_PROXY=dead,
        NO_PROXY="",
        no_proxy="",
        TF_CPP_MIN_LOG_LEVEL="2",
        CUDA_VISIBLE_DEVICES="-1",
        PYTHONNOUSERSITE="1",
    )
    return env
