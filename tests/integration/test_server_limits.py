"""Hostile clients against a real ``edgeds serve`` on loopback: slowloris, memory pinning, JSON
amplification and descriptor exhaustion. Each leaves health answering and the server's RSS back
within 10 % of its baseline once the clients are gone. Timeouts are shortened so the tests run fast."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from ._serve import json_banner

pytest.importorskip("onnxruntime")

HEALTH = "/v2/health/ready"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeds.compile.pipeline import compile_model
    from edgeds.compile.tiny import write_tiny_model

    work = tmp_path_factory.mktemp("limits")
    with pytest.MonkeyPatch.context() as mp:  # private dataset/compile caches: nothing stale from other runs
        mp.setenv("EDGEDS_CACHE_DIR", str(work / "cache"))
        model = write_tiny_model(work / "src", validation_count=16, calibration_count=8)
        return compile_model(model, "x86-cpu", precision="fp32", out=work / "bundle", use_cache=False).bundle


@dataclass
class Served:
    port: int
    process: psutil.Process
    stderr: Path

    def rss(self) -> int:
        return int(self.process.memory_info().rss)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextmanager
def serving(bundle: Path, tmp_path: Path, *flags: str, nofile: int | None = None) -> Iterator[Served]:
    """``edgeds serve`` with ``flags`` (one instance, workers), optionally under a descriptor limit."""

    def limit_descriptors() -> None:
        if nofile is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    exe = Path(sys.executable).parent / "edgeds"
    stderr = tmp_path / "serve.log"
    args = [str(exe), "serve", str(bundle), "--port", "0", "--threads", "1", "--execution", "workers", "--json"]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [*args, *flags],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
            preexec_fn=limit_descriptors,
        )
    try:
        assert proc.stdout is not None
        info = json_banner(proc.stdout)
        served = Served(int(info["url"].rsplit(":", 1)[1]), psutil.Process(proc.pid), stderr)
        assert health(served.port) == 200
        yield served
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(15) == 0


def health(port: int, timeout: float = 5.0) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH}", timeout=timeout) as r:
        return int(r.status)


def settle(served: Served, baseline: int) -> int:
    """The server's RSS once it is back within 10 % of ``baseline`` (or after 5 s, whatever it is)."""
    deadline = time.monotonic() + 5
    rss = served.rss()
    while rss > baseline * 1.1 and time.monotonic() < deadline:
        time.sleep(0.1)
        rss = served.rss()
    return rss


