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

from ...errors import ToolchainError

INSTALLABLE: tuple[str, ...] = ("litert", "llm")
"""Toolchains that edgeds installs itself (an isolated, pinned venv): ``edgeds toolchain install``.

Each such module provides ``install(log=...) -> Path``, ``installed() -> bool``,
``toolchain_dir() -> Path``, ``lock_hash() -> str`` and ``LOCK`` (the pinned requirements)."""


def module(backend: str) -> ModuleType:
    """The toolchain module of ``backend`` (imports no heavy library by itself)."""
    return importlib.import_module(f"{__name__}.{backend}")


def installable(name: str) -> ModuleType:
    """The module of the installable toolchain ``name`` (see :data:`INSTALLABLE`).

    Raises :class:`~edgeds.errors.ToolchainError` for a name that is not installable."""
    if name not in INSTALLABLE:
        raise ToolchainError(f"unknown toolchain {name!r} (known: {', '.join(INSTALLABLE)})")
    return module(name)


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
