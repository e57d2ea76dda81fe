"""HTTP/1.1 message syntax for the inference server: strict request heads, response heads, codings.

Pure functions and plain types, no sockets and no event loop; :mod:`edgeds.runtime.http1` runs the
connections that use them. What is here:

* :func:`parse_head`: a request head (request line and header fields, up to and including the empty
  line) parsed strictly per RFC 9110 and RFC 9112, or :class:`HttpError` with the status to answer
  (400 malformed, 505 an HTTP version other than 1.0 or 1.1). Its result is cached by the
  connections, so the checks cost nothing for a head seen before.
* :class:`Response`, :func:`json_response`, :func:`error_response`, :class:`HttpError`: an answer
  before framing, and the error every layer of the server raises to be answered with its status.
* :func:`http_head`, :func:`keep_alive_head`, :func:`http_bytes`: a response's HTTP head and bytes;
  :func:`stream_head`: the head of a response whose body is streamed.
* :func:`decompress`: a gzip or deflate request body, inflated to a bound.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 501: "Not Implemented"}
_REASONS.update({413: "Content Too Large", 431: "Request Header Fields Too Large", 505: "HTTP Version Not Supported"})
_REASONS.update({401: "Unauthorized", 500: "Internal Server Error", 503: "Service Unavailable"})

# RFC 9110 5.6.2: a token (method, field name) is 1*tchar
_TCHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"
_METHOD = re.compile(f"[{_TCHARS}]+")
_FIELD_NAME = re.compile(f"[{_TCHARS}]+:")  # RFC 9112 5.1: no whitespace before the colon
_DIGITS = re.compile("[0-9]+")
_VERSION = re.compile("HTTP/[0-9][.][0-9]")
# What a request head may not hold: a CR or LF outside a CRLF pair (RFC 9112 2.2), NUL and the other
# controls except HTAB (RFC 9110 5.5); obs-text (0x80-0xFF) is allowed in values
_BAD_HEAD_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)|(?<!\r)\n")
_REASONS[408] = "Request Timeout"

# A parsed request head: method, target, HTTP version, keep-alive, header fields (lower-case names).
Head = tuple[str, str, str, bool, Mapping[str, str]]


class HttpError(Exception):
    """An error answered with ``status`` and ``{"error": message}`` (and ``fields``, extra header
    fields of the answer: e.g. ``(("Allow", "GET"),)`` with a 405)."""

    def __init__(self, status: int, message: str, fields: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.fields = fields


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


def error_response(status: int, message: str, fields: tuple[tuple[str, str], ...] = ()) -> Response:
    response = json_response(status, {"error": message})
    response.fields = fields
    return response


def http_head(response: Response, keep_alive: bool) -> bytes:
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
    return http_head(response, True)


def http_bytes(response: Response, keep_alive: bool) -> bytes:
    """``response`` as sent on the wire (its head rendered in advance when it has one)."""
    head = response.head if keep_alive and response.head is not None else http_head(response, keep_alive)
    return head + response.body


def stream_head(
    status: int, content_type: str, fields: tuple[tuple[str, str], ...], chunked: bool, keep_alive: bool
) -> bytes:
    """The head of a streamed response: ``Transfer-Encoding: chunked`` when ``chunked`` (HTTP/1.1),
    else no length at all (HTTP/1.0: the body ends when the connection closes, so ``keep_alive`` must
    then be False). An event stream (``text/event-stream``) gets ``Cache-Control: no-cache`` unless
    ``fields`` set its own."""
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: {content_type}\r\n"
    if content_type.startswith("text/event-stream") and not any(n.lower() == "cache-control" for n, _ in fields):
        head += "Cache-Control: no-cache\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n"
    for name, value in fields:
        head += f"{name}: {value}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode("latin-1")


def parse_head(head: bytes) -> Head:
    """Method, target, HTTP version, keep-alive and the header fields (lower-case names) of a request
    head (its bytes up to and with the blank line), checked strictly (RFC 9110, RFC 9112): HttpError
    400 for any malformed part, 505 for an HTTP version other than 1.0 and 1.1, 501 for a transfer
    coding before chunked.

    Refused: a CR or LF outside a CRLF pair, a control character other than HTAB; a request line
    other than ``token SP target SP HTTP/d.d``; a field line whose name is not a token or is
    followed by whitespace before its colon, and obs-fold; an HTTP/1.1 request without one Host
    field, and two Host fields; a Content-Length that is not 1*DIGIT, or values that disagree
    (identical repeated values are folded into one, RFC 9110 8.6); a Transfer-Encoding whose last
    coding is not chunked, and one beside a Content-Length (RFC 9112 6.3, how requests get
    smuggled). Empty lines before the request line are skipped (RFC 9112 2.2). An HTTP/1.0 request
    with a Transfer-Encoding is served and then closed (RFC 9112 6.1).

    A repeated field's values are joined with ", " (RFC 9110 5.3). The result is memoized by the
    head's bytes and shared by every request with the same head: never change its fields."""
    text = head.decode("latin-1")
    while text.startswith("\r\n"):
        text = text[2:]
    bad = _BAD_HEAD_CHAR.search(text)
    if bad is not None:
        what = {"\r": "a bare CR", "\n": "a bare LF"}.get(bad.group(), f"the control character {bad.group()!r}")
        raise HttpError(400, f"{what} in the request head (RFC 9112 2.2, RFC 9110 5.5)")
    request_line, *lines = text[:-4].split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not all(parts) or "\t" in request_line or not _METHOD.fullmatch(parts[0]):
        raise HttpError(400, f"malformed request line {request_line[:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if _VERSION.fullmatch(version):
            raise HttpError(505, f"{version} is not supported (HTTP/1.0 and HTTP/1.1 are)")
        raise HttpError(400, f"malformed HTTP version {version[:20]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name = _FIELD_NAME.match(line)
        if name is None:
            raise HttpError(400, _field_line_problem(line))
        key, value = line[: name.end() - 1].lower(), line[name.end() :].strip(" \t")
        seen = headers.get(key)
        if seen is None:
            headers[key] = value
        elif key == "host":
            raise HttpError(400, "more than one Host field (RFC 9112 3.2)")
        else:
            headers[key] = f"{seen}, {value}"
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "an HTTP/1.1 request needs a Host field (RFC 9112 3.2)")
    length = headers.get("content-length")
    if length is not None:
        values = {part.strip(" \t") for part in length.split(",")}
        if len(values) > 1:
            raise HttpError(400, f"conflicting Content-Length values {length[:80]!r}")
        length = values.pop()
        if not _DIGITS.fullmatch(length):
            raise HttpError(400, f"bad Content-Length {length[:40]!r} (only digits, RFC 9110 8.6)")
        headers["content-length"] = length
    connection = {part.strip(" \t") for part in headers.get("connection", "").lower().split(",")}
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    if "transfer-encoding" in headers:
        codings = [part.strip(" \t") for part in headers["transfer-encoding"].lower().split(",")]
        if codings[-1] != "chunked":  # the body's length cannot be known (RFC 9112 6.3)
            raise HttpError(400, f"the last Transfer-Encoding must be chunked, not {codings[-1]!r}")
        if len(codings) > 1:
            raise HttpError(501, f"unsupported Transfer-Encoding {', '.join(codings)!r} (only chunked)")
        if length is not None:
            raise HttpError(400, "both Content-Length and Transfer-Encoding: the body's framing is ambiguous")
        keep_alive = keep_alive and version == "HTTP/1.1"  # HTTP/1.0 has no transfer codings: close after
    return method, target, version, keep_alive, headers


def _field_line_problem(line: str) -> str:
    """Why ``line`` is not a field line (``name: value`` with a token name)."""
    if line[:1] in (" ", "\t"):
        return f"obs-fold (a line continued with whitespace) is not accepted (RFC 9112 5.2): {line[:80]!r}"
    name, colon, _ = line.partition(":")
    if not colon:
        return f"malformed header line {line[:80]!r}"
    if name != name.rstrip(" \t"):
        return f"whitespace between the field name {name.strip()[:40]!r} and the colon (RFC 9112 5.1)"
    return f"the field name {name[:40]!r} is not a token (RFC 9110 5.1)"


def decompress(body: bytes | memoryview, encoding: str, limit: int) -> bytes:
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
        raise HttpError(413, f"the {encoding} body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise HttpError(400, f"the {encoding} body is truncated")
    return data


__all__ = [
    "Head",
    "HttpError",
    "Response",
    "decompress",
    "error_response",
    "http_bytes",
    "http_head",
    "json_response",
    "keep_alive_head",
    "parse_head",
    "stream_head",
]
