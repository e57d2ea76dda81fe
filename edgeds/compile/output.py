"""Where a compile writes its bundle: the default directory, clearing an earlier bundle there,
and the expiry timestamp a bundle records. Shared by the tensor and the language-model pipelines."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from ..errors import BundleError


def default_out(name: str, version: str, profile: str) -> Path:
    """``dist/<model>-<version>-<profile>``, relative to the working directory."""
    return Path("dist") / f"{name}-{version}-{profile}"


def prepare_out(out: Path) -> None:
    """Make ``out`` ready for a new bundle: an earlier bundle there is removed; any other
    non-empty directory is refused (:class:`BundleError`), so nothing of the user's is deleted."""
    if out.exists():
        if (out / "manifest.json").is_file():
            shutil.rmtree(out)  # an earlier bundle: replaced
        elif out.is_dir() and any(out.iterdir()):
            raise BundleError(f"{out} exists, is not empty and is not a bundle; choose another -o")


def expires_at(valid_days: float | None) -> str | None:
    """ISO 8601 UTC (seconds) ``valid_days`` from now, or None when not given."""
    if valid_days is None:
        return None
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=valid_days)
    return expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
