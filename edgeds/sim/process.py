"""The lifecycle every simulated server process shares (mosquitto, docker-registry).

A subclass sets ``directory`` (with ``own_dir`` when it created it), ``log_path`` and implements
``start()``; this base owns stopping (a signal, then a kill after ``timeout``), reading the log,
removing the generated directory, the context manager and killing a forgotten process.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from pathlib import Path
from types import TracebackType
from typing import TypeVar

_S = TypeVar("_S", bound="ServerProcess")


class ServerProcess:
    """One server process on loopback; construction starts nothing (see the module docstring)."""

    def __init__(self, directory: Path, own_dir: bool, log_path: Path) -> None:
        self.directory = directory
        self._own_dir = own_dir
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self: _S, timeout: float = 10.0) -> _S:
        """Start the process; returns once it serves (each subclass says how it knows)."""
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait (SIGKILL after ``timeout`` seconds)."""
        self._signal(signal.SIGTERM, timeout)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        self._proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        """Stop and remove the generated directory (when this object created it)."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self: _S) -> _S:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # AttributeError: __init__ did not finish; OSError: the process is gone already
        with contextlib.suppress(AttributeError, OSError):
            if self.running and self._proc is not None:
                self._proc.kill()
