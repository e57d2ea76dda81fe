"""HTTP/1.1 for the inference server's connections: framing, keep-alive and connection buffers.

This layer knows nothing of models or routes. It parses each request's head and body, and hands
every complete request to a **dispatch callback**; what the callback returns (or later sends) is
framed and written back. The interface, all of it in this module:

* :class:`ConnectionGroup` ``(dispatch, call=, lost=, max_body_bytes=, alignment=)``: the
  connections of one asyncio event loop and what they share; :meth:`ConnectionGroup.protocol` makes
  the protocol object of each accepted socket. ``call`` runs a callback on that loop from any thread
  (False once the loop is gone); ``lost`` is called on the loop when a connection ends.
* :data:`Dispatch` ``= Callable[[Request], Response | None]``: called on the loop thread with each
  complete :class:`Request`, in arrival order. It returns the :class:`Response`, or None when the
  handler answers later, exactly once, with :meth:`Request.respond` (on the loop thread) or
  :meth:`Request.respond_from_thread` (from any other). Until then nothing more is parsed on that
  connection (answers stay in order; pipelined requests wait in the buffer). The callback should not
  raise: an exception that escapes it is logged with its traceback and answered 500.
* :class:`Request`: method, target, header fields (lower-case names), the decoded body (a
  memoryview, valid until the answer is sent) and whether the connection stays open after it.
* :class:`Response`: status, body, content type, and optionally its whole keep-alive head rendered in
  advance; :class:`HttpError` is an error answered with its status and ``{"error": message}``, the
  shape of every error this layer sends itself.

Framing: a request body comes with a ``Content-Length`` or chunked (``Transfer-Encoding: chunked``,
see :mod:`edgeds.runtime.chunked`), and may be gzip or deflate (``Content-Encoding``; inflated here,
before dispatch, to at most ``max_body_bytes``); responses are not compressed. A body over
``max_body_bytes`` is 400 (read and dropped first when it is small enough, so the client sees the
answer); a transfer coding before chunked is 501 (400 when the last one is not chunked). The
connection stays usable after a 400 whenever the body could be read; after a malformed head or
chunked body it is closed. ``Expect: 100-continue`` is answered.

One framing extension is known: a body that starts with a header of ``Inference-Header-Content-Length``
bytes (KServe's binary tensor extension). The connection lays out the next request so that the
bytes after that header land ``alignment``-aligned (readable in place), and
:attr:`Response.header_length` is sent in that field.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .chunked import ChunkedBodyError, ChunkedDecoder
from .memo import remember

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 64 * 1024 * 1024
_DISCARD_LIMIT = 1024 * 1024 * 1024
_HEADER_LIMIT = 64 * 1024
_INITIAL_BUFFER = 64 * 1024
_BUFFER_POOL = 32  # idle connection buffers kept for reuse
# Parsed request heads kept by their bytes: a client's heads repeat byte for byte (same path, same
# fields, same Content-Length for same-shaped tensors). Heads are small; the oldest goes first.
_HEAD_MEMO_SIZE = 256
_HEAD_MEMO_BYTES = 2048

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 501: "Not Implemented"}
_REASONS[500] = "Internal Server Error"
_REASONS[503] = "Service Unavailable"
_REASONS[401] = "Unauthorized"

# A parsed request head: method, target, HTTP version, keep-alive, header fields (lower-case names).
_Head = tuple[str, str, str, bool, Mapping[str, str]]


class HttpError(Exception):
    """An error answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Response:
    """An answer before HTTP framing. ``header_length``, when set, is sent as
    ``Inference-Header-Content-Length``; ``fields`` are further header fields (name, value) sent as
    they are. ``head``, when set, is its whole HTTP head for a keep-alive connection, rendered in
    advance (with :func:`keep_alive_head`) and sent as is."""

    status: int
    body: bytes
    content_type: str = "application/json"
    header_length: int | None = None
    head: bytes | None = None
    fields: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: Any) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


