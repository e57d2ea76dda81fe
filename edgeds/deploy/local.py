"""The local transport: this machine's install dir reached through child processes and file copies.

What the ``local`` target uses instead of SSH (:class:`LocalConnection` implements
:class:`edgeds.deploy.transport.Transport`): each device step is a child process of this one,
run as this user with this environment, uploads are copies (never hard links: the store makes its
objects read-only, and the caller's bundle files must stay as they are). Closing the connection
(its owner, or a deploy's deadline watchdog from another thread) kills the children it started,
and the calls waiting on them raise :class:`~edgeds.errors.ConnectionFailed`.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from ..errors import ConnectionFailed, DeviceError
from .transport import CommandResult, ProgressFn

_CHUNK = 1 << 16


class _Pipes:
    """The stdout and stderr of one child, read without blocking: stdout kept, stderr split in lines."""

    def __init__(self, proc: subprocess.Popen[bytes], on_stderr_line: Callable[[str], None] | None) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stdout, selectors.EVENT_READ, "out")
        self._selector.register(proc.stderr, selectors.EVENT_READ, "err")
        self._open = 2
        self._on_stderr = on_stderr_line
        self._pending = b""
        self.out = bytearray()
        self.err = bytearray()

    @property
    def eof(self) -> bool:
        return self._open == 0

    def pump(self, timeout: float) -> None:
        """Read what is ready within ``timeout`` seconds; a callback's exception propagates."""
        if self.eof:
            time.sleep(timeout)
            return
        for key, _ in self._selector.select(timeout):
            stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
            data = os.read(stream.fileno(), _CHUNK)
            if not data:
                self._selector.unregister(stream)
                self._open -= 1
                continue
            if key.data == "out":
                self.out += data
                continue
            self.err += data
            if self._on_stderr is not None:
                self._pending += data
                *lines, self._pending = self._pending.split(b"\n")
                for line in lines:
                    self._on_stderr(line.decode(errors="replace"))

    def close(self) -> None:
        self._selector.close()


