"""One HTTP/1.1 connection of the inference server: the state machine behind :mod:`edgeds.runtime.http1`.

:class:`Connection` is the asyncio protocol of one accepted socket. It receives into a buffer it
owns (taken from and given back to its :class:`~edgeds.runtime.http1.ConnectionGroup`), parses each
request head (:func:`~edgeds.runtime.http_syntax.parse_head`, memoized by its bytes) and body
(Content-Length or chunked, gzip/deflate), enforces the group's limits and deadlines, hands each
complete :class:`~edgeds.runtime.http1.Request` to the dispatch callback in arrival order, and frames
what comes back: a whole response (written by the loop, or by an engine worker straight to the socket
of a cleartext connection) or a :class:`~edgeds.runtime.streams.Stream`. Nothing more is parsed while
a request is being answered, so answers stay in order. Used on its event loop's thread only, except
the workers' writes, which :meth:`Connection._answer_from_thread` serializes with the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import mmap
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

import numpy as np

from .chunked import ChunkedBodyError, ChunkedDecoder
from .http1 import _INITIAL_BUFFER, _POOLED_MAX, Request, _Buffer
from .http_syntax import (
    HttpError,
    Response,
    decompress,
    error_response,
    http_bytes,
    parse_head,
)
from .memo import remember
from .streams import Stream

if TYPE_CHECKING:
    from .http1 import ConnectionGroup

log = logging.getLogger("edgeds.runtime.http1")

_DISCARD_LIMIT = 4 * 1024 * 1024  # an oversized body up to this is read and dropped before its 413; past it, closed
_HEADER_LIMIT = 64 * 1024
_NEVER = math.inf  # the deadline of a connection whose request is being served
# Parsed request heads kept by their bytes: a client's heads repeat byte for byte (same path, same
# fields, same Content-Length for same-shaped tensors). Heads are small; the oldest goes first.
_HEAD_MEMO_SIZE = 256
_HEAD_MEMO_BYTES = 2048
_LINGER_S = 2.0  # after an answer that closes a connection whose framing is lost: how long its bytes are drained


class Connection(asyncio.BufferedProtocol):
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

    def __init__(self, group: ConnectionGroup, reserved: bool = False) -> None:
        self._group = group
        self._reserved = reserved
        self._dispatch = self._reserved_dispatch if reserved else group.dispatch
        self._alignment = group.alignment
        self._buf: _Buffer = group.take_buffer()
        self._base = _address(self._buf)
        self._lead = 0  # bytes from the last request's first byte to its first binary tensor byte
        self._head_len = 0  # bytes of the last request's head
        self._start = 0  # first unparsed byte
        self._end = 0  # end of received data
        self._need = 0  # bytes the current body still needs beyond _start (0 = parsing a head)
        self._scanned = 0  # bytes of the head being received (from _start) already scanned for its end
        self._received = 0  # bytes received in all (a body's progress is checked by the sweep)
        self._body_mark = -1  # _received at the last progress check of the body arriving; -1 = in its grace
        self._body_checked = 0.0  # when (the loop's clock) that check was
        self._discard = 0  # bytes of an oversized body still to drop
        self._busy = False  # a request is unanswered: parse nothing more (answers stay in order)
        self._in_flight = False  # its body's views may be alive: do not compact over them
        self._processing = False
        self._lingering = False  # refused (framing lost): what arrives is dropped until the close
        self._pending: tuple[str, str, bool, Mapping[str, str], int] | None = None  # parsed head; -1 = chunked
        self._chunks: ChunkedDecoder | None = None  # the chunked body being received
        self._transport: asyncio.Transport | None = None
        self._wlock = threading.Lock()
        self._fd = -1  # the socket's descriptor for workers' writes; -1 once the connection is lost
        self._deadline = _NEVER  # (the loop's clock) when the connection expires, unless served by then
        self._idle = False  # waiting for the next request: its first byte starts the head's deadline
        self._version = "HTTP/1.1"  # of the request being answered
        self._stream: Stream | None = None  # the streamed answer being sent
        self._on_lost: Callable[[], None] | None = None  # Request.on_lost of the request in flight
        self._writing_paused = False  # the transport is above its high-water mark

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (its methods are all this protocol uses)
        self._transport = cast(asyncio.Transport, transport)
        group = self._group
        group._added(self)
        self._deadline = group.now + group.header_timeout  # the first head must come in time
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
        self._cancel_stream()
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            try:
                on_lost()
            except Exception:  # a handler's bug: the connection is gone either way, the loop goes on
                log.exception("the on_lost callback of a request failed")
        if self._transport is not None:
            self._group._removed(self)
        self._transport = None
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
        self._received += nbytes
        if self._lingering:  # refused: only the client's close (or the linger timer) is awaited
            self._start = self._end
            return
        if self._idle:  # the next request's first bytes: its head must be whole in time
            self._idle = False
            self._deadline = self._group.now + self._group.header_timeout
        self._process()

    def eof_received(self) -> bool | None:
        self._cancel_stream()  # a client that closes its side wants no more of the stream: stop it now
        return None  # close our side too

    def pause_writing(self) -> None:
        """The transport is above its high-water mark: the client must read some of it within
        ``idle_timeout_s``; until then nothing more is read or parsed (its answers would pile up)."""
        self._writing_paused = True
        self._deadline = self._group.now + self._group.idle_timeout
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
        if self._stream is not None:
            self._stream._pause()

    def resume_writing(self) -> None:
        self._writing_paused = False
        transport = self._transport
        if self._stream is not None:
            self._deadline = _NEVER
            self._stream._resume()
        elif self._busy:
            self._deadline = _NEVER
        else:
            self._await_next()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
            self._process()

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
            fresh: _Buffer = bytearray(size) if size <= _POOLED_MAX else mmap.mmap(-1, size)
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
        while transport is not None and not self._busy and not self._writing_paused and not transport.is_closing():
            if self._discard:
                dropped = min(self._discard, self._end - self._start)
                self._start += dropped
                self._discard -= dropped
                if self._discard:
                    self._reset_if_empty()
                    return
                self._await_next()  # dropped: the next request's deadline starts
                continue
            if self._pending is None:
                if self._start == self._end:  # all answered: wait for the next request
                    self._reset_if_empty()
                    if not self._idle:
                        self._idle = True
                        self._deadline = self._group.now + self._group.idle_timeout
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
            self._deadline = _NEVER  # being served
            self._busy = True  # nothing more is parsed until this is answered (answers stay in order)
            self._in_flight = chunks is None  # views of _buf may be alive: nothing is compacted over them
            coding = headers.get("content-encoding")
            if coding is not None and coding.strip().lower() not in ("identity", ""):
                try:
                    limit = self._group.max_json_bytes
                    if "inference-header-content-length" in headers:
                        limit = self._group.max_body_bytes
                    body = self._inflate(body, coding.strip().lower(), limit)
                except HttpError as exc:
                    self._finish(error_response(exc.status, str(exc)), keep_alive, body)
                    continue
            request = Request(self, method, target, headers, body, keep_alive)
            try:
                response = self._dispatch(request)
            except Exception as exc:  # a bug in the handler: 500 for this request; the connection goes on
                log.exception("the handler of %s %s failed (answered 500)", method, target)
                response = error_response(500, f"{type(exc).__name__}: {exc}")
            if response is not None:
                if self._stream is not None:  # the handler began a stream, then answered or raised
                    log.error("%s %s: a handler streamed and answered too: the stream is cut", method, target)
                    self._stream.abort()
                else:
                    self._finish(response, request.keep_alive, body)
            # answered -> parse on; to be answered later -> _busy ends the loop

    def _parse_head(self) -> bool:
        """Parse one request head if complete; False when more bytes are needed (or on close).

        A head over ``_HEADER_LIMIT`` is refused with 431, a malformed one with its 4xx/5xx
        (:func:`~edgeds.runtime.http_syntax.parse_head`), both closing the connection
        (:meth:`_refuse`); a head cut short is refused at once when a bare LF already shows it can
        never be well-formed."""
        buf = self._buf
        scanned = self._scanned
        if not scanned and buf[self._start] == 13:  # CR: empty lines before the request line are skipped
            while self._end - self._start >= 2 and buf[self._start + 1] == 10 and buf[self._start] == 13:
                self._start += 2
            if self._end - self._start < 2:  # nothing more yet (or a lone CR): the head's deadline runs on
                self._reset_if_empty()
                return False
        # only the bytes not yet scanned are searched (a head received a few bytes at a time stays O(n))
        end = buf.find(b"\r\n\r\n", self._start + max(0, scanned - 3), self._end)
        if end < 0:
            if self._end - self._start > _HEADER_LIMIT:
                self._refuse(431, f"the request head exceeds {_HEADER_LIMIT} bytes")
                return False
            new = self._start + scanned
            if scanned and buf[new - 1] == 13:  # a CRLF may straddle the last scan's end
                new -= 1
            fresh = bytes(buf[new : self._end])  # at most _HEADER_LIMIT bytes; buf may be an mmap
            if fresh.count(b"\n") != fresh.count(b"\r\n"):
                self._refuse(400, "a bare LF in the request head (lines end with CRLF, RFC 9112 2.2)")
                return False
            self._scanned = self._end - self._start
            return False
        self._scanned = 0
        if end + 4 - self._start > _HEADER_LIMIT:
            self._refuse(431, f"the request head exceeds {_HEADER_LIMIT} bytes")
            return False
        head = bytes(buf[self._start : end + 4])
        head_start, self._start = self._start, end + 4
        heads = self._group.heads
        parsed = heads.get(head)
        if parsed is None:
            try:
                parsed = parse_head(head)
            except HttpError as exc:
                self._refuse(exc.status, str(exc))
                return False
            if len(head) <= _HEAD_MEMO_BYTES:
                remember(heads, head, parsed, _HEAD_MEMO_SIZE)
        method, target, self._version, keep_alive, headers = parsed
        admit = self._group.admit
        if admit is not None:
            refusal = admit(method, target, headers)
            if refusal is not None:  # before 100 Continue or any body byte is taken in
                self._refuse(refusal.status, "", refusal)
                return False
        group = self._group
        binary = headers.get("inference-header-content-length")
        json_part = -1  # the binary tensor header's length (-1: none, or not a number)
        if binary is None:  # the body is JSON (or not an infer request): parsing costs many times its size
            limit = group.max_json_bytes
        else:
            limit = group.max_body_bytes
            with contextlib.suppress(ValueError):
                json_part = int(binary)
            if json_part > group.max_json_bytes:
                message = f"a JSON header of {json_part} bytes exceeds the limit of {group.max_json_bytes} bytes"
                self._refuse(400, message)
                return False
        expect = headers.get("expect", "").lower() == "100-continue"
        if "transfer-encoding" in headers:  # chunked, alone (checked by parse_head)
            length = -1
            self._chunks = ChunkedDecoder(limit)  # enforces the limit as the chunks arrive
        else:
            raw = headers.get("content-length", "0")  # 1*DIGIT (checked by parse_head)
            try:
                length = int(raw)
            except ValueError:  # more digits than int() reads: far over any limit
                length = _DISCARD_LIMIT + 1
            if length > limit:
                message = f"request body of {raw} bytes exceeds the limit of {limit} bytes"
                if expect or length > _DISCARD_LIMIT:
                    self._refuse(413, message)
                    return False
                self._discard = length  # read and drop it, then answer, so the client sees the 413
                self._deadline, self._body_mark = group.now + group.body_timeout, -1  # then the minimum rate
                self._reply(error_response(413, message), keep_alive=keep_alive)
                return True
        if expect and self._transport is not None:
            self._transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self._pending = (method, target, keep_alive, headers, length)
        if length:  # the body must start within body_timeout_s, then keep coming at the minimum rate
            self._deadline, self._body_mark = group.now + group.body_timeout, -1
        if length >= 0:  # how the next request's tensor will lie (a chunked body is decoded elsewhere)
            self._head_len = self._start - head_start
            if binary is None:
                self._lead = self._head_len
            elif json_part >= 0:
                self._lead = self._head_len + json_part
        return True

    def _inflate(self, body: memoryview, coding: str, limit: int) -> memoryview:
        """The body a ``Content-Encoding`` compressed (HttpError 400 when it cannot be inflated within
        ``limit`` bytes); the received bytes' view is released at once."""
        inflated = decompress(body, coding, limit)
        _release(body)
        return memoryview(inflated)

    def _dechunk(self, chunks: ChunkedDecoder) -> memoryview | None:
        """Feed the received bytes to the chunked body's decoder: the whole body once it is complete,
        None while more is needed (or after a malformed body was answered with 400 and closed)."""
        try:
            self._start = chunks.feed(self._buf, self._start, self._end)
        except ChunkedBodyError as exc:
            self._pending = self._chunks = None
            self._refuse(exc.status, str(exc))
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

    # -- limits

    def _expire(self) -> None:
        """The deadline passed (loop thread, from the group's sweep, ``group.now`` just read).

        A body being received (or dropped after a 413) is checked instead: past its grace of
        ``body_timeout_s``, each sweep it must have brought ``body_min_rate`` bytes per second since
        the last; if it did, the next check is the next sweep. Otherwise a head or body cut short is
        answered 408 (counted in the failures) and the connection closed; one that sent nothing of its
        next request is closed silently, and one whose client stopped reading its answers is reset."""
        transport = self._transport
        if transport is None:
            return
        if transport.is_closing() or self._stream is not None or self._writing_paused:  # a client not reading
            if transport.get_write_buffer_size():
                transport.abort()
            return
        if self._busy:
            return
        group = self._group
        if self._pending is not None or self._discard:  # a body is arriving
            now = group.now
            if self._body_mark < 0 or self._received - self._body_mark >= group.body_rate * (now - self._body_checked):
                self._body_mark, self._body_checked = self._received, now
                self._deadline = now + group.sweep_interval
                return
        if (self._pending is not None or self._end > self._start) and not self._discard:
            group.failures.add(408)
            transport.write(http_bytes(error_response(408, "the request did not arrive in time"), False))
        transport.close()
        if transport.get_write_buffer_size():  # a client that reads nothing must not hold the socket
            transport.abort()

    def _reserved_dispatch(self, request: Request) -> Response | None:
        """The dispatch of a reserved connection (past the connection cap): health and metrics, then
        close; anything else 503."""
        request.keep_alive = False
        if request.target.startswith(self._group.reserved_targets):
            return self._group.dispatch(request)
        return error_response(503, "the server is at its connection limit: only health and metrics are answered")

    # -- responses

    def _finish(self, response: Response, keep_alive: bool, body: memoryview) -> None:
        """Answer the request in flight and go on reading (loop thread)."""
        self._reply(response, keep_alive)
        self._finish_after_reply(body)

    def _finish_after_reply(self, body: memoryview) -> None:
        _release(body)
        self._busy = self._in_flight = False
        self._await_next()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._reset_if_empty()
            self._process()

    def _await_next(self) -> None:
        """The connection is not busy any more: the next head must be whole within
        ``header_timeout_s`` when bytes of it wait, else it may idle for ``idle_timeout_s``. A client
        not reading its answers keeps the deadline :meth:`pause_writing` set."""
        if self._writing_paused:
            return
        group = self._group
        if self._end > self._start:
            self._idle = False
            self._deadline = group.now + group.header_timeout
        else:
            self._idle = True
            self._deadline = group.now + group.idle_timeout

    def _reply(self, response: Response, keep_alive: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if response.status >= 400:
            self._group.failures.add(response.status)
        transport.write(http_bytes(response, keep_alive))
        if not keep_alive:
            transport.close()

    def _refuse(self, status: int, message: str, response: Response | None = None) -> None:
        """Answer a request whose framing is lost (or whose body is not to be read) with ``status``
        (``response`` when given, else an error with ``message``), then close without a reset.

        Closing a socket with unread bytes sends an RST, which can destroy the answer before the
        client reads it; so our side is shut for writing once the answer is out, and what the client
        still sends is dropped until it closes too, or for at most ``_LINGER_S`` seconds."""
        transport = self._transport
        if transport is None or transport.is_closing() or self._lingering:
            return
        self._group.failures.add(status)
        transport.write(http_bytes(response or error_response(status, message), False))
        self._lingering = self._busy = True  # nothing more is parsed
        self._start = self._end
        if transport.can_write_eof():
            transport.write_eof()
            asyncio.get_running_loop().call_later(_LINGER_S, transport.close)
        else:
            transport.close()

    def _attach_stream(self, stream: Stream) -> None:
        """Loop thread: ``stream`` answers the request in flight (cancelled if the connection is gone)."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return stream._lost()
        self._stream = stream
        if self._writing_paused:
            self.pause_writing()
        stream._attached(transport)

    def _stream_ended(self, keep_alive: bool, body: memoryview) -> None:
        """Loop thread: a stream's last bytes are written; the request is answered. A connection that
        closes after it must be drained within ``idle_timeout_s`` (see :meth:`_expire`)."""
        self._stream = None
        transport = self._transport
        if not keep_alive and transport is not None:
            transport.close()
        self._finish_after_reply(body)

    def _cancel_stream(self) -> None:
        stream = self._stream
        if stream is not None:
            self._stream = None
            stream._lost()

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
            if response.status >= 400:
                self._group.failures.add(response.status)
            if sent < len(data):  # the socket buffer is full (rare for a response): the loop sends the rest
                rest = data[sent:]
                self._group._call(lambda: self._send_rest(rest, body))
                return True
            self._busy = False
            self._await_next()
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


def _address(buf: _Buffer) -> int:
    """Memory address of ``buf``'s first byte (the view is dropped at once: ``buf`` stays resizable)."""
    return int(np.frombuffer(buf, dtype=np.uint8).ctypes.data) if buf else 0


__all__ = ["Connection"]