class Request:
    """One complete request, as the dispatch callback gets it.

    ``headers`` has lower-case names (a repeated field's values joined with ", ") and is shared by
    every request with the same head bytes: never change it. ``body`` is the decoded body
    (de-chunked and inflated): a view of the connection's buffer, valid until the answer is sent;
    keep nothing that points into it past that. ``keep_alive``: the connection stays open after the
    answer. Answer once: return the response from the callback, or call :meth:`respond` or
    :meth:`respond_from_thread` later.
    """

    __slots__ = ("_connection", "body", "headers", "keep_alive", "method", "target")

    def __init__(
        self,
        connection: _Connection,
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


Dispatch = Callable[[Request], Response | None]


class ConnectionGroup:
    """The connections of one asyncio event loop and what they share: the dispatch callback and the
    limits (both fixed at construction), the parsed-head memo and the idle connection buffers.

    Used on its loop's thread, except :meth:`Request.respond_from_thread`'s hand-over (locked).
    ``call(callback)`` must run ``callback`` on that loop from any thread and return False once it
    cannot; ``lost()`` is called on the loop each time one of the connections ends. ``alignment``
    (bytes, a power of two) is where a binary tensor should land in the connection's buffer.
    """

    def __init__(
        self,
        dispatch: Dispatch,
        *,
        call: Callable[[Callable[[], None]], bool],
        lost: Callable[[], None],
        max_body_bytes: int = DEFAULT_MAX_BODY,
        alignment: int = 1,
    ) -> None:
        self.dispatch = dispatch
        self.max_body_bytes = max_body_bytes
        self.alignment = alignment
        self.heads: dict[bytes, _Head] = {}  # parsed request heads by their bytes (bounded)
        self.transports: set[asyncio.BaseTransport] = set()  # the open connections'
        self._call = call
        self._lost = lost
        self._free_buffers: list[bytearray] = []  # idle connection buffers (take_buffer, give_buffer)
        self._answers: list[tuple[Request, Response]] = []  # handed over by other threads
        self._answers_lock = threading.Lock()
        self._wake_pending = False

    def protocol(self) -> asyncio.BufferedProtocol:
        """The protocol of a new connection (for ``loop.connect_accepted_socket``)."""
        return _Connection(self)

    def close(self) -> None:
        """Close every open connection (on the loop thread)."""
        for transport in list(self.transports):
            transport.close()

    def take_buffer(self) -> bytearray:
        """A connection buffer: a recycled one (already grown to the usual request size) or a new one."""
        pool = self._free_buffers
        return pool.pop() if pool else bytearray(_INITIAL_BUFFER)

    def give_buffer(self, buf: bytearray) -> None:
        """Keep a lost connection's buffer for the next one (recycling keeps RSS flat when clients
        reconnect: no malloc churn of body-sized buffers)."""
        if len(self._free_buffers) < _BUFFER_POOL and len(buf) <= 2 * self.max_body_bytes + _INITIAL_BUFFER:
            self._free_buffers.append(buf)

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


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 keep-alive connection, parsed in place in a buffer owned by the connection.

    The socket is read with ``recv_into`` straight into ``_buf``; a request body is handed on as a
    memoryview of it, or of the buffer its decoder filled for a chunked body (or of the inflated
    bytes), so a handler can read it in place. Until its answer is sent (``_busy``) nothing more is parsed, and while
    views of ``_buf`` may be alive (``_in_flight``, cleared once the inference and the response are
    done) nothing is compacted over them; the buffer grows only when a larger request arrives, so
    steady-state traffic allocates nothing per request for the payload (a chunked body is the
    exception: its decoder allocates the body's buffer).

    Threads: everything runs on the loop thread except :meth:`_answer_from_thread`, by which another
    thread (an engine worker) sends a response itself (saving the loop a wake-up per request). It writes
    to the socket only while ``_wlock`` is held and ``_fd`` is open; ``connection_lost`` (which
    asyncio calls *before* it closes the socket) invalidates ``_fd`` under the same lock, so a worker
    never writes to a closed or reused descriptor. While a request is in flight the loop writes
    nothing to the connection, so the worker's bytes cannot interleave with the loop's.
    """

    def __init__(self, group: ConnectionGroup) -> None:
        self._group = group
        self._dispatch = group.dispatch
        self._alignment = group.alignment
        self._buf = group.take_buffer()
        self._base = _address(self._buf)
        self._lead = 0  # bytes from the last request's first byte to its first binary tensor byte
        self._head_len = 0  # bytes of the last request's head
        self._start = 0  # first unparsed byte
        self._end = 0  # end of received data
        self._need = 0  # bytes the current body still needs beyond _start (0 = parsing a head)
        self._discard = 0  # bytes of an oversized body still to drop
        self._busy = False  # a request is unanswered: parse nothing more (answers stay in order)
        self._in_flight = False  # its body's views may be alive: do not compact over them
        self._processing = False
        self._pending: tuple[str, str, bool, Mapping[str, str], int] | None = None  # parsed head; -1 = chunked
        self._chunks: ChunkedDecoder | None = None  # the chunked body being received
        self._transport: asyncio.Transport | None = None
        self._wlock = threading.Lock()
        self._fd = -1  # the socket's descriptor for workers' writes; -1 once the connection is lost

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (its methods are all this protocol uses)
        self._transport = cast(asyncio.Transport, transport)
        self._group.transports.add(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # workers write the socket themselves only in the clear: TLS records are the transport's
                if transport.get_extra_info("sslcontext") is None:
                    self._fd = sock.fileno()

    def connection_lost(self, exc: Exception | None) -> None:
        with self._wlock:  # asyncio closes the socket after this returns: no worker is writing now
            self._fd = -1
        if self._transport is not None:
            self._group.transports.discard(self._transport)
        self._transport = None
        self._group._lost()
        if not self._in_flight:  # no request views point into it: the next connection reuses it
            self._group.give_buffer(self._buf)

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._in_flight:
            self._reset_if_empty()  # all parsed and answered (maybe by a worker): start over
        if self._end == len(self._buf):
            self._make_room(max(_INITIAL_BUFFER, self._need))
        return memoryview(self._buf)[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        self._process()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    # -- buffer management

    def _make_room(self, want: int) -> None:
        """Free space after ``_end``: drop parsed bytes, and grow to hold ``want`` unparsed bytes.

        While a request is in flight its body (before ``_start``) must stay intact, so the unparsed
        tail then moves to a fresh buffer instead of being compacted in place (clients that wait for
        the answer before sending again never get here).
        """
        used = self._end - self._start
        size = len(self._buf)
        if used + _INITIAL_BUFFER // 4 > size or want > size:
            size = max(size * 2, want + _INITIAL_BUFFER // 4)
        if size != len(self._buf) or self._in_flight:
            # a new buffer (views of the old one, if any, keep it alive until they are dropped)
            fresh = bytearray(size)
            fresh[:used] = self._buf[self._start : self._end]
            self._buf = fresh
            self._base = _address(fresh)
        elif self._start:
            self._buf[:used] = self._buf[self._start : self._end]
        self._start, self._end = 0, used

    # -- parsing

    def _process(self) -> None:
        if self._processing:  # re-entered from a request answered synchronously: the outer loop goes on
            return
        self._processing = True
        try:
            self._parse_loop()
        finally:
            self._processing = False

    def _parse_loop(self) -> None:
        transport = self._transport
        while transport is not None and not self._busy and not transport.is_closing():
            if self._discard:
                dropped = min(self._discard, self._end - self._start)
                self._start += dropped
                self._discard -= dropped
                if self._discard:
                    self._reset_if_empty()
                    return
                continue
            if self._pending is None:
                if self._start == self._end:  # all answered: wait for the next request
                    self._reset_if_empty()
                    return
                if not self._parse_head():
                    return
                continue
            method, target, keep_alive, headers, length = self._pending
            chunks = self._chunks
            if chunks is not None:  # decoded into a buffer of its own as it arrives
                body = self._dechunk(chunks)
                if body is None:
                    return
            elif self._end - self._start < length:
                self._need = length
                return
            else:
                body = memoryview(self._buf)[self._start : self._start + length]
                self._start += length
            self._pending = None
            self._need = 0
            self._busy = True  # nothing more is parsed until this is answered (answers stay in order)
            self._in_flight = chunks is None  # views of _buf may be alive: nothing is compacted over them
            coding = headers.get("content-encoding")
            if coding is not None and coding.strip().lower() not in ("identity", ""):
                try:
                    body = self._inflate(body, coding.strip().lower())
                except HttpError as exc:
                    self._finish(error_response(exc.status, str(exc)), keep_alive, body)
                    continue
            try:
                response = self._dispatch(Request(self, method, target, headers, body, keep_alive))
            except Exception as exc:  # a bug in the handler: 500 for this request; the connection goes on
                log.exception("the handler of %s %s failed (answered 500)", method, target)
                response = error_response(500, f"{type(exc).__name__}: {exc}")
            if response is not None:
                self._finish(response, keep_alive, body)
            # answered -> parse on; to be answered later -> _busy ends the loop

    def _parse_head(self) -> bool:
        """Parse one request head if complete; False when more bytes are needed (or on close)."""
        buf = self._buf
        end = buf.find(b"\r\n\r\n", self._start, self._end)
        if end < 0:
            if self._end - self._start > _HEADER_LIMIT:
                self._reply(error_response(400, "request header too large"), keep_alive=False)
                return False
            self._reset_if_empty()
            return False
        head = bytes(buf[self._start : end + 4])
        head_start, self._start = self._start, end + 4
        heads = self._group.heads
        parsed = heads.get(head)
        if parsed is None:
            try:
                parsed = _parse_head(head)
            except HttpError as exc:
                self._reply(error_response(exc.status, str(exc)), keep_alive=False)
                return False
            if len(head) <= _HEAD_MEMO_BYTES:
                remember(heads, head, parsed, _HEAD_MEMO_SIZE)
        method, target, version, keep_alive, headers = parsed
        limit = self._group.max_body_bytes
        expect = headers.get("expect", "").lower() == "100-continue"
        if "transfer-encoding" in headers:
            codings = [part.strip() for part in headers["transfer-encoding"].lower().split(",")]
            if codings[-1] != "chunked":  # the body's length cannot be known (RFC 9112 6.3)
                message = f"the last Transfer-Encoding must be chunked, not {codings[-1]!r}"
                self._reply(error_response(400, message), keep_alive=False)
                return False
            if len(codings) > 1:
                message = f"unsupported Transfer-Encoding {', '.join(codings)!r} (only chunked)"
                self._reply(error_response(501, message), keep_alive=False)
                return False
            # a Content-Length beside it is overridden and, as for HTTP/1.0 with a transfer coding,
            # the connection is closed after the answer: disagreeing framing is how requests get smuggled
            keep_alive = keep_alive and version == "HTTP/1.1" and "content-length" not in headers
            length = -1
            self._chunks = ChunkedDecoder(limit)  # enforces the limit as the chunks arrive
        else:
            raw = headers.get("content-length", "0")
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError(raw)
            except ValueError:
                self._reply(error_response(400, f"bad Content-Length {raw!r}"), keep_alive=False)
                return False
            if length > limit:
                message = f"request body of {length} bytes exceeds the limit of {limit} bytes"
                if expect or length > _DISCARD_LIMIT:
                    self._reply(error_response(400, message), keep_alive=False)
                    return False
                self._discard = length  # read and drop it, then answer, so the client sees the 400
                self._reply(error_response(400, message), keep_alive=keep_alive)
                return True
        if expect and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._pending = (method, target, keep_alive, headers, length)
        if length >= 0:  # how the next request's tensor will lie (a chunked body is decoded elsewhere)
            self._head_len = self._start - head_start
            with contextlib.suppress(ValueError):
                self._lead = self._head_len + int(headers.get("inference-header-content-length", "0"))
        return True

    def _inflate(self, body: memoryview, coding: str) -> memoryview:
        """The body a ``Content-Encoding`` compressed (HttpError 400 when it cannot be inflated within
        the limit); the received bytes' view is released at once."""
        inflated = _decompress(body, coding, self._group.max_body_bytes)
        _release(body)
        return memoryview(inflated)

    def _dechunk(self, chunks: ChunkedDecoder) -> memoryview | None:
        """Feed the received bytes to the chunked body's decoder: the whole body once it is complete,
        None while more is needed (or after a malformed body was answered with 400 and closed)."""
        try:
            self._start = chunks.feed(self._buf, self._start, self._end)
        except ChunkedBodyError as exc:
            self._pending = self._chunks = None
            self._reply(error_response(400, str(exc)), keep_alive=False)
            return None
        if not chunks.done:
            self._reset_if_empty()
            return None
        self._chunks = None
        return memoryview(chunks.body)

    def _reset_if_empty(self) -> None:
        """Receive the next request from the buffer's start, shifted (< 64 bytes) so that if it is laid
        out like the last one, its first binary tensor lands aligned (the group's ``alignment``): a backend
        can then read it in place instead of copying it."""
        if self._start == self._end:
            # a parsed head whose body has not arrived yet: the body starts here, not the head
            # (for a chunked body, decoded elsewhere, the shift is as good as any)
            lead = self._lead - self._head_len if self._pending is not None else self._lead
            self._start = self._end = -(self._base + lead) % self._alignment

    # -- responses

    def _finish(self, response: Response, keep_alive: bool, body: memoryview) -> None:
        """Answer the request in flight and go on reading (loop thread)."""
        self._reply(response, keep_alive)
        self._finish_after_reply(body)

    def _finish_after_reply(self, body: memoryview) -> None:
        _release(body)
        self._busy = self._in_flight = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._reset_if_empty()
            self._process()

    def _reply(self, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(http_bytes(response, keep_alive))
        if not keep_alive:
            transport.close()

    def _answer_from_thread(self, response: Response, keep_alive: bool, body: memoryview) -> bool:
        """Send the in-flight request's response from a thread other than the loop's; False = the loop must.

        Only a keep-alive response on a connection with nothing queued in the transport is sent here
        (anything else keeps the loop's ordering). The body's views are done with before the bytes
        leave (the client may send its next request at once, and the loop may then reuse the
        buffer); once all is sent the connection stops being busy, and bytes that arrived meanwhile
        (a pipelining client, or one quicker than this thread) are parsed on the loop.
        """
        if not keep_alive:
            return False
        data = http_bytes(response, keep_alive)
        with self._wlock:
            transport = self._transport
            if self._fd < 0 or transport is None or transport.is_closing() or transport.get_write_buffer_size():
                return False
            _release(body)
            self._in_flight = False
            try:
                sent = os.write(self._fd, data)
            except BlockingIOError:
                return False
            except OSError:
                return False  # the peer is gone: the loop sees it and closes the connection
            if sent < len(data):  # the socket buffer is full (rare for a response): the loop sends the rest
                rest = data[sent:]
                self._group._call(lambda: self._send_rest(rest, body))
                return True
            self._busy = False
            waiting = self._end > self._start
        if waiting:
            self._group._call(self._process)
        return True

    def _send_rest(self, rest: bytes, body: memoryview) -> None:
        """Loop thread: the tail of a response another thread began, then go on as after any answer."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(rest)
        self._finish_after_reply(body)


# ---------------------------------------------------------------------- helpers


def _release(view: memoryview) -> None:
    """Release a request body's view unless something still holds it (e.g. a traceback). Per request,
    so a plain try: ``contextlib.suppress`` builds an object and enters and leaves it."""
    try:  # noqa: SIM105
        view.release()
    except BufferError:
        pass


def _address(buf: bytearray) -> int:
    """Memory address of ``buf``'s first byte (the view is dropped at once: ``buf`` stays resizable)."""
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf else 0


def _http_head(response: Response, keep_alive: bool) -> bytes:
    """Status line and header fields of ``response``, with the blank line that ends them."""
    status = response.status
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {response.content_type}\r\nContent-Length: {len(response.body)}\r\n"
    )
    if response.header_length is not None:
        head += f"Inference-Header-Content-Length: {response.header_length}\r\n"
    for name, value in response.fields:
        head += f"{name}: {value}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("latin-1")


def keep_alive_head(response: Response) -> bytes:
    """The head of ``response`` on a keep-alive connection (what :attr:`Response.head` holds)."""
    return _http_head(response, True)


def http_bytes(response: Response, keep_alive: bool) -> bytes:
    """``response`` as sent on the wire (its head rendered in advance when it has one)."""
    head = response.head if keep_alive and response.head is not None else _http_head(response, keep_alive)
    return head + response.body


def _parse_head(head: bytes) -> _Head:
    """Method, target, HTTP version, keep-alive and the header fields (lower-case names) of a request
    head. A repeated field's values are joined with ", " (RFC 9110 5.3); Content-Length values that
    disagree are refused (RFC 9112 6.3). The fields are shared by every request with the same head
    bytes (``_HEAD_MEMO_SIZE``): never change them."""
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError as exc:
        raise HttpError(400, "malformed request line") from exc
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        key, value = key.strip().lower(), value.strip()
        seen = headers.get(key)
        if seen is None:
            headers[key] = value
        elif key == "content-length":
            if value != seen:
                raise HttpError(400, f"conflicting Content-Length values {seen!r} and {value!r}")
        else:
            headers[key] = f"{seen}, {value}"
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
    return method, target, version, keep_alive, headers


def _decompress(body: bytes | memoryview, encoding: str, limit: int) -> bytes:
    """A ``Content-Encoding: gzip`` or ``deflate`` body (what ``tritonclient``'s
    ``request_compression_algorithm`` sends), inflated to at most ``limit`` bytes; HttpError 400 for
    another encoding, a corrupt or truncated stream, or one that inflates past the limit."""
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":  # zlib-wrapped, as HTTP means it; raw deflate streams are taken too
        zlib_header = len(body) >= 2 and body[0] & 0x0F == 8 and (body[0] * 256 + body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise HttpError(400, f"unsupported Content-Encoding {encoding!r} (this server takes gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the body is not valid {encoding}: {exc}") from exc
    if len(data) > limit or inflater.unconsumed_tail:
        raise HttpError(400, f"the {encoding} body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, f"the {encoding} body is truncated")
    return data


__all__ = [
    "DEFAULT_MAX_BODY",
    "ConnectionGroup",
    "Dispatch",
    "HttpError",
    "Request",
    "Response",
    "error_response",
    "http_bytes",
    "json_response",
    "keep_alive_head",
]
