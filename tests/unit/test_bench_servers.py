"""Servers under test in processes of their own: a server that dies or never answers is a BenchError."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgeds.bench.servers import free_port, stop, wait_http
from edgeds.errors import BenchError


def test_a_server_that_exits_before_answering_is_reported_with_its_status() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    with pytest.raises(BenchError, match="exited with 3"):
        wait_http(f"http://127.0.0.1:{free_port()}/v2/health/ready", 30, proc)


def test_a_server_that_never_answers_times_out_and_stops_with_its_group() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        with pytest.raises(BenchError, match=r"not ready after 0\.5s"):
            wait_http(f"http://127.0.0.1:{free_port()}/v2/health/ready", 0.5, proc)
    finally:
        stop(proc)
    assert proc.returncode is not None
