"""The chunked request-body decoder, fed the way the server feeds it: whatever has arrived so far."""

from __future__ import annotations

import pytest

from edgeds.runtime.chunked import ChunkedBodyError, ChunkedDecoder

PAYLOAD = bytes(range(256)) * 3
WIRE = b"1a;name=value\r\n" + PAYLOAD[:26] + b"\r\n2E6\r\n" + PAYLOAD[26:] + b"\r\n000;last\r\nX-Checksum: 1234\r\n\r\n"
NEXT = b"GET /v2/health/live HTTP/1.1\r\n\r\n"


def feed_in_pieces(wire: bytes, cut: int, limit: int = 1 << 20) -> tuple[ChunkedDecoder, bytes]:
    """Feed ``wire[:cut]``, then the rest, keeping unconsumed bytes as the server's buffer does."""
    decoder = ChunkedDecoder(limit)
    buf = bytearray(wire[:cut])
    start = decoder.feed(buf, 0, len(buf))
    buf = buf[start:] + wire[cut:]
    start = decoder.feed(buf, 0, len(buf))
    return decoder, bytes(buf[start:])


def test_every_split_point_decodes_the_same_body_and_stops_at_the_next_request() -> None:
    wire = WIRE + NEXT
    for cut in range(len(wire) + 1):
        decoder, rest = feed_in_pieces(wire, cut)
        assert decoder.done, cut
        assert bytes(decoder.body) == PAYLOAD, cut
        assert rest == NEXT, cut


def test_an_incomplete_body_is_not_done_and_keeps_the_partial_line() -> None:
    decoder = ChunkedDecoder(1 << 20)
    buf = bytearray(b"5\r\nhello\r\n1")
    assert decoder.feed(buf, 0, len(buf)) == len(buf) - 1  # "1" may be the start of "1f"
    assert not decoder.done and bytes(decoder.body) == b"hello"


def test_leading_zeros_and_whitespace_before_an_extension_are_taken() -> None:
    decoder = ChunkedDecoder(1 << 20)
    buf = bytearray(b"0" * 30 + b'3 ;x="q"\r\nabc\r\n0\r\n\r\n')
    assert decoder.feed(buf, 0, len(buf)) == len(buf)
    assert decoder.done and decoder.body == b"abc"


def test_an_empty_body_is_one_zero_chunk() -> None:
    decoder = ChunkedDecoder(0)
    buf = bytearray(b"0\r\n\r\n")
    assert decoder.feed(buf, 0, len(buf)) == len(buf)
    assert decoder.done and decoder.body == b""


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"zz\r\nab\r\n0\r\n\r\n", "malformed chunk size"),
        (b"\r\n", "malformed chunk size"),
        (b"-5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"1" * 17 + b"\r\n", "malformed chunk size"),
        (b"3\r\nhello\r\n0\r\n\r\n", "not followed by CRLF"),
        (b"0\r\nnot a field\r\n\r\n", "malformed trailer"),
        (b"1" * 5000, "longer than"),
        (b"1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n", "longer than"),  # a whole line, not one cut short
        (b"2;\nab\r\n0\r\n\r\n", "control character"),  # a bare LF ends the line for some front ends
        (b"2;\rab\r\n0\r\n\r\n", "control character"),
        (b"0\r\nX-T: a\x00b\r\n\r\n", "control character"),
        (b"0\r\n: no name\r\n\r\n", "malformed trailer"),
        (b"1\r\na\r\n" * 20000, "chunks too small"),
        (b"801\r\n", "exceeds the limit of 2048 bytes"),
        (b"400\r\n" + b"a" * 1024 + b"\r\n401\r\n", "exceeds the limit of 2048 bytes"),
    ],
    ids=[
        "not hex",
        "empty",
        "negative",
        "17 digits",
        "wrong size",
        "bad trailer",
        "endless line",
        "long line",
        "bare LF",
        "bare CR",
        "NUL in trailer",
        "nameless trailer",
        "tiny chunks",
        "big",
        "adds up",
    ],
)
def test_malformed_or_oversized_bodies_raise(wire: bytes, message: str) -> None:
    decoder = ChunkedDecoder(2048 if "limit" in message else 1 << 20)
    buf = bytearray(wire)
    with pytest.raises(ChunkedBodyError, match=message):
        decoder.feed(buf, 0, len(buf))
