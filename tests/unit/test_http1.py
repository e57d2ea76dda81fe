"""The HTTP/1.1 layer (:mod:`edgeds.runtime.http1`) on its own: what a dispatch callback gets and how
its answers go back, on real sockets served by :class:`~edgeds.runtime.loops.EventLoops`."""

from __future__ import annotations

import gzip
import http.client
import logging
import queue
import re
import socket
import threading

import pytest

from edgeds.config import ServerLimits
from edgeds.runtime.http1 import Request
from edgeds.runtime.http_syntax import Response, json_response

from ._http_serving import serving

SMALL = ServerLimits(max_body_mb=1, max_json_mb=1)


def echo(request: Request) -> Response:
    return Response(200, f"{request.method} {request.target} ".encode() + bytes(request.body), "text/plain")


def test_a_handler_that_raises_is_answered_500_logged_and_the_connection_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def dispatch(request: Request) -> Response:
        if request.target == "/boom":
            raise ZeroDivisionError("the handler has a bug")
        return echo(request)

    with serving(dispatch, SMALL) as port, caplog.at_level(logging.ERROR, logger="edgeds"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/boom")
            resp = conn.getresponse()
            assert resp.status == 500 and b"ZeroDivisionError" in resp.read()
            conn.request("GET", "/fine")  # the same connection
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"GET /fine ")
        finally:
            conn.close()
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "/boom" in record.getMessage()


def test_answers_from_another_thread_go_out_in_request_order() -> None:
    """The callback returns None and a worker answers later: pipelined requests wait their turn."""
    pending: queue.Queue[Request | None] = queue.Queue()

    def dispatch(request: Request) -> None:
        pending.put(request)

    def worker() -> None:
        while (request := pending.get()) is not None:
            request.respond_from_thread(json_response(200, {"n": int(bytes(request.body))}))

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        with serving(dispatch, SMALL) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            wire = b"".join(
                b"POST /n HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%d" % (len(b"%d" % i), i) for i in range(50)
            )
            sock.sendall(wire)
            data = b""
            while data.count(b"HTTP/1.1 200") < 50 or not data.endswith(b"}"):
                chunk = sock.recv(1 << 16)
                assert chunk, "connection closed early"
                data += chunk
    finally:
        pending.put(None)
        thread.join(10)
    assert [int(n) for n in re.findall(rb'\{"n":(\d+)\}', data)] == list(range(50))


def test_the_handler_gets_the_body_dechunked_and_inflated() -> None:
    body = b"tensor bytes " * 1000
    with serving(echo, SMALL) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            pieces = (body[i : i + 1000] for i in range(0, len(body), 1000))
            conn.request("POST", "/chunked", body=pieces, encode_chunked=True)
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"POST /chunked " + body)
            conn.request("POST", "/gzip", body=gzip.compress(body), headers={"Content-Encoding": "gzip"})
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"POST /gzip " + body)
        finally:
            conn.close()
