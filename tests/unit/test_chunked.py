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
        (b"801\r\n", "exceeds the limit of 2048 bytes"),
        (b"400\r\n" + b"a" * 1024 + b"\r\n401\r\n", "exceeds the limit of 2048 bytes"),
    ],
    ids=["not hex", "empty", "negative", "17 digits", "wrong size", "bad trailer", "endless line", "big", "adds up"],
)
def test_malformed_or_oversized_bodies_raise(wire: bytes, message: str) -> None:
    decoder = ChunkedDecoder(2048)
    buf = bytearray(wire)
    with pytest.raises(ChunkedBodyError, match=message):
        decoder.feed(buf, 0, len(buf))
