"""Streamed responses (:mod:`edgeds.runtime.streams`) on the HTTP/1.1 layer on its own: chunked and
close-delimited bodies, Server-Sent Events, producers on other threads, back-pressure, clients that
go away, keep-alive after a stream and TLS, on real sockets over loopback."""

from __future__ import annotations

import asyncio
import http.client
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeds.config import ServerLimits
from edgeds.runtime.auth import server_tls_context
from edgeds.runtime.http1 import Request
from edgeds.runtime.http_syntax import Response
from edgeds.runtime.streams import Stream, StreamCancelled, StreamError, StreamStalled
from edgeds.sim.certs import make_certificates

from ._http_serving import serving


class Producer:
    """A dispatch callback that streams from a thread of its own: ``produce(stream, request)`` runs
    there for each request whose target starts with ``/stream``; other targets get a plain answer."""

    def __init__(self, produce: Callable[[Stream, Request], None], content_type: str = "text/event-stream") -> None:
        self.produce = produce
        self.content_type = content_type
        self.errors: list[BaseException] = []
        self.cancelled = threading.Event()
        self.threads: list[threading.Thread] = []

    def __call__(self, request: Request) -> Response | None:
        if not request.target.startswith("/stream"):
            return Response(200, b"plain " + request.target.encode(), "text/plain")
        stream = request.stream(200, self.content_type, on_cancel=self.cancelled.set)
        thread = threading.Thread(target=self._run, args=(stream, request), daemon=True)
        self.threads.append(thread)
        thread.start()
        return None

    def _run(self, stream: Stream, request: Request) -> None:
        try:
            self.produce(stream, request)
        except BaseException as exc:  # the test reads it from self.errors
            self.errors.append(exc)
            raise

    def join(self) -> None:
        for thread in self.threads:
            thread.join(20)
            assert not thread.is_alive(), "the producer did not finish"


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """The response head from a raw socket, and what was read after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before the head ended: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_until_closed(sock: socket.socket, data: bytes = b"") -> bytes:
    while chunk := sock.recv(65536):
        data += chunk
    return data


def dechunk(body: bytes) -> list[bytes]:
    """The chunks of a whole chunked body (without extensions or trailers)."""
    chunks: list[bytes] = []
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if not size:
            assert body == b"\r\n"
            return chunks
        chunks.append(body[:size])
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """A small Server-Sent Events parser (WHATWG HTML 9.2.6): ``event``, ``id`` and the joined
    ``data`` of each event, dispatched at a blank line."""
    event: dict[str, str] = {}
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield {**event, "data": "\n".join(data)}
            event, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name in ("event", "id"):
            event[name] = value


def response_lines(resp: http.client.HTTPResponse) -> Iterator[str]:
    while line := resp.readline():
        yield line.decode("utf-8")


def test_a_chunked_stream_read_by_http_client_then_keep_alive() -> None:
    """Each send is one chunk; the last chunk ends the body and the connection serves the next request."""

    def produce(stream: Stream, request: Request) -> None:
        for i in range(5):
            stream.send(b"part %d\n" % i)
        stream.close()

    producer = Producer(produce, "text/plain")
    with serving(producer) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/stream")
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Transfer-Encoding") == "chunked"
            assert resp.getheader("Content-Type") == "text/plain"
            assert resp.read() == b"".join(b"part %d\n" % i for i in range(5))
            conn.request("GET", "/after")  # the same connection
            resp = conn.getresponse()
            assert (resp.status, resp.read()) == (200, b"plain /after")
            conn.request("GET", "/stream-again")  # and another stream on it
            assert conn.getresponse().read().startswith(b"part 0\n")
        finally:
            conn.close()
    producer.join()
    assert not producer.errors and not producer.cancelled.is_set()


def test_the_chunked_framing_on_the_wire() -> None:
    """Read with a raw socket: the head, one chunk per send, the terminating chunk, nothing more."""

    def dispatch(request: Request) -> None:
        stream = request.stream(200, "application/x-ndjson", fields=(("X-Request-Id", "r1"),))
        stream.send(b'{"a":1}\n')
        stream.send(b"")  # nothing is sent for empty data (a zero-length chunk would end the body)
        stream.send(memoryview(b"x" * 300))
        stream.close()
        stream.close()  # again: nothing

    with serving(dispatch) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(sock)
        expected = b'8\r\n{"a":1}\n\r\n' + b"12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"
        while len(rest) < len(expected):
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"Transfer-Encoding: chunked" in lines and b"X-Request-Id: r1" in lines
    assert b"Content-Type: application/x-ndjson" in lines
    assert not any(line.lower().startswith((b"content-length", b"connection")) for line in lines)
    assert rest == expected


def test_a_producer_thread_streams_1000_server_sent_events() -> None:
    """What an LLM's token stream looks like: events from another thread, ended by ``data: [DONE]``."""

    def produce(stream: Stream, request: Request) -> None:
        for i in range(1000):
            stream.send_event(f'{{"token": {i}}}', id=str(i))
        stream.send_event("two lines\nand é", event="note")
        stream.send_event("[DONE]")
        stream.close()

    producer = Producer(produce)
    with serving(producer) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("POST", "/stream/v1/chat/completions", body=b'{"stream": true}')
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Type") == "text/event-stream"
            assert resp.getheader("Cache-Control") == "no-cache"
            events = list(sse_events(response_lines(resp)))
        finally:
            conn.close()
    producer.join()
    assert not producer.errors
    assert [e["data"] for e in events[:1000]] == [f'{{"token": {i}}}' for i in range(1000)]
    assert [e["id"] for e in events[:1000]] == [str(i) for i in range(1000)]
    assert events[1000] == {"event": "note", "data": "two lines\nand é"}
    assert events[1001] == {"data": "[DONE]"}
    assert len(events) == 1002


