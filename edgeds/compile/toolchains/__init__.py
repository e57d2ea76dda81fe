"""Compile-time toolchains, one module per backend.

The split: ``edgeds/backends/<name>.py`` own the *runtime* imports (onnxruntime sessions,
openvino Core, ai_edge_litert interpreters, tensorrt runtime); the modules here own the
*compile-time* imports (``onnxruntime.quantization``, ``openvino`` conversion and ``nncf``,
onnx2tf in its own toolchain venv, the ``tensorrt`` builder). A backend's ``compile()`` is a
one-line delegation to :func:`compile` of the module of the same name here.

Every toolchain module provides::

    available() -> Availability          can this machine compile for the backend (compile-time libs)?
    tool_versions() -> dict[str, str]    part of the compile cache key and of the manifest
    compile(options, model, card, calib, out, precision, *, exclude_nodes=()) -> Artifact
    SUPPORTS_MIXED: bool                 whether ``exclude_nodes`` (mixed precision) is honoured
    DEFERRED_GATE: bool                  True when the artifact can only be built and checked on the device
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType


def module(backend: str) -> ModuleType:
    """The toolchain module of ``backend`` (imports no heavy library by itself)."""
    return importlib.import_module(f"{__name__}.{backend}")


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