def read_all(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_slowloris_heads_are_closed_after_the_header_timeout(bundle: Path, tmp_path: Path) -> None:
    """50 heads trickled a byte at a time: health answers meanwhile, each gets 408 within ~0.5 s of
    its first byte (the deadline is for the whole head, not reset per byte) and is closed."""
    with serving(bundle, tmp_path, "--header-timeout", "0.5") as served, ExitStack() as stack:
        baseline = served.rss()
        socks = [stack.enter_context(socket.create_connection(("127.0.0.1", served.port))) for _ in range(50)]
        for sock in socks:
            sock.sendall(b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # keep trickling: a byte per connection every 0.1 s
            time.sleep(0.1)
            for sock in socks:
                with contextlib.suppress(OSError):  # closed already
                    sock.sendall(b"X")
        assert health(served.port) == 200  # meanwhile
        answers = [read_all(sock, 5) for sock in socks]
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), {a[:40] for a in answers}
        assert health(served.port) == 200
        assert settle(served, baseline) <= baseline * 1.1


def test_an_idle_connection_is_closed_silently(bundle: Path, tmp_path: Path) -> None:
    with serving(bundle, tmp_path, "--idle-timeout", "0.5", "--header-timeout", "0.5") as served:
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            answer = read_all(sock, 5)  # the answer, then the close once idle
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1


def test_a_slow_body_gets_408_at_its_deadline(bundle: Path, tmp_path: Path) -> None:
    flags = ("--body-timeout", "0.5", "--body-min-rate", "1024")  # 64 KiB: 0.5 s + 1/16 s
    with serving(bundle, tmp_path, *flags) as served, socket.create_connection(("127.0.0.1", served.port)) as sock:
        head = "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 10\r\n"
        sock.sendall(f"{head}Content-Length: 65536\r\n\r\n".encode() + b"x" * 100)
        assert read_all(sock, 5).startswith(b"HTTP/1.1 408 ")
        assert health(served.port) == 200


def test_connections_announcing_huge_bodies_do_not_pin_memory(bundle: Path, tmp_path: Path) -> None:
    """10 connections announce 60 MB and send 64 KB: RSS grows by what was sent, not what was
    announced, and is back at its baseline once they are gone."""
    with serving(bundle, tmp_path, "--max-body-mb", "64") as served:
        baseline = served.rss()
        with ExitStack() as stack:
            for _ in range(10):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", served.port)))
                sock.sendall(
                    b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 100\r\n"
                    b"Content-Length: 60000000\r\n\r\n" + b"\0" * 65536
                )
            assert health(served.port) == 200
            held = served.rss()
            assert held <= baseline + 64 * 2**20, (baseline, held)  # 10 x 60 MB would be 600 MB
        assert health(served.port) == 200
        assert settle(served, baseline) <= baseline * 1.1


def test_json_amplification_is_bounded(bundle: Path, tmp_path: Path) -> None:
    """A 19 MB JSON body is refused before it is parsed (JSON gets 8 MiB by default), and so is a
    small gzip body that inflates past that; health answers and RSS returns."""
    with serving(bundle, tmp_path) as served:
        baseline = served.rss()
        numbers = ",".join(["0.123456789"] * (19_000_000 // 12))
        body = f'{{"inputs":[{{"name":"input","shape":[1],"datatype":"FP32","data":[{numbers}]}}]}}'.encode()
        conn = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)  # keep-alive: the body is read
        try:
            for data, headers in ((body, {}), (gzip.compress(body), {"Content-Encoding": "gzip"})):
                conn.request("POST", "/v2/models/tiny/infer", body=data, headers=headers)
                refused = conn.getresponse()
                assert refused.status == 413 and b"limit" in refused.read()  # Content Too Large
        finally:
            conn.close()
        with socket.create_connection(("127.0.0.1", served.port)) as sock:  # a binary request's JSON header too
            sock.sendall(
                b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 20000000\r\n"
                b"Content-Length: 20000000\r\n\r\n"
            )
            assert read_all(sock, 5).startswith(b"HTTP/1.1 400 ")
        assert health(served.port) == 200
        assert settle(served, baseline) <= baseline * 1.1


def test_past_the_connection_cap_only_health_is_served(bundle: Path, tmp_path: Path) -> None:
    """Four connections hold the cap: the next one is refused with 503 and closed, while health and
    metrics are answered on fresh connections (through the reserve, the oldest reserved dropped)."""
    flags = ("--max-connections", "4", "--reserve-connections", "2", "--header-timeout", "30")
    with serving(bundle, tmp_path, *flags) as served, ExitStack() as stack:
        for _ in range(4):
            stack.enter_context(socket.create_connection(("127.0.0.1", served.port)))
        assert wait_for(lambda: len(served.process.net_connections()) >= 5, 5)  # 4 and the listener
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
            refused = read_all(sock, 5)
        assert refused.startswith(b"HTTP/1.1 503 ") and b"Connection: close" in refused
        assert b"connection limit" in refused
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", served.port))) for _ in range(5)]
        assert idle and health(served.port) == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{served.port}/metrics", timeout=5) as r:
            assert r.status == 200


def test_descriptor_exhaustion_leaves_health_answering(bundle: Path, tmp_path: Path) -> None:
    """Under a descriptor limit of 128, 200 idle connections: the cap follows the limit, health
    gets through the reserve, and the log holds a bounded number of lines about accepting."""
    with serving(bundle, tmp_path, "--header-timeout", "30", nofile=128) as served, ExitStack() as stack:
        baseline = served.rss()
        for _ in range(200):
            stack.enter_context(socket.create_connection(("127.0.0.1", served.port)))
        cap = int(re.findall(r"serving at most (\d+) connections", served.log())[0])
        assert cap < 128
        assert wait_for(lambda: len(served.process.net_connections()) >= cap, 10)
        for _ in range(5):
            assert health(served.port) == 200
        stack.close()
        assert wait_for(lambda: health(served.port) == 200, 5)
        assert settle(served, baseline) <= baseline * 1.1
    log = served.log()
    assert "serving at most" in log  # the cap the limit leaves, said once
    assert len(re.findall("accept", log)) <= 3, log[-2000:]


ACCEPT_SCRIPT = textwrap.dedent(
    """
    import logging, os, resource, sys, time
    from edgeds.config import ServerLimits
    from edgeds.runtime.http_syntax import json_response
    from edgeds.runtime.loops import EventLoops

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    limits = ServerLimits(header_timeout_s=0.3, accept_backoff_s=0.2)
    loops = EventLoops(1, lambda lp: lambda request: json_response(200, {"ok": True}), limits=limits, alignment=64)
    port = loops.bind("127.0.0.1", 0)
    loops.start()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + 4, hard))
    print(port, flush=True)
    sys.stdin.read()  # until the test closes it
    loops.stop()
    """
)


def test_out_of_descriptors_the_acceptor_pauses_and_logs_once(tmp_path: Path) -> None:
    """EMFILE once serving (the limit lowered after start): accepting pauses instead of spinning, one
    line is logged, and the waiting clients are served as descriptors free up."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", ACCEPT_SCRIPT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        with ExitStack() as stack:
            for _ in range(12):  # idle: more than the descriptors left
                stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
                sock.settimeout(15)
                assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
        _, err = proc.communicate(timeout=15)  # closes stdin: the script stops
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [line for line in err.splitlines() if "accept" in line]
    assert 1 <= len(lines) <= 2, err
    assert "Too many open files" in lines[0] and "pauses" in lines[0]


def infer_request(keep: bytes = b"") -> bytes:
    """A binary-tensor infer request for the tiny model (answered by an engine worker), then ``keep``."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [1, 3, 160, 160],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": 307200},
                }
            ]
        }
    ).encode()
    head = (
        "POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
        f"Inference-Header-Content-Length: {len(header)}\r\nContent-Length: {len(header) + 307200}\r\n\r\n"
    )
    return head.encode() + header + b"\0" * 307200 + keep


