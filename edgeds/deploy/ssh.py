"""SSH to devices: the only module that imports paramiko.

Security contract:
- Host keys come only from the target's pinned ``known_hosts`` file; unknown hosts are
  refused with paramiko's ``RejectPolicy`` (fabric would silently auto-add them), a changed
  key raises :class:`~edgeds.errors.HostKeyError`. System/user known_hosts are not read.
- Key auth only: the target's key file; no agent, no password, ``look_for_keys`` off.
- Every network wait has a timeout (connect, banner, auth, each command, each transfer).

Errors: what paramiko, its SFTP client and the socket layer raise (:func:`vendor_errors`) is
mapped at this boundary, by one context manager (:func:`_mapped`), to :class:`HostKeyError`
or :class:`ConnectionFailed` with a one-line message naming the device; a command exceeding
its timeout raises :class:`ConnectionFailed` too. Exceptions raised by the caller's own
callbacks (``progress``, ``on_stderr_line``) pass through unchanged. Cleanup of a connection
being dropped (closing channels, SFTP, sockets) never raises a vendor error: it is logged at
debug level with its traceback.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import ConnectionFailed, DeployError, HostKeyError
from .transport import CommandResult, ProgressFn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """How to reach one device. Paths are absolute on this machine."""

    name: str
    address: str
    port: int
    user: str
    key_path: Path | None
    known_hosts: Path
    connect_timeout_s: float = 10.0

    @property
    def host_id(self) -> str:
        """The known_hosts name of the device: ``addr`` on port 22, ``[addr]:port`` otherwise."""
        return self.address if self.port == 22 else f"[{self.address}]:{self.port}"


@dataclass(frozen=True)
class HostKey:
    """A device's SSH host key as presented on the wire."""

    host_id: str
    key_type: str
    base64: str

    @property
    def fingerprint(self) -> str:
        """OpenSSH style ``SHA256:...`` fingerprint."""
        digest = hashlib.sha256(base64.b64decode(self.base64)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def known_hosts_line(self) -> str:
        return f"{self.host_id} {self.key_type} {self.base64}"


def vendor_errors() -> tuple[type[BaseException], ...]:
    """The exception types paramiko, its SFTP client and the socket layer raise to a caller.

    ``SSHException`` is the base of paramiko's own (authentication, host key, channel, protocol);
    the others derive from ``Exception`` directly: ``SFTPError`` (SFTP protocol), ``UnknownKeyType``
    and ``BERException`` (key files), ``InvalidHostKey`` (a known_hosts line). Sockets, SFTP status
    codes and ``NoValidConnectionsError`` are ``OSError``; a transport closed mid-read is ``EOFError``.
    """
    import paramiko
    from paramiko.ber import BERException
    from paramiko.hostkeys import InvalidHostKey
    from paramiko.pkey import UnknownKeyType
    from paramiko.sftp import SFTPError

    return (paramiko.SSHException, SFTPError, UnknownKeyType, BERException, InvalidHostKey, OSError, EOFError)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (paramiko's auth failures span several)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _map_error(endpoint: Endpoint, exc: BaseException) -> DeployError:
    """The edgeds error for a vendor exception met while talking to ``endpoint``: one line, naming it."""
    import paramiko
    from paramiko.hostkeys import InvalidHostKey

    where = f"{endpoint.name} ({endpoint.user}@{endpoint.host_id})"
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            f"{where}: HOST KEY CHANGED: got {exc.key.get_name()} "
            f"{HostKey(endpoint.host_id, exc.key.get_name(), exc.key.get_base64()).fingerprint}, pinned "
            f"{HostKey(endpoint.host_id, exc.expected_key.get_name(), exc.expected_key.get_base64()).fingerprint}"
            f" in {endpoint.known_hosts}. Refusing to connect (possible man-in-the-middle); if the device was "
            "reinstalled, remove its line and run `edgeds enroll` again."
        )
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return HostKeyError(
            f"{where}: host key is not pinned in {endpoint.known_hosts}; run `edgeds enroll --target ...` first"
        )
    if isinstance(exc, InvalidHostKey):
        return HostKeyError(f"{where}: unreadable pinned host key in {endpoint.known_hosts}: {_one_line(exc)}")
    if isinstance(exc, paramiko.AuthenticationException):
        return ConnectionFailed(f"{where}: key authentication failed: {_one_line(exc)}")
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return ConnectionFailed(f"{where}: timed out: {_one_line(exc)}")
    return ConnectionFailed(f"{where}: {_one_line(exc)}")


@contextlib.contextmanager
def _mapped(endpoint: Endpoint) -> Iterator[None]:
    """Map the vendor exceptions raised inside (:func:`vendor_errors`) to :class:`DeployError`.

    ``DeployError`` raised inside and exceptions of any other type (the caller's callbacks, bugs)
    pass through unchanged; the vendor exception is kept as ``__cause__``.
    """
    try:
        yield
    except vendor_errors() as exc:
        raise _map_error(endpoint, exc) from exc


@contextlib.contextmanager
def _quietly(endpoint: Endpoint, what: str) -> Iterator[None]:
    """Cleanup of a connection being dropped: a vendor error is logged (debug, with traceback) and
    swallowed, because the peer is usually gone already and there is nothing left to undo."""
    try:
        yield
    except vendor_errors():
        log.debug("%s: %s failed (ignored: the connection is being dropped)", endpoint.name, what, exc_info=True)


def _load_pinned(known_hosts: Path) -> Any:
    import paramiko
    from paramiko.hostkeys import InvalidHostKey

    keys = paramiko.HostKeys()
    if known_hosts.exists():
        try:
            keys.load(str(known_hosts))
        except (OSError, UnicodeDecodeError, paramiko.SSHException, InvalidHostKey) as exc:
            raise HostKeyError(f"cannot read pinned host keys {known_hosts}: {_one_line(exc)}") from exc
    return keys


class Connection:
    """One authenticated SSH connection to a device. Thread-compatible, not thread-safe.

    Use as a context manager; :meth:`close` is idempotent.
    """

    def __init__(self, endpoint: Endpoint) -> None:
        import paramiko

        self.endpoint = endpoint
        self._client = paramiko.SSHClient()
        # Never the system or user known_hosts: only the target's pinned file.
        pinned = _load_pinned(endpoint.known_hosts)
        for hostname, entries in pinned.items():
            for key_type, key in entries.items():
                self._client.get_host_keys().add(hostname, key_type, key)
        self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self._sftp: Any = None
        self._forwards: list[LocalForward] = []
        timeout = endpoint.connect_timeout_s
        try:
            with _mapped(endpoint):
                self._client.connect(
                    endpoint.address,
                    port=endpoint.port,
                    username=endpoint.user,
                    key_filename=str(endpoint.key_path) if endpoint.key_path else None,
                    allow_agent=False,
                    look_for_keys=False,
                    timeout=timeout,
                    banner_timeout=timeout,
                    auth_timeout=timeout,
                    channel_timeout=timeout,
                )
        except BaseException:
            self._client.close()
            raise
        transport = self._client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)

    # -- commands ------------------------------------------------------------------------------

    def _exec(self, argv: Sequence[str]) -> tuple[Any, Any]:
        """A new session channel running ``argv`` (quoted here), and the transport it is on."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed(f"{self.endpoint.name}: connection is closed")
        chan = transport.open_session(timeout=self.endpoint.connect_timeout_s)
        chan.exec_command(" ".join(shlex.quote(a) for a in argv))
        return chan, transport

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        timeout: float = 120.0,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run ``argv`` (quoted here) on the device; stdout/stderr collected.

        ``on_stderr_line`` is called for each complete stderr line as it arrives (progress).
        Raises :class:`ConnectionFailed` on a dropped connection or after ``timeout`` seconds.
        """
        with _mapped(self.endpoint):
            chan, transport = self._exec(argv)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            pending = b""
            deadline = time.monotonic() + timeout
            while True:
                progressed = False
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                    progressed = True
                if chan.recv_stderr_ready():
                    chunk = chan.recv_stderr(1 << 16)
                    err += chunk
                    progressed = True
                    if on_stderr_line is not None:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            on_stderr_line(line.decode(errors="replace"))
                if progressed:
                    continue
                if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                    break
                if not transport.is_active():
                    raise ConnectionFailed(f"{self.endpoint.name}: connection lost while running {argv[:3]}")
                if time.monotonic() > deadline:
                    chan.close()
                    raise ConnectionFailed(f"{self.endpoint.name}: {argv[:3]} did not finish in {timeout:.0f}s")
                time.sleep(0.005)
            code = chan.recv_exit_status()
            chan.close()
        return CommandResult(code, bytes(out), bytes(err))

    # -- files ---------------------------------------------------------------------------------

    def _sftp_client(self) -> Any:
        if self._sftp is None:
            with _mapped(self.endpoint):
                self._sftp = self._client.open_sftp()
                self._sftp.get_channel().settimeout(self.endpoint.connect_timeout_s * 3)
        return self._sftp

    def upload(
        self,
        local: Path,
        remote: str,
        *,
        progress: ProgressFn | None = None,
        chunk: int = 256 * 1024,
    ) -> int:
        """Upload ``local`` to ``remote`` via ``remote + '.part'``, resuming a previous partial upload.

        The part file is renamed (POSIX rename) to ``remote`` only when complete. Returns the
        bytes sent in this call (0 when ``remote`` already exists with the right size).
        """
        sftp = self._sftp_client()
        size = local.stat().st_size
        part = remote + ".part"
        with _mapped(self.endpoint):
            with contextlib.suppress(OSError):
                if sftp.stat(remote).st_size == size:
                    return 0
            offset = 0
            with contextlib.suppress(OSError):
                offset = sftp.stat(part).st_size
            if offset > size:
                sftp.remove(part)
                offset = 0
            sent = 0
            with local.open("rb") as src, sftp.open(part, "ab" if offset else "wb") as dst:
                dst.set_pipelined(True)
                src.seek(offset)
                done = offset
                while True:
                    data = src.read(chunk)
                    if not data:
                        break
                    dst.write(data)
                    done += len(data)
                    sent += len(data)
                    if progress is not None:
                        progress(done, size)
            sftp.posix_rename(part, remote)
        return sent

    def stream(
        self, argv: Sequence[str], on_output: Callable[[bytes], None], stop: threading.Event | None = None
    ) -> int | None:
        """Run ``argv`` on the device and hand its stdout to ``on_output`` as it comes, until it ends
        or ``stop`` is set (or the caller is interrupted); then its stdin is closed and its channel
        too. The exit code, or None when it was still running. ConnectionFailed when the
        connection drops."""
        with _mapped(self.endpoint):
            chan, transport = self._exec(argv)
        code: int | None = None
        try:
            with _mapped(self.endpoint):
                while stop is None or not stop.is_set():
                    if chan.recv_ready():
                        on_output(chan.recv(1 << 16))
                        continue
                    if chan.recv_stderr_ready():
                        chan.recv_stderr(1 << 16)  # not part of the stream; read so the channel never stalls
                        continue
                    if chan.exit_status_ready() and (chan.eof_received or chan.closed):
                        code = chan.recv_exit_status()
                        break
                    if not transport.is_active():
                        raise ConnectionFailed(f"{self.endpoint.name}: connection lost while running {argv[:3]}")
                    time.sleep(0.02)
        finally:
            with _quietly(self.endpoint, "closing stdin of a streamed command"):
                chan.shutdown_write()
            with _quietly(self.endpoint, "closing a streamed command's channel"):
                chan.close()
        return code

    def start(self, argv: Sequence[str], on_stderr_line: Callable[[str], None] | None = None) -> RemoteProcess:
        """Start ``argv`` on the device and keep its stdin open for line-based requests."""
        with _mapped(self.endpoint):
            chan, _ = self._exec(argv)
        return RemoteProcess(self.endpoint, chan, on_stderr_line)

    def write_file(self, remote: str, data: bytes) -> None:
        """Write small ``data`` to ``remote`` atomically (temp + rename)."""
        sftp = self._sftp_client()
        with _mapped(self.endpoint):
            with sftp.open(remote + ".tmp", "wb") as handle:
                handle.write(data)
            sftp.posix_rename(remote + ".tmp", remote)

    def makedirs(self, remote: str) -> None:
        result = self.run(["mkdir", "-p", remote], timeout=30)
        if result.exit_code != 0:
            raise ConnectionFailed(f"{self.endpoint.name}: mkdir {remote}: {result.stderr.decode()[-300:]}")

    def is_active(self) -> bool:
        """Whether the SSH transport is still up (False after the device dropped it)."""
        transport = self._client.get_transport()
        return bool(transport is not None and transport.is_active())

    # -- port forwarding -----------------------------------------------------------------------

    def forward(self, remote_host: str, remote_port: int) -> LocalForward:
        """Forward a loopback port of this machine to ``remote_host:remote_port`` as seen from the
        device (``ssh -L``): how the HIL runner reaches an agent bound to the device's loopback.
        The forward lives until :meth:`LocalForward.close` or until this connection closes."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed(f"{self.endpoint.name}: connection is closed")
        forward = LocalForward(self.endpoint, transport, remote_host, remote_port)
        self._forwards.append(forward)
        return forward

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the forwards, the SFTP session and the connection; never raises a vendor error."""
        for forward in self._forwards:
            forward.close()
        self._forwards = []
        if self._sftp is not None:
            with _quietly(self.endpoint, "closing SFTP"):
                self._sftp.close()
        self._sftp = None
        with _quietly(self.endpoint, "closing the connection"):
            self._client.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalForward:
    """``127.0.0.1:<port>`` here -> ``remote_host:remote_port`` from the device, through SSH.

    One thread accepts; each accepted connection gets a ``direct-tcpip`` channel and a thread
    copying bytes both ways until either side closes. :meth:`close` stops accepting and closes
    every open pair. Idempotent.
    """

    def __init__(self, endpoint: Endpoint, transport: Any, remote_host: str, remote_port: int) -> None:
        self.endpoint = endpoint
        self.remote = (remote_host, remote_port)
        self._transport = transport
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._open: set[Any] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"ssh-forward-{endpoint.name}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                chan = self._transport.open_channel("direct-tcpip", self.remote, peer, timeout=10.0)
            except vendor_errors():
                # the device refused (nothing listening there) or the connection is gone: the local
                # client sees EOF, as it would from the refused port itself; keep accepting
                log.debug("%s: forward to %s:%s refused", self.endpoint.name, *self.remote, exc_info=True)
                client.close()
                continue
            with self._lock:
                self._open.update((client, chan))
            threading.Thread(target=self._pump, args=(client, chan), daemon=True).start()

    def _pump(self, client: socket.socket, chan: Any) -> None:
        import select

        sources: list[Any] = [client, chan]
        try:
            while not self._closed.is_set():
                ready, _, _ = select.select(sources, [], [], 0.5)
                if client in ready:
                    data = client.recv(1 << 16)
                    if data:
                        chan.sendall(data)
                    else:  # the client is done sending: pass the half-close on, keep reading replies
                        chan.shutdown_write()
                        sources.remove(client)
                if chan in ready:
                    data = chan.recv(1 << 16)
                    if not data:
                        break
                    client.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                self._open.discard(client)
                self._open.discard(chan)
            with _quietly(self.endpoint, "closing a forwarded channel"):
                chan.close()
            with _quietly(self.endpoint, "closing a forwarded socket"):
                client.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            pending, self._open = list(self._open), set()
        for end in pending:
            with _quietly(self.endpoint, "closing a forward"):
                end.close()
        self._thread.join(2.0)

    def __enter__(self) -> LocalForward:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RemoteProcess:
    """A command running on the device that answers one stdout line per stdin line."""

    def __init__(self, endpoint: Endpoint, chan: Any, on_stderr_line: Callable[[str], None] | None) -> None:
        self.endpoint = endpoint
        self._chan = chan
        self._on_stderr = on_stderr_line
        self._out = b""
        self._err = b""

    def request(self, line: bytes, timeout: float) -> bytes:
        """Send one line, return the next stdout line. :class:`ConnectionFailed` on death or timeout."""
        chan = self._chan
        with _mapped(self.endpoint):
            chan.sendall(line.rstrip(b"\n") + b"\n")
            deadline = time.monotonic() + timeout
            while b"\n" not in self._out:
                progressed = False
                if chan.recv_ready():
                    self._out += chan.recv(1 << 16)
                    progressed = True
                if chan.recv_stderr_ready():
                    self._err += chan.recv_stderr(1 << 16)
                    *lines, self._err = self._err.split(b"\n")
                    if self._on_stderr is not None:
                        for text in lines:
                            self._on_stderr(text.decode(errors="replace"))
                    progressed = True
                if progressed:
                    continue
                if chan.exit_status_ready() or chan.closed or chan.eof_received:
                    raise ConnectionFailed(
                        f"{self.endpoint.name}: the device process ended without answering "
                        f"(exit {chan.recv_exit_status() if chan.exit_status_ready() else '?'}): "
                        f"{self._err.decode(errors='replace')[-300:]}"
                    )
                if time.monotonic() > deadline:
                    raise ConnectionFailed(f"{self.endpoint.name}: no answer in {timeout:.0f}s")
                time.sleep(0.005)
        answer, _, self._out = self._out.partition(b"\n")
        return answer

    def close(self) -> None:
        """End the command's stdin and close its channel; never raises a vendor error."""
        with _quietly(self.endpoint, "closing stdin of a device process"):
            self._chan.shutdown_write()
        with _quietly(self.endpoint, "closing a device process channel"):
            self._chan.close()