def test_server_sent_events_read_by_httpx() -> None:
    httpx = pytest.importorskip("httpx")

    def produce(stream: Stream, request: Request) -> None:
        for i in range(10):
            stream.send_event(str(i))
        stream.send_event("[DONE]")
        stream.close()

    producer = Producer(produce)
    with (
        serving(producer) as port,
        httpx.Client() as client,
        client.stream("GET", f"http://127.0.0.1:{port}/stream") as resp,
    ):
        events = list(sse_events(iter(resp.iter_lines())))
    producer.join()
    assert [e["data"] for e in events] == [*map(str, range(10)), "[DONE]"]


def test_an_event_field_must_be_one_line() -> None:
    def dispatch(request: Request) -> None:
        stream = request.stream()
        with pytest.raises(ValueError, match="one line"):
            stream.send_event("x", event="a\nb")
        with pytest.raises(ValueError, match="one line"):
            stream.send_event("x", id="1\r")
        stream.close()
        with pytest.raises(StreamError, match="closed"):
            stream.send(b"late")

    with serving(dispatch) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/s")
            assert conn.getresponse().read() == b""
        finally:
            conn.close()


def test_back_pressure_a_client_that_does_not_read_makes_send_wait() -> None:
    """The producer blocks once the transport is above its high-water mark: the server buffers at
    most the mark plus one chunk; once the client reads, everything arrives in order."""
    chunk = 16 * 1024
    stalled = threading.Event()
    sent: list[int] = []

    def produce(stream: Stream, request: Request) -> None:
        i = 0
        while not stalled.is_set() and i < 4096:  # at most 64 MiB: the kernel buffers fill far sooner
            try:
                stream.send(bytes([65 + i % 26]) * chunk, timeout=0.5)
            except StreamStalled:
                stalled.set()
                break
            i += 1
        sent.append(i)
        for j in range(i, i + 20):  # the client reads again: these wait for room, then go out
            stream.send(bytes([65 + j % 26]) * chunk)
        sent.append(i + 20)
        stream.close()

    streams: list[Stream] = []

    def dispatch(request: Request) -> None:
        stream = request.stream(200, "application/octet-stream")
        streams.append(stream)
        threading.Thread(target=produce, args=(stream, request), daemon=True).start()

    with serving(dispatch) as port, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffers fill
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        assert stalled.wait(30), "send never waited for the client"
        [stream] = streams
        assert not stream.cancelled
        assert 0 < stream.peak_buffered <= stream.high_water + chunk + 16  # (+ the chunk's framing)
        _, body = read_head(sock)
        while not body.endswith(b"0\r\n\r\n"):
            data = sock.recv(1 << 20)
            assert data, "closed early"
            body += data
    assert stream.peak_buffered <= stream.high_water + chunk + 16
    chunks = dechunk(body)
    assert len(chunks) == sent[-1]
    assert all(c == bytes([65 + i % 26]) * chunk for i, c in enumerate(chunks))