def failures(port: int) -> dict[str, float]:
    """The failure counters of ``/metrics`` by status code."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(r'^edgeds_http_request_failures_total\{class="\dxx",code="(\d+)"\} (\S+)$', text, re.M)
    return {code: float(value) for code, value in found}


def test_the_start_of_a_next_head_after_an_answer_gets_408_and_counts(bundle: Path, tmp_path: Path) -> None:
    """A whole request and the first bytes of the next: the answer, then 408 at the header deadline
    (not the idle one), whether the loop answered (health) or an engine worker (infer), and each 408
    is counted in the failures."""
    flags = ("--header-timeout", "0.5", "--idle-timeout", "60")
    with serving(bundle, tmp_path, *flags) as served:
        for request in (f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), infer_request()):
            with socket.create_connection(("127.0.0.1", served.port)) as sock:
                sock.sendall(request + b"GET /v2/he")
                started = time.monotonic()
                answer = read_all(sock, 10)
                assert time.monotonic() - started < 5  # closed at the header deadline, not the idle one
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
            assert answer.count(b"HTTP/1.1 ") == 2 and b"HTTP/1.1 408 " in answer, answer[-300:]
        assert failures(served.port).get("408") == 2
        assert health(served.port) == 200


def test_a_body_that_stops_coming_gets_408_after_its_grace(bundle: Path, tmp_path: Path) -> None:
    """A body's deadline does not grow with its declared length: a 60 MB binary body and a chunked one
    that stop coming get 408 soon after ``body_timeout_s``; a body over the limit too large to drop
    (1 GB declared) is answered 413 and closed at once."""
    flags = ("--body-timeout", "0.5", "--max-body-mb", "64")
    infer = b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\n"
    stalled = (
        infer + b"Inference-Header-Content-Length: 10\r\nContent-Length: 60000000\r\n\r\n" + b"\0" * 1000,
        infer + b"Transfer-Encoding: chunked\r\n\r\n1000\r\n" + b"\0" * 100,
    )
    with serving(bundle, tmp_path, *flags) as served:
        for request in stalled:
            with socket.create_connection(("127.0.0.1", served.port)) as sock:
                sock.sendall(request)
                started = time.monotonic()
                assert read_all(sock, 10).startswith(b"HTTP/1.1 408 ")
                assert time.monotonic() - started < 5  # 0.5 s of grace, then the first sweep
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.sendall(infer + b"Content-Length: 1000000000\r\n\r\n" + b"\0" * 1000)
            started = time.monotonic()
            assert read_all(sock, 10).startswith(b"HTTP/1.1 413 ")
            assert time.monotonic() - started < 5  # not held while 1 GB is dropped
        assert health(served.port) == 200


def test_a_client_that_reads_no_answers_cannot_grow_the_server(bundle: Path, tmp_path: Path) -> None:
    """Pipelined requests from a client that never reads: the server stops reading once its write
    buffer is full (the client's sends block), RSS stays bounded, and the connection is dropped after
    ``idle_timeout_s``."""
    with serving(bundle, tmp_path, "--idle-timeout", "1") as served:
        baseline = served.rss()
        requests = f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 1000
        sent = 0
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            deadline = time.monotonic() + 8
            with contextlib.suppress(OSError):  # blocked (timeout), then reset by the server
                while time.monotonic() < deadline:
                    sock.sendall(requests)
                    sent += len(requests)
            held = served.rss()
        assert sent < 64 * 2**20  # the server stopped reading
        assert held <= baseline + 32 * 2**20, (baseline, held)
        assert health(served.port) == 200
        assert settle(served, baseline) <= baseline * 1.1


def test_a_head_trickled_in_pieces_is_scanned_as_it_comes(bundle: Path, tmp_path: Path) -> None:
    """A head sent a few bytes at a time, its CRLFs split between sends, is answered; a bare LF that
    arrives after the first bytes were scanned is still found (400)."""
    with serving(bundle, tmp_path) as served:
        pieces = (f"GET {HEALTH} HTTP/1.1\r", "\nHost: x\r", "\n", "\r", "\n")
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in pieces:
                sock.sendall(piece.encode())
                time.sleep(0.05)
            sock.settimeout(5)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection(("127.0.0.1", served.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for piece in (f"GET {HEALTH} HTTP/1.1\r\nHost: x\r\n", "X-A: 1", "\nX-B: 2\r\n"):
                sock.sendall(piece.encode())
                time.sleep(0.05)
            assert read_all(sock, 5).startswith(b"HTTP/1.1 400 ")
