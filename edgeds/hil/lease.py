"""Leases: a lock file (JSON: owner, host, pid, token, acquired_at, expires_at) that gives one run
a device or a rig.

The same algorithm runs on two kinds of file system, behind :class:`LeaseFiles`:
:class:`LocalFiles` (this machine: the rig lease, sim devices) and :class:`SshFiles` (a real
device's install dir, over the SSH connection the run already holds). Times are the file
system's own clock (the device's ``date``), so a skewed driver clock cannot expire a lease early.

* Taking a lease publishes a complete file atomically and exclusively (temp file, then a hard
  link, which fails when the name exists): two racers can never both win, and no reader ever
  sees a half-written lease.
* A lease whose ``expires_at`` has passed is stale, and so is one taken on this machine by a
  process that no longer exists. Taking over a stale lease is serialized by a short-lived
  ``<lease>.takeover`` lock: its holder re-reads the lease, checks it is still the stale one it
  judged (same token), renames it away and creates its own. A takeover lock older than
  :data:`TAKEOVER_TTL_S` is itself stale (a crash mid-takeover).
* :func:`acquire` waits up to ``wait_s`` for a busy lease, then raises
  :class:`~edgeds.errors.HilError` naming the holder. :func:`acquire_all` takes several in a
  fixed (sorted) order and gives back what it took when one is busy: a run holds all or none.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import EdgedsError, HilError

if TYPE_CHECKING:
    from ..deploy.ssh import Connection

TAKEOVER_TTL_S = 300.0  # well above one remote command's timeout (30 s): a live takeover never looks stale


class LeaseFiles(Protocol):
    """The few file operations a lease needs; paths are strings on that file system."""

    where: str  # for messages: "local" or the device name

    def now(self) -> float: ...

    def create(self, path: str, body: str) -> bool:
        """Publish ``body`` at ``path`` completely and atomically unless ``path`` exists."""
        ...

    def read(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        ...

    def rename(self, src: str, dst: str) -> bool:
        """Atomic rename; False when ``src`` does not exist."""
        ...

    def remove(self, path: str) -> None: ...

    def remove_if_contains(self, path: str, token: str) -> None:
        """Remove ``path`` when its text contains ``token`` (one step where the file system allows)."""
        ...


class LocalFiles:
    """This machine's file system."""

    where = "local"

    def now(self) -> float:
        return time.time()

    def create(self, path: str, body: str) -> bool:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_text(body)
        try:
            os.link(tmp, target)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def read(self, path: str) -> str | None:
        try:
            return Path(path).read_text()
        except FileNotFoundError:
            return None

    def rename(self, src: str, dst: str) -> bool:
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            return False
        return True

    def remove(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def remove_if_contains(self, path: str, token: str) -> None:
        text = self.read(path)
        if text is not None and token in text:
            self.remove(path)


class SshFiles:
    """A device's file system over SSH (POSIX ``sh``), one short remote command per operation.

    ``conn`` is an open :class:`~edgeds.deploy.ssh.Connection` or a callable returning the live
    one (so a lease can still be released after the run reconnected, e.g. after a network cut).
    The connection stays the caller's.
    """

    def __init__(self, conn: Connection | Callable[[], Connection], name: str) -> None:
        self._conn = conn
        self.where = name

    def _sh(self, script: str, *, stdin: bytes | None = None) -> tuple[int, str]:
        conn = self._conn() if callable(self._conn) else self._conn
        result = conn.run(["sh", "-c", script], stdin=stdin, timeout=30.0)
        return result.exit_code, result.stdout.decode(errors="replace")

    def now(self) -> float:
        """The device's clock in seconds (sub-second where ``date`` has ``%N``; BusyBox may not)."""
        _, out = self._sh("date +%s.%N; date +%s")
        lines = out.split()
        for text in lines:
            try:
                return float(text)
            except ValueError:
                continue
        raise HilError(f"{self.where}: cannot read the device clock (date +%s: {out.strip()!r})")

    def create(self, path: str, body: str) -> bool:
        q = shlex.quote(path)
        tmp = shlex.quote(f"{path}.{uuid.uuid4().hex}.tmp")
        script = (
            f'mkdir -p "$(dirname {q})" && cat > {tmp} || exit 3; '
            f"if ln {tmp} {q} 2>/dev/null; then rc=0; elif [ -e {q} ]; then rc=1; else rc=2; fi; "
            f"rm -f {tmp}; exit $rc"
        )
        code, _ = self._sh(script, stdin=body.encode())
        if code in (0, 1):
            return code == 0
        raise HilError(f"{self.where}: cannot write the lease file {path} (is its directory writable?)")

    def read(self, path: str) -> str | None:
        q = shlex.quote(path)
        # a lease released between the test and the read is simply gone (4), not an error
        code, out = self._sh(f"cat {q} 2>/dev/null || {{ [ -e {q} ] && exit 5; exit 4; }}")
        if code == 4:
            return None
        if code != 0:
            raise HilError(f"{self.where}: cannot read the lease file {path}")
        return out

    def rename(self, src: str, dst: str) -> bool:
        code, _ = self._sh(f"mv -f {shlex.quote(src)} {shlex.quote(dst)} 2>/dev/null")
        return code == 0

    def remove(self, path: str) -> None:
        self._sh(f"rm -f {shlex.quote(path)}")

    def remove_if_contains(self, path: str, token: str) -> None:
        q = shlex.quote(path)
        self._sh(f"grep -qF {shlex.quote(token)} {q} 2>/dev/null && rm -f {q}; true")


@dataclass(frozen=True)
class Lease:
    """A lease this run holds. :meth:`release` gives it back (only while it is still ours)."""

    files: LeaseFiles
    path: str
    owner: str
    token: str
    expires_at: float

    def release(self) -> None:
        """Remove the lock file if it is still ours (a lease taken over after expiry is left alone)."""
        with contextlib.suppress(EdgedsError, OSError, ValueError):
            self.files.remove_if_contains(self.path, self.token)  # tokens are unique uuid4 hex


def default_owner() -> str:
    return f"{os.environ.get('USER', 'edgeds')}@{socket.gethostname()}:{os.getpid()}"


def _parse(text: str | None) -> dict[str, object] | None:
    """The lease in ``text``; None when there is no file. Unreadable content counts as stale."""
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {"expires_at": 0.0}
    return data if isinstance(data, dict) else {"expires_at": 0.0}


def read(path: str | Path, files: LeaseFiles | None = None) -> dict[str, object] | None:
    """The lease at ``path`` (None when free)."""
    return _parse((files or LocalFiles()).read(str(path)))


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


def _stale(held: dict[str, object], now: float) -> bool:
    expires = held.get("expires_at", 0.0)
    return not isinstance(expires, (int, float)) or expires <= now or _orphaned(held)


def _move_aside(files: LeaseFiles, path: str, judged: dict[str, object]) -> None:
    """Rename ``path`` away if it is still the file ``judged`` (same token); a file that turns out
    to be another one (replaced in between) is put back."""
    aside = f"{path}.stale.{uuid.uuid4().hex}"
    if not files.rename(path, aside):
        return
    text = files.read(aside)
    moved = _parse(text)
    if moved is not None and moved.get("token") != judged.get("token") and text:
        files.create(path, text)
    files.remove(aside)


def _take_over(files: LeaseFiles, path: str, judged: dict[str, object], now: float) -> None:
    """Move the stale lease ``judged`` out of the way, serialized with other racers by a takeover
    lock (itself a small lease, with a token, taken over the same way when it is stale)."""
    lock = f"{path}.takeover"
    token = uuid.uuid4().hex
    body = json.dumps({"owner": default_owner(), "token": token, "expires_at": now + TAKEOVER_TTL_S})
    if not files.create(lock, body):
        held = _parse(files.read(lock))
        if held is None or not _stale(held, now):
            return  # another racer is taking it over: retry later
        _move_aside(files, lock, held)
        if not files.create(lock, body):
            return
    try:
        current = _parse(files.read(path))
        if current is None or current.get("token") != judged.get("token") or not _stale(current, now):
            return  # released or renewed meanwhile
        _move_aside(files, path, judged)
    finally:
        files.remove_if_contains(lock, token)


def _try(files: LeaseFiles, path: str, owner: str, ttl_s: float) -> Lease | None:
    now = files.now()
    token = uuid.uuid4().hex
    expires_at = now + ttl_s
    body = json.dumps(
        {
            "owner": owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "token": token,
            "acquired_at": now,
            "expires_at": expires_at,
        }
    )
    if files.create(path, body):
        return Lease(files, path, owner, token, expires_at)
    held = _parse(files.read(path))
    if held is not None and not _stale(held, now):
        return None
    if held is not None:
        _take_over(files, path, held, now)
    if files.create(path, body):
        return Lease(files, path, owner, token, expires_at)
    return None


def acquire(
    path: str | Path,
    owner: str,
    ttl_s: float,
    wait_s: float = 0.0,
    poll_s: float = 0.2,
    files: LeaseFiles | None = None,
) -> Lease:
    """Take the lease at ``path``; wait up to ``wait_s`` while it is held; HilError when still busy."""
    files = files or LocalFiles()
    deadline = time.monotonic() + wait_s
    while True:
        lease = _try(files, str(path), owner, ttl_s)
        if lease is not None:
            return lease
        if time.monotonic() >= deadline:
            held = _parse(files.read(str(path))) or {}
            where = "" if files.where == "local" else f"{files.where}:"
            raise HilError(
                f"{where}{path} is leased by {held.get('owner', '?')} until {held.get('expires_at', '?')} "
                f"(waited {wait_s:g} s)"
            )
        time.sleep(poll_s)


def acquire_all(
    paths: Sequence[tuple[LeaseFiles, str]] | Sequence[Path], owner: str, ttl_s: float, wait_s: float = 0.0
) -> list[Lease]:
    """All leases or none (sorted order avoids two runs deadlocking on each other's halves).

    ``paths``: local paths, or ``(files, path)`` pairs (e.g. one :class:`SshFiles` per device).
    """
    pairs: list[tuple[LeaseFiles, str]] = [(LocalFiles(), str(p)) if isinstance(p, Path) else p for p in paths]
    taken: list[Lease] = []
    deadline = time.monotonic() + wait_s
    try:
        for files, path in sorted(pairs, key=lambda fp: (fp[0].where, fp[1])):
            taken.append(acquire(path, owner, ttl_s, max(0.0, deadline - time.monotonic()), files=files))
    except HilError:
        for lease in taken:
            lease.release()
        raise
    return taken