def test_a_client_that_never_reads_again_is_cut_after_the_idle_timeout() -> None:
    """A stalled client does not hold the connection: the blocked producer sees the stream cancelled."""
    outcome: queue.Queue[BaseException | None] = queue.Queue()

    def produce(stream: Stream, request: Request) -> None:
        try:
            for _ in range(4096):
                stream.send(b"z" * 16384)  # no timeout: blocks until the connection is cut
            outcome.put(None)
        except StreamCancelled as exc:
            outcome.put(exc)

    producer = Producer(produce, "application/octet-stream")
    with serving(producer, ServerLimits(idle_timeout_s=0.5)) as port, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        assert isinstance(outcome.get(timeout=30), StreamCancelled)
        assert producer.cancelled.is_set()  # on_cancel was called
    producer.join()


def test_a_client_that_disconnects_is_noticed_at_once() -> None:
    """The producer sends nothing after the client closes: the read side notices, not a failed write."""
    first_sent = threading.Event()
    seen: list[float] = []

    def produce(stream: Stream, request: Request) -> None:
        stream.send_event("first")
        first_sent.set()
        while not stream.cancelled:  # idle until the stream is cancelled (bounded below)
            if len(seen) > 1000:
                return
            seen.append(time.monotonic())
            time.sleep(0.01)
        with pytest.raises(StreamCancelled):
            stream.send_event("too late")
        stream.close()  # nothing once cancelled

    producer = Producer(produce)
    with serving(producer) as port:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        read_head(sock)
        assert first_sent.wait(10)
        closed = time.monotonic()
        sock.close()
        assert producer.cancelled.wait(5), "the stream was not cancelled"
        noticed = time.monotonic() - closed
    producer.join()
    assert not producer.errors
    assert noticed < 5, noticed  # well within ~100 ms on an idle machine; only bounded here


def test_streams_and_pipelined_requests_are_answered_in_order() -> None:
    """A request pipelined behind a stream waits until the stream is closed."""

    def produce(stream: Stream, request: Request) -> None:
        for i in range(3):
            time.sleep(0.02)
            stream.send(b"s%d" % i)
        stream.close()

    producer = Producer(produce, "text/plain")
    with serving(producer) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\nGET /next HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        data = read_until_closed(sock)
    producer.join()
    first, _, second = data.partition(b"0\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200") and first.endswith(b"2\r\ns0\r\n2\r\ns1\r\n2\r\ns2\r\n")
    assert second.startswith(b"HTTP/1.1 200") and second.endswith(b"plain /next")


