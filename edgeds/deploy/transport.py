"""How the host side reaches a device's install dir: the small interface every transport implements.

Two transports implement it: :class:`edgeds.deploy.ssh.Connection` (a remote device over SSH)
and :class:`edgeds.deploy.local.LocalConnection` (this machine, the ``local`` target: child
processes and file copies, no SSH). A :class:`~edgeds.deploy.host.Session` holds one of them, so
plan, upload, apply, status, rollback, setup and logs run the same device steps either way.

Contract shared by both: ``argv`` is a command line run without a shell on the device (each
argument passed as is); paths are absolute paths on the device; every wait has a timeout; a
transport that is closed (by its owner or by a deadline watchdog from another thread) makes the
calls in progress fail with :class:`~edgeds.errors.ConnectionFailed`. Errors are
:class:`~edgeds.errors.DeployError` subclasses; exceptions raised by the caller's own callbacks
pass through unchanged. ``close`` is idempotent and never raises.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its exit code and everything it wrote."""

    exit_code: int
    stdout: bytes
    stderr: bytes


class DeviceProcess(Protocol):
    """A command running on the device that answers one stdout line per stdin line."""

    def request(self, line: bytes, timeout: float) -> bytes:
        """Send one line, return the next stdout line (ConnectionFailed on death or timeout)."""
        ...

    def close(self) -> None:
        """End the command's stdin and let it go; never raises."""
        ...


class Transport(Protocol):
    """One open way into a device (see the module docstring for the shared contract)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 120.0,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` to its end with ``stdin``; ``on_stderr_line`` sees each stderr line as it comes."""
        ...

    def start(self, argv: Sequence[str], on_stderr_line: Callable[[str], None] | None = None) -> DeviceProcess:
        """Start ``argv`` with its stdin kept open for line-based requests."""
        ...

    def stream(
        self, argv: Sequence[str], on_output: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> int | None:
        """Run ``argv`` with its stdin open and hand each piece of its stdout to ``on_output`` until it
        ends or ``stop`` is set; then its stdin is closed (a command that waits on it ends) and the
        exit code (None when it was still running) returned. Ctrl-C in the caller ends it the same way."""
        ...

    def upload(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> int:
        """Copy ``local`` to ``remote`` (published whole: a part file, then a rename); the bytes sent."""
        ...

    def write_file(self, remote: str, data: bytes) -> None:
        """Write small ``data`` to ``remote`` atomically (temp + rename)."""
        ...

    def is_active(self) -> bool:
        """Whether the transport can still run commands."""
        ...

    def close(self) -> None:
        """Release everything (connections, child processes); idempotent, never raises."""
        ...


__all__ = ["CommandResult", "DeviceProcess", "ProgressFn", "Transport"]
