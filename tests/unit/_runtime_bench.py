"""Scripts of bench/ loaded as modules (bench/ is scripts, not a package)."""

from __future__ import annotations

import importlib.util
from types import ModuleType

from edgeds.config import REPO_ROOT


def load(name: str = "runtime_bench") -> ModuleType:
    """A fresh copy of ``bench/<name>.py``: a test that changes its state cannot leak it into another."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