def test_an_http_1_0_client_gets_a_close_delimited_body() -> None:
    def produce(stream: Stream, request: Request) -> None:
        for i in range(3):
            stream.send_event(str(i))
        stream.close()

    producer = Producer(produce)
    with serving(producer) as port:
        for request in (b"GET /stream HTTP/1.0\r\n\r\n", b"GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(request)
                head, rest = read_head(sock)
                body = read_until_closed(sock, rest)  # the server closes: that ends the body
            lines = head.split(b"\r\n")
            assert b"Connection: close" in lines and b"Cache-Control: no-cache" in lines
            assert not any(line.lower().startswith((b"transfer-encoding", b"content-length")) for line in lines)
            assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    producer.join()


def test_a_connection_close_request_gets_a_chunked_stream_then_the_close() -> None:
    def dispatch(request: Request) -> None:
        stream = request.stream(200, "text/plain")
        stream.send(b"only")
        stream.close()

    with serving(dispatch) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        head, rest = read_head(sock)
        body = read_until_closed(sock, rest)
    assert b"Transfer-Encoding: chunked" in head and b"Connection: close" in head
    assert body == b"4\r\nonly\r\n0\r\n\r\n"


def test_a_stream_begun_from_another_thread_and_an_abort() -> None:
    """The dispatch callback returns None and a worker starts the stream later; a producer that
    fails aborts it: the client sees the body cut short, and the server goes on."""
    pending: queue.Queue[Request | None] = queue.Queue()

    def dispatch(request: Request) -> Response | None:
        if request.target == "/health":
            return Response(200, b"ok", "text/plain")
        pending.put(request)
        return None

    def worker() -> None:
        while (request := pending.get()) is not None:
            stream = request.stream(200, "text/plain")
            stream.send(b"begun")
            if request.target == "/fail":
                stream.abort()
                with pytest.raises(StreamCancelled):
                    stream.send(b"more")
            else:
                stream.close()

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        with serving(dispatch) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/ok")
                assert conn.getresponse().read() == b"begun"
                conn.request("GET", "/fail")
                with pytest.raises((http.client.HTTPException, ConnectionError)):  # cut before or after the head
                    conn.getresponse().read()
            finally:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/health")
                assert conn.getresponse().read() == b"ok"
            finally:
                conn.close()
    finally:
        pending.put(None)
        thread.join(10)


def test_a_handler_that_raises_after_beginning_a_stream_cuts_it() -> None:
    def dispatch(request: Request) -> None:
        stream = request.stream(200, "text/plain")
        stream.send(b"half")
        raise RuntimeError("the handler has a bug")

    with serving(dispatch) as port, socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /s HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(sock)
        body = read_until_closed(sock, rest)
    assert head.startswith(b"HTTP/1.1 200") and body == b"4\r\nhalf\r\n"  # no 500 inside it, no last chunk


def test_an_event_loop_producer_awaits_drain() -> None:
    """A producer on the loop thread never blocks: it awaits ``drain`` between sends."""
    tasks: set[asyncio.Task[None]] = set()

    async def produce(stream: Stream) -> None:
        for i in range(200):
            stream.send(b"%05d" % i + b"." * 4000)
            await stream.drain()
        stream.close()

    def dispatch(request: Request) -> None:
        task = asyncio.get_running_loop().create_task(produce(request.stream(200, "text/plain")))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    with serving(dispatch) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/s")
            body = conn.getresponse().read()
        finally:
            conn.close()
    assert len(body) == 200 * 4005 and body[-4005:-4000] == b"00199"


def test_streams_over_tls(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "tls")

    def produce(stream: Stream, request: Request) -> None:
        for i in range(100):
            stream.send_event(f"token {i}")
        stream.send_event("[DONE]")
        stream.close()

    producer = Producer(produce)
    client = ssl.create_default_context(cafile=str(certs.ca))
    with serving(producer, tls=server_tls_context(certs.cert, certs.key)) as port:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=client)
        try:
            conn.request("GET", "/stream")
            resp = conn.getresponse()
            assert resp.getheader("Transfer-Encoding") == "chunked"
            events = [e["data"] for e in sse_events(response_lines(resp))]
            conn.request("GET", "/after")  # keep-alive over TLS too
            assert conn.getresponse().read() == b"plain /after"
        finally:
            conn.close()
    producer.join()
    assert events == [*(f"token {i}" for i in range(100)), "[DONE]"]
