"""Streamed responses: a body sent piece by piece while it is produced (chunked, Server-Sent Events).

A dispatch callback answers with a stream by calling :meth:`Request.stream
<edgeds.runtime.http1.Request.stream>` (status, content type, extra header fields) and returning
None; the :class:`Stream` it gets is then the request's answer. Its producer may be the loop thread
or any other thread (an LLM's step loop producing tokens):

* :meth:`Stream.send` sends bytes (one HTTP/1.1 chunk each), :meth:`Stream.send_event` one
  Server-Sent Event (``event:``, ``id:`` and ``data:`` lines, UTF-8, then a blank line),
  :meth:`Stream.close` ends the body (the terminating chunk; the connection then serves its next
  request), :meth:`Stream.abort` cuts the connection (the client sees an incomplete body).
* **Framing.** HTTP/1.1: ``Transfer-Encoding: chunked``. An HTTP/1.0 client gets no length and
  ``Connection: close``: the body ends when the connection closes. ``text/event-stream`` (the
  default) gets ``Cache-Control: no-cache``.
* **Back-pressure.** The bytes not yet handed to the kernel (the transport's write buffer, plus
  what other threads queued for the loop) stay under the transport's high-water mark (asyncio's
  default, 64 KiB) plus one chunk: from another thread, :meth:`Stream.send` blocks while they are
  above it, until the client reads (the transport's ``resume_writing``), the stream is cancelled, or
  its ``timeout`` passes (:class:`StreamStalled`; nothing of that send was queued). On the loop
  thread nothing may block: :meth:`Stream.send` writes at once and a producer there awaits
  :meth:`Stream.drain` between sends.
* **Cancellation.** The stream is cancelled when the client goes away (its connection is lost, or
  it closes its side: noticed when the event loop reads it, without waiting for the next write),
  when its connection is cut because the client stopped reading (the transport stayed above its
  high-water mark for ``idle_timeout_s`` of the server's limits), or when the server stops. Then
  :attr:`Stream.cancelled` is True, every :meth:`Stream.send` (a blocked one included) raises
  :class:`StreamCancelled`, and ``on_cancel`` (if given) is called once, on the loop thread, so the
  producer can stop and free what it holds.

Threads: all writes to the transport happen on the connection's loop thread. Another thread's
sends are queued under the stream's lock and handed over with one loop wake-up for all that queue
meanwhile. A stream whose producer sends nothing has no deadline of its own (as any request being
served): the producer bounds its own work.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import partial

from ..errors import EdgedsError

log = logging.getLogger(__name__)

_OPEN, _CLOSING, _DONE, _CANCELLED = range(4)  # a stream's states, in the order they may follow
_LAST_CHUNK = b"0\r\n\r\n"
_LINE_BREAK = re.compile("\r\n|\r|\n")  # what ends an event stream's line (WHATWG HTML 9.2.5)
_DEFAULT_HIGH_WATER = 64 * 1024  # asyncio's default, until the transport says its own


class StreamError(EdgedsError):
    """A stream cannot take what was sent: it is closed already (a producer's bug)."""


class StreamCancelled(StreamError):
    """The stream ended before its producer closed it: the client went away, its connection was cut
    (the client stopped reading, the server stops) or :meth:`Stream.abort` was called."""


class StreamStalled(StreamError):
    """:meth:`Stream.send` found no room within its ``timeout``: the client reads slower than the
    producer sends. Nothing of that send was queued; the stream is still open."""


class Stream:
    """The streamed answer of one request (made by :meth:`Request.stream
    <edgeds.runtime.http1.Request.stream>`; see the module's docstring for framing, back-pressure
    and cancellation).

    Lifecycle: open until :meth:`close` (its last bytes are then written and the connection goes on
    with its next request), :meth:`abort`, or cancellation. ``peak_buffered`` is the largest
    transport write buffer seen right after a write (bytes), what back-pressure bounds.
    """

    def __init__(
        self,
        head: bytes,
        *,
        chunked: bool,
        call: Callable[[Callable[[], None]], bool],
        loop_thread: int,
        done: Callable[[], None],
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self._lock = threading.RLock()  # re-entered: a write on the loop may call back _pause
        self._room = threading.Condition(self._lock)
        self._out = [head]  # framed bytes for the loop to write, in order
        self._out_bytes = len(head)
        self._transport: asyncio.Transport | None = None  # set on the loop once attached
        self._buffered = 0  # the transport's write buffer as last seen on the loop (it only shrinks meanwhile)
        self._paused = False  # the transport is above its high-water mark
        self._drained: asyncio.Future[None] | None = None  # what drain() awaits
        self._state = _OPEN
        self._wake_scheduled = True  # attaching flushes what was queued before it
        self._chunked = chunked
        self._call = call
        self._loop_thread = loop_thread
        self._done = done
        self.on_cancel = on_cancel
        self.high_water = _DEFAULT_HIGH_WATER
        self.peak_buffered = 0

    # -- the producer's side (any thread)

    @property
    def cancelled(self) -> bool:
        """The stream ended before its producer closed it (see :class:`StreamCancelled`)."""
        return self._state == _CANCELLED

    @property
    def closed(self) -> bool:
        """Nothing more may be sent: closed by the producer, aborted or cancelled."""
        return self._state != _OPEN

    @property
    def buffered(self) -> int:
        """Bytes sent and not yet handed to the kernel (as last seen on the loop), queued ones included."""
        with self._lock:
            return self._buffered + self._out_bytes

    def send(self, data: bytes | bytearray | memoryview, timeout: float | None = None) -> None:
        """Send ``data`` (one chunk; nothing for empty data). From a thread other than the loop's,
        wait while the stream is above its high-water mark, at most ``timeout`` seconds (None: until
        there is room or the stream is cancelled). Raises :class:`StreamCancelled`,
        :class:`StreamStalled` (timeout), :class:`StreamError` (after :meth:`close`)."""
        if not data:
            with self._lock:
                self._check_open()
            return
        framed = b"%x\r\n%b\r\n" % (len(data), bytes(data)) if self._chunked else bytes(data)
        if threading.get_ident() == self._loop_thread:
            with self._lock:
                self._check_open()
                self._out.append(framed)
                self._out_bytes += len(framed)
                if self._transport is not None:
                    self._flush_locked()
        else:
            self._queue(framed, timeout)

    def send_event(
        self, data: str, event: str | None = None, id: str | None = None, timeout: float | None = None
    ) -> None:
        """Send one Server-Sent Event: ``event:`` and ``id:`` when given, one ``data:`` line per line
        of ``data`` (split at CRLF, CR or LF), a blank line. ``event`` and ``id`` must be one line
        (ValueError). Waits and raises as :meth:`send`."""
        lines = []
        if event is not None:
            lines.append(f"event: {_one_line('event', event)}\n")
        if id is not None:
            lines.append(f"id: {_one_line('id', id)}\n")
        lines.extend(f"data: {line}\n" for line in _LINE_BREAK.split(data))
        lines.append("\n")
        self.send("".join(lines).encode("utf-8"), timeout)

    def close(self) -> None:
        """End the body (HTTP/1.1: the last chunk): the request is answered and its connection serves
        the next one (an HTTP/1.0 client's is closed). Does not wait; nothing once closed or cancelled."""
        on_loop = threading.get_ident() == self._loop_thread
        finished = wake = False
        with self._lock:
            if self._state != _OPEN:
                return
            self._state = _CLOSING
            if self._chunked:
                self._out.append(_LAST_CHUNK)
                self._out_bytes += len(_LAST_CHUNK)
            if on_loop and self._transport is not None:
                self._flush_locked()
                self._state = _DONE
                finished = True
            else:
                wake = not self._wake_scheduled
                self._wake_scheduled = True
        if finished:
            self._done()
        elif wake and not self._call(self._wake):
            self._lost()

    def abort(self) -> None:
        """Cut the stream's connection (e.g. the producer failed: the client sees an incomplete body).
        The stream is cancelled, without ``on_cancel``. Nothing once closed or cancelled."""
        with self._lock:
            if self._state in (_DONE, _CANCELLED):
                return
            self._cancel_locked()
        if threading.get_ident() == self._loop_thread:
            self._abort_transport()
        else:
            self._call(self._abort_transport)

    async def drain(self) -> None:
        """Loop thread: return once the stream is below its high-water mark (at once when it is).
        Raises :class:`StreamCancelled` when the stream is cancelled first."""
        while True:
            with self._lock:
                self._check_open(cancelled_only=True)
                if not self._paused:
                    return
                if self._drained is None:
                    self._drained = asyncio.get_running_loop().create_future()
                drained = self._drained
            await drained

    # -- the connection's side (loop thread)

    def _start(self, attach: Callable[[Stream], None]) -> None:
        """Any thread: have the connection's loop ``attach`` the stream (at once on the loop's thread)."""
        if threading.get_ident() == self._loop_thread:
            attach(self)
        elif not self._call(partial(attach, self)):
            self._lost()

    def _attached(self, transport: asyncio.Transport) -> None:
        """The connection took the stream as its answer: write what is queued (the head first)."""
        with self._lock:
            self._transport = transport
            self.high_water = transport.get_write_buffer_limits()[1]
            cancelled = self._state == _CANCELLED
        if cancelled:  # aborted before it could start: the request can never be answered now
            transport.abort()
        else:
            self._wake()

    def _pause(self) -> None:
        """The transport went above its high-water mark."""
        with self._lock:
            self._paused = True

    def _resume(self) -> None:
        """The transport drained below its low-water mark: waiting producers go on."""
        with self._lock:
            self._paused = False
            if self._transport is not None:
                self._buffered = self._transport.get_write_buffer_size()
            self._room.notify_all()
            self._wake_drain()

    def _lost(self) -> None:
        """The connection is gone or going (or the loop is): cancel, and call ``on_cancel`` when the
        producer had not closed the stream yet."""
        with self._lock:
            if self._state in (_DONE, _CANCELLED):
                return
            was_open = self._state == _OPEN
            self._cancel_locked()
        callback = self.on_cancel
        if was_open and callback is not None:
            try:
                callback()
            except Exception:  # a bug in the producer's callback must not stop the event loop
                log.exception("the on_cancel callback of a stream failed")

    # -- internals

    def _check_open(self, cancelled_only: bool = False) -> None:
        state = self._state
        if state == _CANCELLED:
            raise StreamCancelled("the stream was cancelled (the client went away or the connection was cut)")
        if state != _OPEN and not cancelled_only:
            raise StreamError("the stream is closed")

    def _cancel_locked(self) -> None:
        self._state = _CANCELLED
        self._out.clear()
        self._out_bytes = 0
        self._room.notify_all()
        self._wake_drain()

    def _wake_drain(self) -> None:
        drained = self._drained
        if drained is not None:
            self._drained = None
            if not drained.done():
                drained.set_result(None)

    def _queue(self, framed: bytes, timeout: float | None) -> None:
        """Another thread: queue ``framed`` for the loop once there is room, waking the loop once."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._room:
            while True:
                self._check_open()
                if not self._paused and self._buffered + self._out_bytes <= self.high_water:
                    break
                if deadline is None:
                    self._room.wait()
                    continue
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StreamStalled(f"no room in the stream within {timeout} s: the client reads too slowly")
                self._room.wait(left)
            self._out.append(framed)
            self._out_bytes += len(framed)
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        if not self._call(self._wake):  # the event loop has stopped
            self._lost()
            raise StreamCancelled("the server is stopping")

    def _wake(self) -> None:
        """Loop thread: write what other threads queued; finish the stream once closed."""
        with self._lock:
            self._wake_scheduled = False
            if self._state == _CANCELLED or self._transport is None:
                return
            self._flush_locked()
            finished = self._state == _CLOSING
            if finished:
                self._state = _DONE
        if finished:
            self._done()

    def _flush_locked(self) -> None:
        """Loop thread, lock held, transport attached: hand the queued bytes to the transport."""
        transport = self._transport
        assert transport is not None
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_bytes = 0
            transport.write(data)  # may call pause_writing (-> _pause) before it returns
        buffered = self._buffered = transport.get_write_buffer_size()
        if buffered > self.peak_buffered:
            self.peak_buffered = buffered
        self._room.notify_all()

    def _abort_transport(self) -> None:
        transport = self._transport
        if transport is not None:
            transport.abort()


def _one_line(field: str, value: str) -> str:
    if _LINE_BREAK.search(value) or "\0" in value:
        raise ValueError(f"an event's {field} must be one line without NUL: {value[:40]!r}")
    return value


__all__ = ["Stream", "StreamCancelled", "StreamError", "StreamStalled"]
