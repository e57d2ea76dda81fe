"""Incremental decoder of HTTP/1.1 chunked request bodies (RFC 9112 section 7.1).

The server receives into its own connection buffer and calls :meth:`ChunkedDecoder.feed` with the
unparsed range each time bytes arrive; the decoder copies chunk data into its own ``body`` (one copy
per byte) and returns how far it consumed. What it cannot decide yet (a size line or trailer line cut
short) it leaves unconsumed, so the caller keeps at most one line's worth of bytes. Chunk extensions
and trailer fields are accepted and ignored. A malformed body, or one that decodes past ``limit``
bytes, raises :class:`ChunkedBodyError`: the framing of whatever follows on the connection is then
unknown, so the caller answers and closes.
"""

from __future__ import annotations

_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_SIZE_DIGITS = 16  # 64-bit sizes; anything longer is not a size this server could accept anyway
_MAX_LINE = 4096  # a size line (with extensions) or one trailer field line


class ChunkedBodyError(ValueError):
    """The chunked body is malformed or too large (the server answers 400 and closes the connection)."""


class ChunkedDecoder:
    """Decodes one chunked body; ``done`` once the last chunk and the trailer section are read.

    Lifecycle: one decoder per request, fed until ``done`` (or until it raises); ``body`` then holds
    the decoded bytes and belongs to the caller.
    """

    __slots__ = ("_left", "_phase", "_trailer_bytes", "body", "done", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.done = False
        self._phase = "size"  # size -> data -> data-end -> size ... -> trailer
        self._left = 0  # data bytes of the current chunk not yet copied
        self._trailer_bytes = 0

    def feed(self, buf: bytearray, start: int, end: int) -> int:
        """Decode from ``buf[start:end]``; return the index of the first byte not consumed.

        Stops at ``done`` (bytes after the body are the next request's) or when the rest is an
        incomplete line. Raises :class:`ChunkedBodyError`.
        """
        while start < end and not self.done:
            if self._phase == "data":
                take = min(self._left, end - start)
                self.body += memoryview(buf)[start : start + take]
                start += take
                self._left -= take
                if not self._left:
                    self._phase = "data-end"
            elif self._phase == "data-end":
                if end - start < 2:
                    return start
                if buf[start : start + 2] != b"\r\n":
                    raise ChunkedBodyError("chunk data is not followed by CRLF (wrong chunk size?)")
                start += 2
                self._phase = "size"
            else:
                line_end = buf.find(b"\r\n", start, end)
                if line_end < 0:
                    if end - start > _MAX_LINE:
                        raise ChunkedBodyError(f"chunk {self._phase} line longer than {_MAX_LINE} bytes")
                    return start
                line = bytes(buf[start:line_end])
                start = line_end + 2
                if self._phase == "size":
                    self._start_chunk(line)
                else:
                    self._trailer_line(line)
        return start

    def _start_chunk(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].rstrip(b" \t")
        if not digits or len(digits) > _MAX_SIZE_DIGITS or not _HEX.issuperset(digits):
            raise ChunkedBodyError(f"malformed chunk size line {line[:40]!r}")
        size = int(digits, 16)
        if size == 0:
            self._phase = "trailer"
            return
        if len(self.body) + size > self.limit:
            raise ChunkedBodyError(f"chunked request body exceeds the limit of {self.limit} bytes")
        self._phase, self._left = "data", size

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True
            return
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > _MAX_LINE * 16:
            raise ChunkedBodyError("chunked trailer section too large")
        if b":" not in line:
            raise ChunkedBodyError(f"malformed trailer field line {line[:40]!r}")


__all__ = ["ChunkedBodyError", "ChunkedDecoder"]
