"""bench/loadgen/closed_loop.c, the benchmarks' native load generator, against real loopback servers."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import ClassVar

import pytest

from edgeds import bench as lib
from edgeds.bench import native_loadgen
from edgeds.errors import BenchError

pytestmark = pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler to build the native load generator"
)


@pytest.fixture(scope="module")
def loadgen(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Path]:
    binary = native_loadgen.build(binary=tmp_path_factory.mktemp("loadgen") / "closed_loop")
    return native_loadgen, binary


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # per server: the fixture makes a subclass with its own
    seen: ClassVar[list[bytes]] = []
    in_flight: ClassVar[int] = 0
    peak: ClassVar[int] = 0
    lock: ClassVar[threading.Lock] = threading.Lock()
    mode: ClassVar[str] = "ok"

    def do_POST(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.peak = max(cls.peak, cls.in_flight)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.002)  # long enough for every connection to have a request out at once
        with cls.lock:
            cls.seen.append(body)
            cls.in_flight -= 1
        if cls.mode == "garbage":
            self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
            self.close_connection = True
            return
        if cls.mode == "negative length":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n")
            self.close_connection = True
            return
        if cls.mode == "interim":  # a 100 Continue first: not the answer
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.wfile.flush()
        self.send_response(201)
        if cls.mode == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
            return
        if cls.mode == "close":
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[int, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"seen": [], "in_flight": 0, "peak": 0, "lock": threading.Lock()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], handler
    httpd.shutdown()
    httpd.server_close()


def test_it_sends_exactly_its_budget_at_its_concurrency_and_records_each_answer(
    loadgen: tuple[ModuleType, Path], server: tuple[int, type[_Handler]]
) -> None:
    module, binary = loadgen
    port, handler = server
    client = lib.HttpClient("127.0.0.1", port, "/v2/models/m/infer", b"payload-" * 1000, {"X-Test": "1"})
    started = time.perf_counter()
    samples = module.closed_loop(client, 4, 60.0, warmup_s=0.0, max_queries=40, binary=binary)
    finished = time.perf_counter()
    assert samples.status == [201] * 40
    assert handler.seen == [b"payload-" * 1000] * 40  # the client's bytes, whole
    assert handler.peak == 4 and samples.peak_in_flight() == 4
    # the records are on time.perf_counter's clock: within the call, each end after its start
    assert all(started <= s < e <= finished for s, e in zip(samples.starts, samples.ends, strict=True))


def test_warm_up_requests_are_sent_but_not_recorded(
    loadgen: tuple[ModuleType, Path], server: tuple[int, type[_Handler]]
) -> None:
    module, binary = loadgen
    port, handler = server
    client = lib.HttpClient("127.0.0.1", port, "/", b"x")
    started = time.perf_counter()
    samples = module.closed_loop(client, 2, 0.3, warmup_s=0.2, binary=binary)
    assert 0 < len(samples.status) < len(handler.seen)
    assert min(samples.starts) >= started + 0.2


@pytest.mark.parametrize(
    ("mode", "status"),
    [("close", 201), ("chunked", 201), ("interim", 201), ("garbage", 599), ("negative length", 599)],
)
def test_each_kind_of_answer_is_read_whole_or_counted_as_failed(
    loadgen: tuple[ModuleType, Path], server: tuple[int, type[_Handler]], mode: str, status: int
) -> None:
    """Closing, chunked and interim-first answers are read whole; ones that cannot be framed are 599s."""
    module, binary = loadgen
    port, handler = server
    handler.mode = mode
    client = lib.HttpClient("127.0.0.1", port, "/", b"x")
    samples = module.closed_loop(client, 3, 60.0, warmup_s=0.0, max_queries=12, binary=binary)
    assert samples.status == [status] * 12 and len(handler.seen) == 12


def test_no_server_is_a_clear_error(loadgen: tuple[ModuleType, Path]) -> None:
    module, binary = loadgen
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = lib.HttpClient("127.0.0.1", port, "/", b"x")
    with pytest.raises(BenchError, match="cannot connect"):
        module.closed_loop(client, 2, 1.0, warmup_s=0.0, binary=binary)


def test_a_source_that_does_not_compile_is_reported_with_the_compiler_output(tmp_path: Path) -> None:
    source = tmp_path / "broken.c"
    source.write_text("int main(void) { return missing; }\n")
    with pytest.raises(native_loadgen.LoadgenUnavailable, match="missing"):
        native_loadgen.build(source, tmp_path / "broken")


def test_no_source_is_reported_as_unavailable(tmp_path: Path) -> None:
    with pytest.raises(native_loadgen.LoadgenUnavailable, match="no load generator source") as raised:
        native_loadgen.build(tmp_path / "absent.c", tmp_path / "closed_loop")
    assert isinstance(raised.value, BenchError)
