"""What a benchmark ran on: the machine, the software versions and the model, for its report."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from ..hashing import sha256_file


def environment(model: Path | None = None, threads: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """CPU, cores, versions, git sha, thread settings, model hash.

    ``model`` (a file) adds its path and SHA-256; ``threads`` is recorded as given. Whatever cannot
    be read here is no error: without /proc/cpuinfo the CPU is ``platform.processor()``, without git
    the sha is None, and a package that is not installed has no version.
    """
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("edgeds", "numpy", "onnxruntime", "openvino", "ai-edge-litert"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    env: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions,
        "git_sha": sha or None,
        "threads": dict(threads or {}),
        "note": "the load generator runs on the same cores as the server",
    }
    if model is not None and Path(model).is_file():
        env["model"] = str(model)
        env["model_sha256"] = sha256_file(Path(model))
    return env


__all__ = ["environment"]