def connect(endpoint: Endpoint) -> Connection:
    """Open an authenticated connection (host key checked against the pinned file)."""
    return Connection(endpoint)


# --------------------------------------------------------------------------- host keys


def fetch_host_key(address: str, port: int, timeout: float = 10.0) -> HostKey:
    """The host key a device presents (no authentication; nothing trusted yet)."""
    import paramiko

    host_id = address if port == 22 else f"[{address}]:{port}"
    endpoint = Endpoint(host_id, address, port, "-", None, Path("/dev/null"), timeout)
    sock: socket.socket | None = None
    transport: Any = None
    try:
        with _mapped(endpoint):
            sock = socket.create_connection((address, port), timeout=timeout)
            transport = paramiko.Transport(sock)
            transport.banner_timeout = timeout
            done = threading.Event()
            transport.start_client(event=done, timeout=timeout)
            done.wait(timeout)
            key = transport.get_remote_server_key()
    finally:
        if transport is not None:
            transport.close()
        if sock is not None:
            sock.close()
    return HostKey(host_id, key.get_name(), key.get_base64())


def pinned_keys(known_hosts: Path, host_id: str) -> list[HostKey]:
    """The keys pinned for ``host_id`` in ``known_hosts``."""
    keys = _load_pinned(known_hosts)
    found = keys.lookup(host_id) or {}
    return [HostKey(host_id, key_type, key.get_base64()) for key_type, key in found.items()]


def pin_host_key(known_hosts: Path, key: HostKey) -> bool:
    """Pin ``key``; True if added, False if already pinned. A different pinned key of the same
    type raises :class:`HostKeyError` (never replaced silently)."""
    for existing in pinned_keys(known_hosts, key.host_id):
        if existing.key_type == key.key_type:
            if existing.base64 == key.base64:
                return False
            raise HostKeyError(
                f"{key.host_id}: HOST KEY CHANGED: device presents {key.fingerprint}, {known_hosts} pins "
                f"{existing.fingerprint}. Refusing to re-pin; remove the old line by hand if the device was "
                "reinstalled."
            )
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    with known_hosts.open("a") as handle:
        handle.write(key.known_hosts_line() + "\n")
    return True


__all__ = [
    "CommandResult",
    "Connection",
    "Endpoint",
    "HostKey",
    "RemoteProcess",
    "connect",
    "fetch_host_key",
    "pin_host_key",
    "pinned_keys",
    "vendor_errors",
]
