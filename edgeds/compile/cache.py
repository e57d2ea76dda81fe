"""Content-addressed compile cache under ``cache_dir()/compile``.

An entry is keyed by the sha256 of a canonical JSON of everything that decides the result:
model sha256, backend, backend options, precision, nodes kept out of quantization, tool
versions, calibration and validation fingerprints. An entry is a directory ``<key>/`` holding
``artifacts/`` (what the toolchain wrote), ``entry.json`` (artifact path, layout, metadata,
gate figures) and optional arrays (``*.npz``). Entries are written into a temporary
directory and renamed into place, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..paths import cache_dir


def cache_root() -> Path:
    return cache_dir() / "compile"


def cache_key(parts: Mapping[str, Any]) -> str:
    """Hex sha256 of the canonical JSON of ``parts``."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class CompileCache:
    """Get/put compile results by key. ``enabled=False`` makes every lookup miss and skips writes."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        self.root = root or cache_root()
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> tuple[Path, dict[str, Any]] | None:
        """``(entry dir, entry.json)`` or None."""
        if not self.enabled:
            return None
        entry = self.path(key)
        try:
            meta: dict[str, Any] = json.loads((entry / "entry.json").read_text())
        except (OSError, ValueError):
            return None
        return entry, meta

    def put(
        self, key: str, artifact_dir: Path, meta: Mapping[str, Any], arrays: Mapping[str, Mapping[str, np.ndarray]]
    ) -> Path:
        """Store a copy of ``artifact_dir`` plus ``meta`` and named array sets; returns the entry dir."""
        final = self.path(key)
        if not self.enabled:
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=final.parent))
        try:
            shutil.copytree(artifact_dir, tmp / "artifacts")
            for name, group in arrays.items():
                payload: dict[str, Any] = dict(group)
                np.savez(tmp / f"{name}.npz", **payload)
            (tmp / "entry.json").write_text(json.dumps(dict(meta), indent=2, sort_keys=True, default=str))
            if final.exists():
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return final

    @staticmethod
    def arrays(entry: Path, name: str) -> dict[str, np.ndarray]:
        with np.load(entry / f"{name}.npz", allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
