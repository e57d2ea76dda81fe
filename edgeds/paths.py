"""Where edgeds keeps its files, and which relative paths it accepts (stdlib only, a leaf module).

Imported by every layer, so it imports nothing of edgeds.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath


def cache_dir() -> Path:
    """Root of edgeds' caches: ``$EDGEDS_CACHE_DIR`` or ``~/.cache/edgeds``. Not created here."""
    return Path(os.environ.get("EDGEDS_CACHE_DIR") or Path.home() / ".cache" / "edgeds")


def is_safe_relative(path: str) -> bool:
    """Whether ``path`` (POSIX separators) names a file strictly inside the directory it is joined to.

    Refused: the empty string, ``"."`` (the directory itself), absolute paths, any ``..``
    component and backslashes (a Windows separator on one side is a file name on the other).
    Bundle manifests, tar members and the device's release files all go through this one check.
    """
    if not path or "\\" in path:
        return False
    pure = PurePosixPath(path)
    return not pure.is_absolute() and ".." not in pure.parts and pure.parts not in ((), (".",))
