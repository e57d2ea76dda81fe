"""Incremental decoder of HTTP/1.1 chunked request bodies (RFC 9112 section 7.1).

The server receives into its own connection buffer and calls :meth:`ChunkedDecoder.feed` with the
unparsed range each time bytes arrive; the decoder copies chunk data into its own ``body`` (one copy
per byte) and returns how far it consumed. What it cannot decide yet (a size line or trailer line cut
short, at most 4 KiB) it leaves unconsumed. Chunk extensions and trailer fields are
accepted and ignored, but a line holding a control character (a bare CR or LF included) is refused:
a front end that ends lines at a bare LF would frame the body differently, which is how requests get
smuggled. A malformed body, one that decodes past ``limit`` bytes, or one whose framing (size lines,
extensions, trailers) outgrows ``64 KiB + body / 16`` (a stream of tiny chunks would otherwise hold
the server's event loop far longer than its size suggests) raises :class:`ChunkedBodyError`: the
framing of whatever follows on the connection is then unknown, so the caller answers and closes.
"""

from __future__ import annotations

import mmap
import re
from typing import Literal

from ..errors import RequestError

_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_SIZE_DIGITS = 16  # 64-bit sizes; anything longer is not a size this server could accept anyway
_MAX_LINE = 4096  # bytes: a size line (with extensions) or one trailer field line
_FRAMING_ALLOWANCE = 64 * 1024  # bytes of framing allowed on top of body / 16
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # what no size, extension or field line may hold


class ChunkedBodyError(RequestError):
    """The chunked body is malformed (``status`` 400) or decodes past the limit (413); the server
    answers with ``status`` and closes the connection."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ChunkedDecoder:
    """Decodes one chunked body; ``done`` once the last chunk and the trailer section are read.

    Lifecycle: one decoder per request, fed until ``done`` (or until it raises); ``body`` then holds
    the decoded bytes and belongs to the caller.
    """

    __slots__ = ("_framing", "_left", "_phase", "body", "done", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.done = False
        self._phase: Literal["size", "data", "data-end", "trailer"] = "size"  # size, data, data-end, size ... trailer
        self._left = 0  # data bytes of the current chunk not yet copied
        self._framing = 0  # bytes of size lines, CRLFs after data, and trailers so far

    def feed(self, buf: bytearray | mmap.mmap, start: int, end: int) -> int:
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
                self._count_framing(2)
            else:
                line_end = buf.find(b"\r\n", start, min(end, start + _MAX_LINE + 2))
                if line_end < 0:
                    if end - start >= _MAX_LINE + 2:
                        raise ChunkedBodyError(f"chunk {self._phase} line longer than {_MAX_LINE} bytes")
                    return start
                line = bytes(buf[start:line_end])
                start = line_end + 2
                self._count_framing(len(line) + 2)
                if _CONTROL.search(line):
                    raise ChunkedBodyError(f"control character in a chunk {self._phase} line {line[:40]!r}")
                if self._phase == "size":
                    self._start_chunk(line)
                else:
                    self._trailer_line(line)
        return start

    def _count_framing(self, nbytes: int) -> None:
        self._framing += nbytes
        if self._framing > _FRAMING_ALLOWANCE + len(self.body) // 16:
            raise ChunkedBodyError(
                f"chunked framing of {self._framing} bytes for {len(self.body)} bytes of data (chunks too small)"
            )

    def _start_chunk(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].rstrip(b" \t")
        if not digits or len(digits.lstrip(b"0")) > _MAX_SIZE_DIGITS or not _HEX.issuperset(digits):
            raise ChunkedBodyError(f"malformed chunk size line {line[:40]!r}")
        size = int(digits, 16)
        if size == 0:
            self._phase = "trailer"
            return
        if len(self.body) + size > self.limit:
            raise ChunkedBodyError(f"chunked request body exceeds the limit of {self.limit} bytes", 413)
        self._phase, self._left = "data", size

    def _trailer_line(self, line: bytes) -> None:
        if not line:
            self.done = True
        elif line.find(b":") < 1:
            raise ChunkedBodyError(f"malformed trailer field line {line[:40]!r}")


__all__ = ["ChunkedBodyError", "ChunkedDecoder"]
