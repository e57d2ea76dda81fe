"""HTTP/1.1 for the inference server's connections: framing, keep-alive and connection buffers.

This layer knows nothing of models or routes. It parses each request's head and body, and hands
every complete request to a **dispatch callback**; what the callback returns (or later sends) is
framed and written back. The interface, all of it in this module:

* :class:`ConnectionGroup` ``(dispatch, call=, lost=, limits=, reserved_targets=, alignment=,
  reserve_freed=)``: the connections of one asyncio event loop and what they share;
  :meth:`ConnectionGroup.protocol` makes the protocol object of each accepted socket. ``call`` runs
  a callback on that loop from any thread (False once the loop is gone); ``lost`` is called on the
  loop when a connection ends (``reserve_freed`` when a reserved one does).
* :data:`Dispatch` ``= Callable[[Request], Response | None]``: called on the loop thread with each
  complete :class:`Request`, in arrival order. It returns the :class:`Response`, or None when the
  handler answers later, exactly once, with :meth:`Request.respond` (on the loop thread) or
  :meth:`Request.respond_from_thread` (from any other), or streamed (:meth:`Request.stream`, see
  :mod:`edgeds.runtime.streams`). Until then nothing more is parsed on that connection (answers
  stay in order; pipelined requests wait in the buffer). The callback should not raise: an
  exception that escapes it is logged with its traceback and answered 500 (a stream it began is cut).
* :class:`Request`: method, target, header fields (lower-case names), the decoded body (a
  memoryview, valid until the answer is sent) and whether the connection stays open after it.
* :class:`~edgeds.runtime.http_syntax.Response` (status, body, content type, extra fields, optionally
  its whole keep-alive head rendered in advance) and
  :class:`~edgeds.runtime.http_syntax.HttpError` (answered with its status and ``{"error":
  message}``, the shape of every error this layer sends itself) live in
  :mod:`edgeds.runtime.http_syntax`, with the strict head parser this layer calls.

Framing: request heads are parsed strictly (RFC 9110, RFC 9112; see :func:`~edgeds.runtime.http_syntax.parse_head`): a
malformed head is 400, an HTTP version other than 1.0 or 1.1 is 505, a head over 64 KiB is 431. A
request body comes with a ``Content-Length`` or chunked (``Transfer-Encoding: chunked``, see
:mod:`edgeds.runtime.chunked`), never both, and may be gzip or deflate (``Content-Encoding``;
inflated here, before dispatch, to at most the limit); responses are not compressed. The limit is
the :class:`~edgeds.config.ServerLimits`' ``max_body_bytes`` for a body with a binary tensor header
(below), its ``max_json_bytes`` for any other (a JSON body: parsing it costs many times its size),
and a binary body's JSON header must fit ``max_json_bytes`` too. A body over its limit is 413 (read
and dropped first when it is at most 4 MiB, so the client sees the answer); a transfer coding before
chunked is 501 (400 when the last one is not chunked). Empty lines before a request line are
skipped. The connection stays usable after an error whenever the body could be read; after a
malformed head or chunked body (the framing of what follows is lost) it is answered, shut for
writing and closed once the client closes or after ``_LINGER_S`` (never reset under the answer).
``Expect: 100-continue`` is answered. Every answer of status 400 or more is counted in
:attr:`ConnectionGroup.failures`.

One framing extension is known: a body that starts with a header of ``Inference-Header-Content-Length``
bytes (KServe's binary tensor extension). The connection lays out the next request so that the
bytes after that header land ``alignment``-aligned (readable in place), and
:attr:`Response.header_length` is sent in that field.

Limits (:class:`~edgeds.config.ServerLimits`), enforced by one sweep per event loop (every quarter
of the shortest timeout, at most every second, so each fires within that much of its time; the
request path only stores a deadline): a request head must arrive whole within ``header_timeout_s``
of its first byte (of the connection's opening, for the first; of the answer before it, when its
first bytes came meanwhile); a body (also one dropped after a 413) gets ``body_timeout_s`` of
grace, then each sweep must find at least ``body_min_rate_kib_s`` times the time since the last
received; a keep-alive connection idle for ``idle_timeout_s`` is closed. A head or body cut short
is answered 408 and the connection closed (a connection that sent nothing is closed silently). A
request being served has no deadline. A client that reads nothing (the transport above its
high-water mark) is not read from either, until it reads; after ``idle_timeout_s`` so, its
connection is reset (a stream is cut), and so is a closing connection whose client does not read
its last bytes in that time.

Memory: connection buffers up to ``_POOLED_MAX`` are heap ``bytearray`` objects, kept for the next
connection when one ends (``_BUFFER_POOL`` of them); larger ones are anonymous memory maps, committed
only as bytes arrive (a body announced large but sent slowly costs what was sent) and unmapped as
soon as the connection and the views of its last body are gone.

Reserve: a connection made *reserved* (the acceptor's choice, past the connection cap) serves only
targets that start with one of ``reserved_targets`` (health and metrics) and closes after each
answer; anything else gets 503 and the connection is closed. The group keeps at most
``limits.reserve_connections`` of them, counted from the accept (a TLS handshake included), and
drops the oldest to make room (:meth:`ConnectionGroup.make_reserve_room`): aborted once connected,
its connecting cancelled before (a client that never completes its handshake holds no place).
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import threading
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, cast

from ..config import ServerLimits
from .counters import StatusCounts
from .http_syntax import (
    Head,
    Response,
    stream_head,
)
from .streams import Stream

if TYPE_CHECKING:
    from .http_connection import Connection

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = ServerLimits().max_body_bytes
_INITIAL_BUFFER = 64 * 1024
_BUFFER_POOL = 32  # idle connection buffers kept for reuse
_POOLED_MAX = 1024 * 1024  # larger connection buffers are memory maps, never pooled
_SWEEP_MAX_S = 1.0  # the longest interval between two deadline sweeps of a loop

# A connection buffer: a heap bytearray (pooled) or, past _POOLED_MAX, an anonymous memory map.
_Buffer = bytearray | mmap.mmap


class Request:
    """One complete request, as the dispatch callback gets it.

    ``headers`` has lower-case names (a repeated field's values joined with ", ") and is shared by
    every request with the same head bytes: never change it. ``body`` is the decoded body
    (de-chunked and inflated): a view of the connection's buffer, valid until the answer is sent;
    keep nothing that points into it past that. ``keep_alive``: the connection stays open after the
    answer (for a stream, until it is closed). Answer once: return the response from the callback,
    or call :meth:`respond`, :meth:`respond_from_thread` or :meth:`stream` later.
    """

    __slots__ = ("_connection", "body", "headers", "keep_alive", "method", "target")

    def __init__(
        self,
        connection: Connection,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: memoryview,
        keep_alive: bool,
    ) -> None:
        self._connection = connection
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def respond(self, response: Response) -> None:
        """Send the answer (on the connection's loop thread), then go on parsing."""
        self._connection._finish(response, self.keep_alive, self.body)

    def respond_from_thread(self, response: Response) -> None:
        """Send the answer from a thread other than the loop's (an engine worker): written from this
        thread when nothing else is queued on the connection (saving the loop a wake-up), otherwise
        handed to the loop, one wake-up for all the answers handed over meanwhile."""
        connection = self._connection
        if not connection._answer_from_thread(response, self.keep_alive, self.body):
            connection._group._hand_over(self, response)

    def on_lost(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` on the loop if the connection is lost (the client went away) before
        this request is answered; None forgets it (before answering, so that a later loss of the
        keep-alive connection does not call it)."""
        self._connection._on_lost = callback

    def stream(
        self,
        status: int = 200,
        content_type: str = "text/event-stream",
        fields: tuple[tuple[str, str], ...] = (),
        on_cancel: Callable[[], None] | None = None,
    ) -> Stream:
        """Answer with a body sent as it is produced, from any thread (the dispatch callback then
        returns None): the head goes out at once, the :class:`~edgeds.runtime.streams.Stream` sends
        the rest. ``on_cancel``: called on the loop if the client goes before the stream is closed."""
        connection, group = self._connection, self._connection._group
        chunked = connection._version == "HTTP/1.1"  # HTTP/1.0: the body ends with the connection
        keep_alive = self.keep_alive and chunked
        head = stream_head(status, content_type, fields, chunked, keep_alive)
        done = partial(connection._stream_ended, keep_alive, self.body)
        stream = Stream(head, chunked=chunked, call=group._call, loop_thread=group.loop_thread, done=done)
        stream.on_cancel = on_cancel
        if status >= 400:
            group.failures.add(status)
        stream._start(connection._attach_stream)
        return stream


Dispatch = Callable[[Request], Response | None]
# Called with a request's method, target and header fields once its head is parsed, before its body
# is read or ``100 Continue`` is sent: a Response refuses it there (answered, then the connection is
# closed without reading the body); None lets it in.
Admit = Callable[[str, str, Mapping[str, str]], Response | None]


class ConnectionGroup:
    """The connections of one asyncio event loop and what they share: the dispatch callback and the
    limits (both fixed at construction), the parsed-head memo, the idle connection buffers and the
    deadline sweep.

    Used on its loop's thread, except :meth:`Request.respond_from_thread`'s hand-over (locked).
    ``call(callback)`` must run ``callback`` on that loop from any thread and return False once it
    cannot; ``lost()`` is called on the loop each time one of the connections ends (reserved ones
    excepted: the group counts those itself, :attr:`reserved`, and calls ``reserve_freed()`` on the loop
    when one ends). ``reserved_targets``: the target prefixes a reserved connection serves.
    ``alignment`` (bytes, a power of two) is where a binary tensor should land in the connection's
    buffer. ``failures`` counts every answer of status 400 or more sent on these connections; a server
    sharing one counter among its groups sets it before the connections start.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        call: Callable[[Callable[[], None]], bool],
        lost: Callable[[], None],
        limits: ServerLimits | None = None,
        reserved_targets: tuple[str, ...] = (),
        alignment: int = 1,
        reserve_freed: Callable[[], None] | None = None,
        admit: Admit | None = None,
    ) -> None:
        # Imported here, not at the top (that module imports this one), and at construction, not per
        # accepted socket: an import opens files, which a server out of descriptors cannot.
        from .http_connection import Connection

        self._connection_type = Connection
        limits = limits if limits is not None else ServerLimits()
        self.dispatch = dispatch
        self.admit = admit
        self.limits = limits
        self.max_body_bytes = limits.max_body_bytes
        self.max_json_bytes = min(limits.max_json_bytes, self.max_body_bytes)
        self.header_timeout = limits.header_timeout_s
        self.idle_timeout = limits.idle_timeout_s
        self.body_timeout = limits.body_timeout_s
        self.body_rate = limits.body_min_rate_bytes_s
        self.reserved_targets = reserved_targets
        self.alignment = alignment
        self.heads: dict[bytes, Head] = {}  # parsed request heads by their bytes (bounded)
        self.failures = StatusCounts()
        self.connections: set[Connection] = set()  # the open ones
        self.reserved = 0  # reserved connections accepted and not yet lost (see make_reserve_room)
        self.now = 0.0  # the loop's clock at the last sweep: deadlines are set from it (no clock read)
        self.loop_thread = -1  # the ident of the loop's thread, once a connection was made
        self._reserve: deque[Connection] = deque()  # the reserved connections, oldest first (not dropped)
        self._unmade: dict[asyncio.BufferedProtocol, Callable[[], object] | None] = {}  # reserved, connecting: cancel
        self._dropped: set[Connection] = set()  # reserved, dropped by make_reserve_room and not gone yet
        self.sweep_interval = min(_SWEEP_MAX_S, min(self.header_timeout, self.idle_timeout, self.body_timeout) / 4)
        self._sweep: asyncio.TimerHandle | None = None
        self._call = call
        self._lost = lost
        self._reserve_freed = reserve_freed
        self._free_buffers: list[bytearray] = []  # idle connection buffers (take_buffer, give_buffer)
        self._answers: list[tuple[Request, Response]] = []  # handed over by other threads
        self._answers_lock = threading.Lock()
        self._wake_pending = False

    def protocol(self, reserved: bool = False) -> asyncio.BufferedProtocol:
        """The protocol of a new connection (for ``loop.connect_accepted_socket``); a ``reserved`` one
        is counted in :attr:`reserved` at once, until it is lost (or :meth:`reserved_gone`)."""
        connection = self._connection_type(self, reserved)
        if reserved:
            self.reserved += 1
            self._reserve.append(connection)
            self._unmade[connection] = None
        return connection

    def connecting(self, protocol: asyncio.BufferedProtocol, cancel: Callable[[], object]) -> None:
        """``cancel()`` stops the connecting of reserved ``protocol`` (a TLS handshake, say), should
        :meth:`make_reserve_room` drop it before it is made; :meth:`reserved_gone` must follow."""
        if protocol in self._unmade:
            self._unmade[protocol] = cancel

    def reserved_gone(self, protocol: asyncio.BufferedProtocol) -> None:
        """Reserved ``protocol`` ended before ``connection_made`` (its socket failed, its handshake
        failed or it was dropped while connecting). Nothing happens once it was made: its
        ``connection_lost`` counts it."""
        if protocol not in self._unmade:
            return
        del self._unmade[protocol]
        self._forget_reserved(cast("Connection", protocol))

    def make_reserve_room(self) -> bool:
        """Whether a reserved connection may be accepted now. If not, and none is on its way out
        already, the oldest reserved connection is dropped (aborted, or stopped while connecting);
        its place is free once it is gone, on a later turn of the loop."""
        if self.reserved < self.limits.reserve_connections:
            return True
        if self._dropped or not self._reserve:
            return False  # one is closing already (or there is no reserve)
        oldest = self._reserve.popleft()
        self._dropped.add(oldest)
        transport = oldest._transport
        if transport is not None:
            transport.abort()
        else:
            cancel = self._unmade.get(oldest)
            if cancel is not None:
                cancel()
        return False

    def _forget_reserved(self, connection: Connection) -> None:
        self.reserved -= 1
        if connection in self._dropped:
            self._dropped.discard(connection)
        else:
            self._reserve.remove(connection)
        if self._reserve_freed is not None:
            self._reserve_freed()

    def close(self) -> None:
        """Close every open connection (on the loop thread) and stop the sweep."""
        for connection in list(self.connections):
            transport = connection._transport
            if transport is not None:
                transport.close()
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None

    def take_buffer(self) -> bytearray:
        """A connection buffer: a recycled one (already grown to the usual request size) or a new one."""
        pool = self._free_buffers
        return pool.pop() if pool else bytearray(_INITIAL_BUFFER)

    def give_buffer(self, buf: _Buffer) -> None:
        """Keep a lost connection's heap buffer for the next one (recycling keeps RSS flat when clients
        reconnect: no malloc churn of request-sized buffers). A memory map is not kept: dropping it
        unmaps it (once no view of it is left)."""
        if isinstance(buf, bytearray) and len(buf) <= _POOLED_MAX and len(self._free_buffers) < _BUFFER_POOL:
            self._free_buffers.append(buf)

    # -- deadlines

    def _added(self, connection: Connection) -> None:
        """A connection was made: sweep its loop's connections while there are any."""
        self.connections.add(connection)
        if connection._reserved:
            self._unmade.pop(connection, None)
        if self._sweep is None:
            self.loop_thread = threading.get_ident()
            loop = asyncio.get_running_loop()
            self.now = loop.time()
            self._sweep = loop.call_at(self.now + self.sweep_interval, self._sweep_deadlines, loop)

    def _removed(self, connection: Connection) -> None:
        self.connections.discard(connection)
        if connection._reserved:
            self._forget_reserved(connection)
        else:
            self._lost()

    def _sweep_deadlines(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the connections whose deadline has passed; again after an interval while any is open."""
        now = self.now = loop.time()
        for connection in [c for c in self.connections if c._deadline <= now]:
            connection._expire()
        self._sweep = loop.call_at(now + self.sweep_interval, self._sweep_deadlines, loop) if self.connections else None

    def _hand_over(self, request: Request, response: Response) -> None:
        """Any thread: queue an answer for the loop, waking it once for all that queue meanwhile."""
        with self._answers_lock:
            self._answers.append((request, response))
            if self._wake_pending:
                return
            self._wake_pending = True
        self._call(self._send_handed_over)

    def _send_handed_over(self) -> None:
        with self._answers_lock:
            answers, self._answers = self._answers, []
            self._wake_pending = False
        for request, response in answers:
            request.respond(response)


__all__ = [
    "DEFAULT_MAX_BODY",
    "ConnectionGroup",
    "Dispatch",
    "Request",
]
