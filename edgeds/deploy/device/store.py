"""The release store of one device: its install dir, ``state.json``, the lock and the ``current`` link.

Layout under the install dir ``D``::

    objects/<sha256>        content-addressed files, verified on ingest, read-only
    incoming/<sha256>       uploads not yet verified (``.part`` while in transfer)
    releases/<id>/          a staged, verified release (hard links into objects/ + manifest)
    current -> releases/<id>    flipped with a temp symlink + os.replace, never delete-then-create
    state.json              committed / previous release, pending activation, history
    engines/                TensorRT engines built here (the deploy step writes, the agent opens)
    trust/*.pub             ed25519 public keys bundles must be signed with
    run/agent.pid, run/agent.json   the agent's pid and what it serves (written by the agent)
    lock                    flock held by every state-changing step

An activation that is not committed is rolled back by :func:`recover` (run by the agent on
start and by every step), so a device always converges to its last committed release.
Files are written atomically (temp file, fsync, ``os.replace``, fsync of the directory).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...errors import BundleError, StepFailed

log = logging.getLogger(__name__)


def now() -> float:
    """Wall-clock seconds (ms resolution) for ``state.json`` history entries."""
    return round(time.time(), 3)


def fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable (fsync of the directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: readers see the old or the new file, never a part."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


@dataclass
class DeviceState:
    """``state.json``: what is committed, what was before it, and an activation in progress."""

    committed: str | None = None
    previous: str | None = None
    pending: dict[str, Any] | None = None
    failed: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


class Store:
    """The install dir of one device. Cheap to construct; creates its directories lazily."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.expanduser(str(root)))
        self.objects = self.root / "objects"
        self.incoming = self.root / "incoming"
        self.releases = self.root / "releases"
        self.current = self.root / "current"
        self.state_path = self.root / "state.json"
        self.trust = self.root / "trust"
        self.run_dir = self.root / "run"
        self.engines = self.root / "engines"  # TensorRT engines built on this device, by device fingerprint

    def ensure(self) -> None:
        """Create the install dir and its subdirectories where missing."""
        for directory in (self.root, self.objects, self.incoming, self.releases, self.trust, self.run_dir):
            directory.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def locked(self, blocking: bool = True) -> Iterator[bool]:
        """Hold the device lock (flock). Yields False if ``blocking`` is off and it is taken."""
        self.ensure()
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    # -- state --------------------------------------------------------------------------------

    def load_state(self) -> DeviceState:
        """``state.json`` as read now (an empty state before the first commit); unknown keys are ignored."""
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return DeviceState()
        return DeviceState(**{k: v for k, v in data.items() if k in DeviceState.__dataclass_fields__})

    def save_state(self, state: DeviceState) -> None:
        """Write ``state.json`` atomically, keeping the last 50 history entries."""
        state.history = state.history[-50:]
        _write_atomic(self.state_path, json.dumps(asdict(state), indent=2).encode())

    def current_id(self) -> str | None:
        """The release ``current`` points at, or None without the link."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        return PurePosixPath(target).name

    def flip(self, release_id: str | None) -> None:
        """Point ``current`` at ``releases/<id>`` atomically (``None`` removes the link)."""
        if release_id is None:
            with contextlib.suppress(FileNotFoundError):
                self.current.unlink()
            fsync_dir(self.root)
            return
        if not (self.releases / release_id / "manifest.json").is_file():
            raise StepFailed(f"release {release_id} is not staged")
        tmp = self.root / f".current.tmp-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"releases/{release_id}", tmp)
        os.replace(tmp, self.current)
        fsync_dir(self.root)

    # -- trust --------------------------------------------------------------------------------

    def trusted_keys(self) -> list[Any]:
        """The publisher keys in ``trust/*.pub`` that load; a bundle must verify under one of them."""
        from ...bundle import load_public_key

        keys = []
        if self.trust.is_dir():
            for path in sorted(self.trust.glob("*.pub")):
                try:
                    keys.append(load_public_key(path))
                except BundleError as exc:  # one unreadable key must not lock out the others
                    log.warning("ignoring trusted key %s: %s", path, exc)
        return keys

    def add_trusted_key(self, name: str, pem: bytes) -> bool:
        """Trust the ed25519 public key ``pem`` as ``trust/<name>.pub``; False when it already was."""
        from ...bundle import load_public_key

        load_public_key(pem)  # refuse garbage
        self.ensure()
        path = self.trust / f"{name}.pub"
        if path.exists() and path.read_bytes() == pem:
            return False
        _write_atomic(path, pem)
        return True

    # -- releases -----------------------------------------------------------------------------

    def release_manifest(self, release_id: str) -> dict[str, Any] | None:
        """The staged release's manifest as a dict; None when it is missing or unreadable."""
        try:
            data: dict[str, Any] = json.loads((self.releases / release_id / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def list_releases(self) -> list[str]:
        """Ids of the staged releases, sorted (staging directories left out)."""
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and not p.name.startswith("."))

    def agent_status(self) -> dict[str, Any]:
        """The agent's own status file plus whether its pid is alive."""
        try:
            data: dict[str, Any] = json.loads((self.run_dir / "agent.json").read_text())
        except (OSError, ValueError):
            data = {}
        pid = agent_pid(self)
        data["running"] = pid is not None
        data["pid"] = pid
        return data


def agent_pid(store: Store) -> int | None:
    """The pid in ``run/agent.pid`` if that process is alive, else None."""
    try:
        pid = int((store.run_dir / "agent.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def release_id_for(manifest_bytes: bytes, name: str, version: int) -> str:
    """``<name>-v<version>-<12 hex of the manifest's sha256>``: one id per signed manifest."""
    digest = hashlib.sha256(manifest_bytes).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return f"{safe}-v{version}-{digest}"


def recover(store: Store) -> dict[str, Any] | None:
    """Roll back an activation that was never committed (nobody holds the lock).

    Returns what was done, or None when there was nothing to do or a step is in progress.
    """
    state = store.load_state()
    if state.pending is None and (state.committed is None or store.current_id() == state.committed):
        return None
    with store.locked(blocking=False) as got:
        if not got:
            return None
        state = store.load_state()
        pending, target = state.pending, state.committed
        if pending is None and store.current_id() == target:
            return None
        if target is not None and not (store.releases / target).is_dir():
            target = None
        store.flip(target)
        if pending is not None:
            state.failed.append(pending["id"])
            state.history.append({"event": "recovered", "from": pending["id"], "to": target, "ts": now()})
        state.pending = None
        store.save_state(state)
        return {"rolled_back": pending["id"] if pending else None, "current": target}
