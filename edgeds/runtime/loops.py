"""The inference server's event-loop threads: one asyncio loop per thread, the listening sockets,
and the acceptor that hands each new connection to the loop with the fewest.

Lifecycle of :class:`EventLoops`: construct (one :class:`EventLoop` per thread, each with its
:class:`~edgeds.runtime.http1.ConnectionGroup`), :meth:`~EventLoops.bind` the listening sockets,
:meth:`~EventLoops.start` the threads, :meth:`~EventLoops.stop` them. It runs once: a server that
starts again makes a new one (so every run starts with fresh per-loop state).

Loop 0 accepts for all of them. An accepted socket is counted on the loop with the fewest
connections and handed to it; that loop owns it from then on (its protocol, its buffers, its
writes), and the count drops when the connection ends.

Limits (:class:`~edgeds.config.ServerLimits`): at most :attr:`EventLoops.cap` connections are
served, ``max_connections`` or fewer when the descriptor limit (``RLIMIT_NOFILE``) leaves less room
beside what the process holds at :meth:`~EventLoops.start` (``_FD_HEADROOM`` more are left for files
it opens later). Past the cap, up to ``reserve_connections`` more are taken as *reserved*
connections of loop 0 (health and metrics only, see :mod:`edgeds.runtime.http1`), the oldest of them
dropped to make room for a new one (mid-handshake too), so a health check gets through a flood of
idle connections. While no place is free, loop 0 stops watching the listener (clients wait in its
backlog) until a connection ends or ``_ROOM_WAIT_S`` passes. When ``accept`` fails for want of
descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), accepting pauses for ``accept_backoff_s``
while the open connections are served, and one line is logged per ``_ACCEPT_LOG_S`` however often it
happens. With a TLS context every accepted socket is wrapped by the loop that adopts it (the
handshake runs there, bounded by ``TLS_HANDSHAKE_TIMEOUT_S``; a client that fails it is closed and
never reaches HTTP).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import os
import resource
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable

from ..config import ServerLimits
from ..errors import EdgedsError
from .http1 import Admit, ConnectionGroup, Dispatch

log = logging.getLogger(__name__)

# What a connection past the connection cap may still ask for: health and metrics.
RESERVED_TARGETS = ("/v2/health/", "/metrics")

_FD_HEADROOM = 32  # descriptors left beside connections for what the process opens later (models, logs)
_ACCEPT_LOG_S = 10.0  # at most one line per this many seconds about failing accepts
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ROOM_WAIT_S = 0.05  # at the cap, the longest wait before accepting again (sooner when a connection ends)
TLS_HANDSHAKE_TIMEOUT_S = 10.0


class EventLoop:
    """One event-loop thread and the state only that thread touches (``connections`` excepted: the
    acceptor reads and counts it, under the :class:`EventLoops` lock).

    ``loop`` and ``ident`` are set once the thread runs; ``http`` serves the connections it owns.
    """

    def __init__(self, index: int, http: Callable[[EventLoop], ConnectionGroup]) -> None:
        self.index = index
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.ident = -1  # the thread's ident once it runs
        self.stopped: asyncio.Event | None = None
        self.ready = threading.Event()
        self.connections = 0  # live connections (acceptor and loop: under the EventLoops' lock)
        self.http = http(self)

    def call(self, callback: Callable[[], None]) -> bool:
        """Run ``callback`` on this loop (from any thread); False (dropped) once the loop has closed."""
        loop = self.loop
        if loop is None:
            return False
        try:
            loop.call_soon_threadsafe(callback)
        except RuntimeError:
            return False
        return True


class EventLoops:
    """``count`` event-loop threads serving HTTP/1.1 connections on the sockets of :meth:`bind`.

    ``dispatch(loop)`` gives each loop's connections their dispatch callback (called once per loop,
    at construction); ``limits``, ``reserved_targets`` and ``alignment`` are passed to every
    :class:`~edgeds.runtime.http1.ConnectionGroup`. The threads are daemons named ``name`` (with
    ``-i`` appended when there are several). ``tls``: every connection speaks TLS with this context.
    """

    def __init__(
        self,
        count: int,
        dispatch: Callable[[EventLoop], Dispatch],
        *,
        limits: ServerLimits | None = None,
        reserved_targets: tuple[str, ...] = (),
        alignment: int,
        name: str = "oip-server",
        tls: ssl.SSLContext | None = None,
        admit: Admit | None = None,
    ) -> None:
        self._tls = tls
        self._accept_lock = threading.Lock()
        self._listeners: list[socket.socket] = []
        self._start_error: BaseException | None = None
        self._name = name
        self._address = ""
        self.limits = limits = limits if limits is not None else ServerLimits()
        self.cap = limits.max_connections  # connections served (lowered by start() to what descriptors allow)
        self._paused: dict[socket.socket, asyncio.TimerHandle] = {}  # listeners waiting to accept again
        self._room_waits: set[socket.socket] = set()  # those of them waiting for a connection to end
        self._accept_failures = 0  # since the last line logged about them
        self._accept_logged = -_ACCEPT_LOG_S

        def http(lp: EventLoop) -> ConnectionGroup:
            lost = functools.partial(self._forget, lp)
            return ConnectionGroup(
                dispatch(lp),
                call=lp.call,
                lost=lost,
                limits=limits,
                reserved_targets=reserved_targets,
                alignment=alignment,
                reserve_freed=self._room_freed if lp.index == 0 else None,
                admit=admit,
            )

        self.loops = [EventLoop(i, http) for i in range(count)]

    @property
    def running(self) -> bool:
        """Whether any of the threads runs."""
        return any(lp.thread is not None and lp.thread.is_alive() for lp in self.loops)

    @property
    def alive(self) -> bool:
        """Whether every thread runs (False once one has stopped)."""
        return all(lp.thread is not None and lp.thread.is_alive() for lp in self.loops)

    def bind(self, host: str, port: int) -> int:
        """Listen on every address ``host`` resolves to; the bound port (the one picked for port 0).
        Raises EdgedsError (the OSError as its cause) when it cannot."""
        try:
            self._listeners = _listen(host, port)
        except OSError as exc:
            raise EdgedsError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._address = f"{host}:{port}"
        return int(self._listeners[0].getsockname()[1])

    def wait(self) -> None:
        """Block until the loops stop or, on the main thread, until SIGINT/SIGTERM arrives."""
        done = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: done.set())
        while not done.is_set() and self.alive:
            done.wait(0.5)

    def start(self) -> None:
        """Start the threads; returns once each runs (loop 0 accepting). Raises EdgedsError, with the
        threads stopped, when a loop cannot start. Sets :attr:`cap` from the descriptors left now."""
        self.cap = _connection_cap(self.limits)
        for lp in self.loops:
            name = self._name if len(self.loops) == 1 else f"{self._name}-{lp.index}"
            lp.thread = threading.Thread(target=self._thread_main, args=(lp,), name=name, daemon=True)
            lp.thread.start()
            lp.ready.wait()
        error = self._start_error
        if error is not None:
            self.stop()
            raise EdgedsError(f"cannot serve on {self._address}: {error}") from error

    def stop(self) -> None:
        """Stop listening, close the connections and the loops, and join the threads (loop 0, the
        acceptor, first, so no connection is handed to a loop that has stopped)."""
        for lp in self.loops:
            stopped = lp.stopped
            if stopped is not None:
                lp.call(stopped.set)
            if lp.thread is not None:
                lp.thread.join(timeout=10)
                lp.thread = None
        for sock in self._listeners:  # when a loop could not close them
            sock.close()
        self._listeners = []

    def _thread_main(self, lp: EventLoop) -> None:
        try:
            asyncio.run(self._main(lp))
        except BaseException as exc:
            if lp.ready.is_set():  # it served, then failed: the server sees the thread gone (alive)
                log.exception("event loop %d stopped on an error", lp.index)
            else:
                self._start_error = exc  # start() raises it
        finally:
            lp.ready.set()

    async def _main(self, lp: EventLoop) -> None:
        loop = lp.loop = asyncio.get_running_loop()
        lp.ident = threading.get_ident()
        lp.stopped = asyncio.Event()
        if lp.index == 0:  # the first loop accepts for all of them
            for sock in self._listeners:
                loop.add_reader(sock.fileno(), self._accept, sock)
        lp.ready.set()
        try:
            await lp.stopped.wait()
        finally:
            if lp.index == 0:
                for handle in self._paused.values():
                    handle.cancel()
                for sock in self._listeners:
                    if sock.fileno() >= 0:
                        loop.remove_reader(sock.fileno())
                    sock.close()
            lp.http.close()

    def _accept(self, listener: socket.socket) -> None:
        """Loop 0 (``listener`` is readable): accept every waiting connection and give each to the loop
        with the fewest; past the cap, make one a reserved connection of loop 0, dropping the oldest
        reserved one when none is free (room is made only for a client known to wait: on the first
        turn, when the listener was readable). Never returns with the listener watched, readable
        and nothing done (the loop would spin): it waits for room instead (:meth:`_wait_for_room`)."""
        first = self.loops[0]
        accepted = False
        while True:
            with self._accept_lock:
                over = sum(lp.connections for lp in self.loops) >= self.cap
            if over and accepted:
                return  # a client still waiting makes the listener readable: called again
            if over and not first.http.make_reserve_room():
                self._wait_for_room(listener)  # the oldest reserved connection is on its way out
                return
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # the client waits in the backlog (or is refused); the server goes on
                self._accept_failed(listener, exc)
                return
            conn.setblocking(False)
            accepted = True
            if over:
                self._adopt(first, conn, reserved=True)  # on this loop, at once: counted before the next
                return
            with self._accept_lock:
                lp = min(self.loops, key=lambda candidate: candidate.connections)
                lp.connections += 1
            if not lp.call(functools.partial(self._adopt, lp, conn)):
                conn.close()  # that loop has stopped: the server is stopping
                self._forget(lp)

    def _accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        """Loop 0: ``accept`` failed. Out of descriptors or memory: stop accepting on ``listener`` for
        ``accept_backoff_s`` (the open connections go on). Logged at most once per ``_ACCEPT_LOG_S``."""
        exhausted = exc.errno in _OUT_OF_RESOURCES
        self._accept_failures += 1
        now = time.monotonic()
        if now - self._accept_logged >= _ACCEPT_LOG_S:
            more = f" ({self._accept_failures - 1} more since the last such line)" if self._accept_failures > 1 else ""
            pause = f"; accepting pauses for {self.limits.accept_backoff_s} s at a time" if exhausted else ""
            log.warning("accept failed: %s%s%s", exc, pause, more)
            self._accept_logged, self._accept_failures = now, 0
        loop = self.loops[0].loop
        if not exhausted or loop is None:
            return
        loop.remove_reader(listener.fileno())
        self._paused[listener] = loop.call_later(self.limits.accept_backoff_s, self._resume, listener)

    def _wait_for_room(self, listener: socket.socket) -> None:
        """Loop 0: at the cap with no reserved place free yet. Stop watching ``listener`` (it stays
        readable: the loop would spin) until a connection ends or ``_ROOM_WAIT_S`` has passed."""
        loop = self.loops[0].loop
        if loop is None:
            return
        loop.remove_reader(listener.fileno())
        self._paused[listener] = loop.call_later(_ROOM_WAIT_S, self._resume, listener)
        self._room_waits.add(listener)

    def _room_freed(self) -> None:
        """Loop 0: a connection or a reserved place ended; accept again on the listeners waiting
        for room."""
        for listener in list(self._room_waits):
            handle = self._paused.get(listener)
            if handle is not None:
                handle.cancel()
            self._resume(listener)

    def _resume(self, listener: socket.socket) -> None:
        """Loop 0: accept on ``listener`` again after a pause (unless the loop is stopping)."""
        first = self.loops[0]
        self._paused.pop(listener, None)
        self._room_waits.discard(listener)
        if first.loop is None or first.stopped is None or first.stopped.is_set() or listener.fileno() < 0:
            return
        first.loop.add_reader(listener.fileno(), self._accept, listener)

    def _adopt(self, lp: EventLoop, conn: socket.socket, reserved: bool = False) -> None:
        """On ``lp``: make an accepted socket one of its connections."""
        loop = lp.loop
        if loop is None or lp.stopped is None or lp.stopped.is_set():
            conn.close()
            if not reserved:
                self._forget(lp)
            return
        protocol = lp.http.protocol(reserved)  # a reserved one is counted from here
        task = loop.create_task(self._connect(lp, conn, protocol, reserved))
        if reserved:  # droppable while it connects (a client that never completes its TLS handshake)
            lp.http.connecting(protocol, task.cancel)
            task.add_done_callback(functools.partial(self._reserved_connected, lp, conn, protocol))

    @staticmethod
    def _reserved_connected(
        lp: EventLoop, conn: socket.socket, protocol: asyncio.BufferedProtocol, task: asyncio.Task[None]
    ) -> None:
        """A reserved connection's connecting task is done. Cancelled before it ran (dropped for
        room at once), its socket is closed here; ``reserved_gone`` is a no-op once counted."""
        if task.cancelled():
            conn.close()
            lp.http.reserved_gone(protocol)

    async def _connect(
        self, lp: EventLoop, conn: socket.socket, protocol: asyncio.BufferedProtocol, reserved: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._tls is None:
                await loop.connect_accepted_socket(lambda: protocol, conn)
            else:
                await loop.connect_accepted_socket(
                    lambda: protocol, conn, ssl=self._tls, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT_S
                )
        except OSError:  # gone already, or the TLS handshake failed: no connection_lost will come
            conn.close()
            self._never_connected(lp, protocol, reserved)
        except asyncio.CancelledError:  # the loop is stopping, or a reserved one dropped for room
            conn.close()
            self._never_connected(lp, protocol, reserved)
            raise

    def _never_connected(self, lp: EventLoop, protocol: asyncio.BufferedProtocol, reserved: bool) -> None:
        if reserved:
            lp.http.reserved_gone(protocol)
        else:
            self._forget(lp)

    def _forget(self, lp: EventLoop) -> None:
        with self._accept_lock:
            lp.connections -= 1
        if self._room_waits:  # (read from any loop: a stale answer only waits for the timer)
            self.loops[0].call(self._room_freed)


def _connection_cap(limits: ServerLimits) -> int:
    """``max_connections``, or fewer when the descriptor limit leaves less room beside the descriptors
    open now, ``_FD_HEADROOM`` and the reserved connections (logged when it does)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc (not Linux): assume a typical process
        open_now = 64
    room = soft - open_now - _FD_HEADROOM - limits.reserve_connections
    if room >= limits.max_connections:
        return limits.max_connections
    cap = max(1, room)
    log.warning(
        "serving at most %d connections (max_connections %d): the descriptor limit is %d and %d are open",
        cap,
        limits.max_connections,
        soft,
        open_now,
    )
    return cap


def _listen(host: str, port: int) -> list[socket.socket]:
    """Non-blocking listening sockets for every address ``host`` resolves to (as asyncio's
    ``create_server``; with port 0 the first address picks the port and the others take it too)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, _, _, _, address in dict.fromkeys(infos):
            if port == 0 and sockets:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            # SO_REUSEADDR, and IPV6_V6ONLY for an IPv6 address, as asyncio's create_server
            sockets.append(socket.create_server(address, family=family, backlog=1024))
            sockets[-1].setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


__all__ = ["EventLoop", "EventLoops"]
