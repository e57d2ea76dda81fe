"""The runtime benchmark's CPU placement: servers on some CPUs, the load generator apart."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from edgeds import bench as lib
from edgeds.bench.loadgen import LoadGenerator
from edgeds.bench.placement import Placement, parse_cpus
from edgeds.errors import BenchError


@pytest.fixture
def restore_affinity() -> Iterator[set[int]]:
    before = os.sched_getaffinity(0)
    yield before
    os.sched_setaffinity(0, before)


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


def test_cpu_lists_read_like_taskset() -> None:
    assert parse_cpus("0,1") == {0, 1}
    assert parse_cpus("0-3,6") == {0, 1, 2, 3, 6}
    for bad in ("", "a", "1-", "3-1", "0;1"):
        with pytest.raises(BenchError, match="not a CPU number or range"):
            parse_cpus(bad)


def test_a_placement_rejects_overlap_missing_cpus_and_a_lone_load_generator(restore_affinity: set[int]) -> None:
    cpu = min(restore_affinity)
    with pytest.raises(BenchError, match="share CPUs"):
        Placement(frozenset({cpu}), frozenset({cpu}))
    with pytest.raises(BenchError, match="not available"):
        Placement(frozenset({cpu, 4096}))
    with pytest.raises(BenchError, match="needs --server-cpus"):
        Placement(None, frozenset({cpu}))
    assert Placement().describe() == {"server_cpus": "all", "loadgen_cpus": "the servers' own"}


def test_a_load_generator_is_the_native_or_the_python_one() -> None:
    with pytest.raises(BenchError, match="unknown load generator 'wrk'"):
        LoadGenerator("wrk", 8)
    python = LoadGenerator("python", 8)
    assert python.binary is None and python.concurrency == 8
    assert python.describe() == {"kind": "python", "what": "edgeds.bench.http_closed_loop (one thread, selectors)"}


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to keep apart")
def test_the_load_generator_runs_on_its_cpus_and_the_thread_goes_back(restore_affinity: set[int]) -> None:
    server_cpu, loadgen_cpu = sorted(restore_affinity)[:2]
    placement = Placement(frozenset({server_cpu}), frozenset({loadgen_cpu}))
    placement.pin_server_side()
    assert os.sched_getaffinity(0) == {server_cpu}
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client = lib.HttpClient("127.0.0.1", httpd.server_address[1], "/", b"x" * 1000)
    result: dict[str, object] = {}

    def load() -> None:  # a thread started here inherits the server side, as the bench's main thread is
        result["samples"] = placement.drive(client, 1.0, LoadGenerator("python", 8), warmup_s=0.0)
        result["after"] = os.sched_getaffinity(0)

    driver = threading.Thread(target=load)
    seen: set[frozenset[int]] = set()
    try:
        driver.start()
        while driver.is_alive():  # where the load generator's thread runs while it drives the load
            with contextlib.suppress(OSError):  # it may end between the check and the call
                seen.add(frozenset(os.sched_getaffinity(driver.native_id or 0)))
            time.sleep(0.005)  # leave the GIL and the server CPU to the load and the HTTP server
    finally:
        driver.join()
        client.close()
        httpd.shutdown()
        httpd.server_close()
    samples = result["samples"]
    assert isinstance(samples, lib.Samples) and samples.status and set(samples.status) == {200}
    assert frozenset({loadgen_cpu}) in seen
    assert result["after"] == {server_cpu}
