"""Leases: a lock file (JSON: owner, pid, acquired_at, expires_at) that gives one run a device or rig.

Taking a lease is an ``O_CREAT|O_EXCL`` create, so two runs racing for the same file cannot both
win. A lease whose ``expires_at`` has passed is stale, and so is one taken on this machine by a process
that no longer exists: a stale lease is removed and taken over. A busy lease
makes :func:`acquire` wait up to ``wait_s`` (polling) and then raise
:class:`~edgeds.errors.HilError`. :func:`acquire_all` takes several leases in a fixed (sorted)
order and gives back the ones it already took when one is busy: a run holds all or none.

For the simulated rig the files are local paths (a device's install dir, or the rig's lease dir);
for real devices the same JSON would be written over SSH (not implemented here).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import HilError


@dataclass(frozen=True)
class Lease:
    path: Path
    owner: str
    token: str
    expires_at: float

    def release(self) -> None:
        """Remove the lock file if it is still ours (a lease taken over after expiry is left alone)."""
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()


def default_owner() -> str:
    return f"{os.environ.get('USER', 'edgeds')}@{socket.gethostname()}:{os.getpid()}"


def read(path: Path) -> dict[str, object] | None:
    """The lease at ``path``, or None when free (an unreadable file counts as stale)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"expires_at": 0.0}
    return data if isinstance(data, dict) else {"expires_at": 0.0}


def _orphaned(held: dict[str, object]) -> bool:
    """A lease taken on this machine by a process that no longer exists (a crashed run)."""
    pid = held.get("pid")
    if held.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _create(path: Path, body: dict[str, object], token: str) -> bool:
    """Publish a complete lease file at ``path`` unless one exists. The body is written to a temp
    file first and hard-linked into place, so no reader ever sees a half-written lease (an empty
    file would read as stale and be taken over)."""
    tmp = path.with_name(f".{path.name}.{token}.tmp")
    tmp.write_text(json.dumps(body))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _try(path: Path, owner: str, ttl_s: float) -> Lease | None:
    now = time.time()
    token = uuid.uuid4().hex
    expires_at = now + ttl_s
    body = {
        "owner": owner,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "token": token,
        "acquired_at": now,
        "expires_at": expires_at,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if _create(path, body, token):
        return Lease(path, owner, token, expires_at)
    held = read(path)
    expires = held.get("expires_at", 0.0) if held else 0.0
    if held is not None and isinstance(expires, (int, float)) and expires > now and not _orphaned(held):
        return None
    # stale: rename it away (atomic; only one racer succeeds), then retry the exclusive create
    with contextlib.suppress(OSError):
        os.replace(path, path.with_name(f".{path.name}.stale.{token}"))
        path.with_name(f".{path.name}.stale.{token}").unlink()
    if not _create(path, body, token):
        return None
    return Lease(path, owner, token, expires_at)


def acquire(path: Path, owner: str, ttl_s: float, wait_s: float = 0.0, poll_s: float = 0.2) -> Lease:
    """Take the lease at ``path``; wait up to ``wait_s`` while it is held; HilError when still busy."""
    deadline = time.monotonic() + wait_s
    while True:
        lease = _try(path, owner, ttl_s)
        if lease is not None:
            return lease
        if time.monotonic() >= deadline:
            held = read(path) or {}
            raise HilError(
                f"{path} is leased by {held.get('owner', '?')} until {held.get('expires_at', '?')} "
                f"(waited {wait_s:g} s)"
            )
        time.sleep(poll_s)


def acquire_all(paths: list[Path], owner: str, ttl_s: float, wait_s: float = 0.0) -> list[Lease]:
    """All leases or none (sorted order avoids two runs deadlocking on each other's halves)."""
    taken: list[Lease] = []
    deadline = time.monotonic() + wait_s
    try:
        for path in sorted(paths):
            taken.append(acquire(path, owner, ttl_s, max(0.0, deadline - time.monotonic())))
    except HilError:
        for lease in taken:
            lease.release()
        raise
    return taken
