"""Fingerprint a device: arch, OS, Python, disk, memory, importable backends, GPU / TensorRT / JetPack.

Standard library only, and no imports of edgeds: ``edgeds device setup`` pipes this file's
source to the device's own ``python3`` before edgeds is installed there
(``python3 - probe --root <install_dir>``), and it prints ONE JSON object on stdout. Once edgeds
is installed the same answer comes from the ``probe`` step, and admission uses
:data:`BACKEND_MODULES`, :func:`machine` and :func:`memory_mb` for its compatibility checks.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

# Backend name (as in a bundle manifest) -> the module that must be importable for it.
BACKEND_MODULES = {
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
    "tensorrt": "tensorrt",
    "openvino-genai": "openvino_genai",
    "onnxruntime-genai": "onnxruntime_genai",
}
MIB = 1024 * 1024


def machine() -> str:
    """The CPU architecture in the spelling bundle requirements use (``aarch64``, ``x86_64``)."""
    name = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64", "AMD64": "x86_64"}.get(name, name)


def memory_mb() -> int | None:
    """Total memory in MiB from ``/proc/meminfo``; None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def _first_line(path: str) -> str | None:
    try:
        return Path(path).read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def probe(root: str | Path) -> dict[str, Any]:
    """What the device is and has, with disk figures for the install dir ``root`` (created if missing)."""
    root = Path(os.path.expanduser(str(root)))
    os_release: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            key, _, value = line.partition("=")
            os_release[key] = value.strip('"')
    root.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(root)
    backends = {name: importlib.util.find_spec(module) is not None for name, module in BACKEND_MODULES.items()}
    tensorrt_version = None
    if backends["tensorrt"]:
        from importlib import metadata  # here, so that an interpreter too old to have it still reports itself

        # An importable tensorrt without distribution metadata (a JetPack system package) has no version to report.
        with contextlib.suppress(metadata.PackageNotFoundError):
            tensorrt_version = metadata.version("tensorrt")
    return {
        "arch": machine(),
        "os": os_release.get("PRETTY_NAME", platform.platform()),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "memory_mb": memory_mb(),
        "disk_free_mb": usage.free // MIB,
        "disk_total_mb": usage.total // MIB,
        "backends": backends,
        "gpu": _first_line("/proc/driver/nvidia/version"),
        "tensorrt": tensorrt_version,
        "jetpack_l4t": _first_line("/etc/nv_tegra_release"),
        "systemd": Path("/run/systemd/system").is_dir(),
        "install_dir": str(root),
    }


def main(argv: list[str] | None = None) -> int:
    """``python3 - probe --root DIR``: the probe as one JSON line on stdout."""
    parser = argparse.ArgumentParser(prog="probe", description=main.__doc__)
    parser.add_argument("command", choices=["probe"])
    parser.add_argument("--root", required=True, help="install dir on the device")
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(probe(args.root)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
