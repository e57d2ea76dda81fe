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


def check_out(out: Path) -> None:
    """Refuse (:class:`BundleError`) an ``out`` a bundle cannot be written to: a file, or a
    non-empty directory that is not an earlier bundle. Changes nothing; called before the
    expensive work, so a mistaken ``-o`` fails at once."""
    if not out.exists():
        return
    if not out.is_dir():
        raise BundleError(f"{out} is a file; -o takes the directory to write the bundle into")
    if not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise BundleError(f"{out} exists, is not empty and is not a bundle; choose another -o")


def prepare_out(out: Path) -> None:
    """Make ``out`` ready for a new bundle: an earlier bundle there is removed; anything else
    :func:`check_out` refuses is refused, so nothing of the user's is deleted."""
    check_out(out)
    if out.exists() and (out / "manifest.json").is_file():
        shutil.rmtree(out)  # an earlier bundle: replaced


def expires_at(valid_days: float | None) -> str | None:
    """ISO 8601 UTC (seconds) ``valid_days`` from now, or None when not given."""
    if valid_days is None:
        return None
    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=valid_days)
    return expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