class LocalConnection:
    """This machine as a device, for one host plan (``name`` is the host name in messages).

    Thread-compatible like the SSH connection, except :meth:`close`, which any thread may call.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    # -- children --------------------------------------------------------------------------------

    def _spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        with self._lock:
            if self._closed:
                raise ConnectionFailed(f"{self.name}: connection is closed")
            try:
                # a process group of its own: killing it ends what a shell script started too
                # (`tail -F ... &`), and a terminal's Ctrl-C reaches edgeds, which reaps it, not it
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except FileNotFoundError as exc:
                raise DeviceError(
                    f"{self.name}: {argv[0]} does not exist: nothing is installed there yet "
                    "(`edgeds deploy BUNDLE --target local` installs it)"
                ) from exc
            except OSError as exc:
                raise DeviceError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
            self._children.add(proc)
            return proc

    def _reap(self, proc: subprocess.Popen[bytes], grace: float = 0.0) -> int:
        """Close ``proc``'s stdin, give it ``grace`` seconds, kill it if still running; its exit code
        (negative: the signal that ended it)."""
        if proc.stdin is not None:
            with contextlib.suppress(OSError):  # it may have exited and closed its end already
                proc.stdin.close()
        code: int | None
        try:
            code = proc.wait(timeout=grace) if grace > 0 else proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            # only a child that has to be stopped loses its group: after a normal exit the group
            # may still hold a process on its way out of it (`setsid -f` starting the agent)
            _kill_group(proc)
            code = proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        with self._lock:
            self._children.discard(proc)
        return code

    def _check_open(self, argv: Sequence[str]) -> None:
        if self._closed:
            raise ConnectionFailed(f"{self.name}: connection closed while running {list(argv[:3])}")

    # -- commands --------------------------------------------------------------------------------

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 120.0,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` here to its end; ConnectionFailed after ``timeout`` seconds or when closed."""
        proc = self._spawn(argv)
        pipes = _Pipes(proc, on_stderr_line)
        try:
            assert proc.stdin is not None
            try:
                if stdin:
                    proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:  # it exited without reading its input: its exit code says why
                pass
            deadline = time.monotonic() + timeout
            while not pipes.eof:
                self._check_open(argv)  # a relayed step keeps its pipes open after its child is killed
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionFailed(f"{self.name}: {list(argv[:3])} did not finish in {timeout:.0f}s")
                pipes.pump(min(0.2, left))
            code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            raise ConnectionFailed(f"{self.name}: {list(argv[:3])} did not finish in {timeout:.0f}s") from exc
        finally:
            pipes.close()
            self._reap(proc)
        self._check_open(argv)
        return CommandResult(code, bytes(pipes.out), bytes(pipes.err))

    def start(self, argv: Sequence[str], on_stderr_line: Callable[[str], None] | None = None) -> LocalProcess:
        """Start ``argv`` here with its stdin open for line-based requests."""
        return LocalProcess(self, self._spawn(argv), on_stderr_line)

    def stream(
        self, argv: Sequence[str], on_output: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> int | None:
        """Run ``argv`` here, handing its stdout to ``on_output`` until it ends or ``stop`` is set; then
        close its stdin and give it a second to end before it is killed. Its exit code, or None."""
        proc = self._spawn(argv)
        pipes = _Pipes(proc, None)
        code: int | None = None
        try:
            while stop is None or not stop.is_set():
                pipes.pump(0.1)
                if pipes.out:
                    chunk = bytes(pipes.out)
                    pipes.out.clear()
                    on_output(chunk)
                if pipes.eof:
                    code = proc.wait(timeout=5)
                    break
                self._check_open(argv)
        finally:
            pipes.close()
            reaped = self._reap(proc, grace=1.0)
            code = code if code is not None else reaped
        return code

    # -- files -----------------------------------------------------------------------------------

    def upload(self, local: Path, remote: str, *, progress: ProgressFn | None = None) -> int:
        """Copy ``local`` to ``remote`` through ``remote + '.part'`` and a rename; the bytes copied
        (0 when ``remote`` already exists with the right size)."""
        size = local.stat().st_size
        target = Path(remote)
        part = Path(remote + ".part")
        try:
            with contextlib.suppress(FileNotFoundError):
                if target.stat().st_size == size:
                    return 0
            done = 0
            with local.open("rb") as src, part.open("wb") as dst:
                while data := src.read(_CHUNK * 4):
                    self._check_open(["upload", remote])
                    dst.write(data)
                    done += len(data)
                    if progress is not None:
                        progress(done, size)
            os.replace(part, target)
        except OSError as exc:
            raise DeviceError(f"{self.name}: copying {local} to {remote} failed: {exc}") from exc
        return done

    def write_file(self, remote: str, data: bytes) -> None:
        """Write ``data`` to ``remote`` atomically (temp + rename)."""
        tmp = Path(remote + ".tmp")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, remote)
        except OSError as exc:
            raise DeviceError(f"{self.name}: writing {remote} failed: {exc}") from exc

    # -- lifecycle -------------------------------------------------------------------------------

    def is_active(self) -> bool:
        return not self._closed

    def close(self) -> None:
        """Kill the children still running; idempotent, never raises."""
        with self._lock:
            self._closed = True
            children = list(self._children)
        for proc in children:
            _kill_group(proc)

    def __enter__(self) -> LocalConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL ``proc``'s process group (it leads one: ``start_new_session``); gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class LocalProcess:
    """A child of a :class:`LocalConnection` that answers one stdout line per stdin line."""

    def __init__(
        self, conn: LocalConnection, proc: subprocess.Popen[bytes], on_stderr_line: Callable[[str], None] | None
    ) -> None:
        self._conn = conn
        self._proc = proc
        self._pipes = _Pipes(proc, on_stderr_line)

    def request(self, line: bytes, timeout: float) -> bytes:
        """Send one line, return the next stdout line. ConnectionFailed on its death or after ``timeout``."""
        name = self._conn.name
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.rstrip(b"\n") + b"\n")
            self._proc.stdin.flush()
        except OSError as exc:
            raise ConnectionFailed(f"{name}: the device process is gone: {exc}") from exc
        deadline = time.monotonic() + timeout
        out = self._pipes.out
        while b"\n" not in out:
            if self._pipes.eof:
                code = self._proc.poll()
                raise ConnectionFailed(
                    f"{name}: the device process ended without answering (exit {'?' if code is None else code}): "
                    f"{self._pipes.err.decode(errors='replace')[-300:]}"
                )
            self._conn._check_open(("request",))
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionFailed(f"{name}: no answer in {timeout:.0f}s")
            self._pipes.pump(min(0.2, left))
        end = out.index(b"\n")
        answer = bytes(out[:end])
        del out[: end + 1]
        return answer

    def close(self) -> None:
        """End its stdin and give it five seconds to finish before it is killed; never raises."""
        self._pipes.close()
        self._conn._reap(self._proc, grace=5.0)


__all__ = ["LocalConnection", "LocalProcess"]
