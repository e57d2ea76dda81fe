"""Servers under test, each in a process of its own: start one, wait until it answers, stop it.

Each server runs in its own process group (so that stopping it stops its workers too) and inherits
the CPU affinity of the thread that starts it. ``edgeds serve`` runs from this interpreter; the
bare-socket reference is ``bench/peers/bare_socket.py`` of the source checkout.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..config import REPO_ROOT, Batching
from ..errors import BenchError
from .clients import http_json

BARE_SOCKET = REPO_ROOT / "bench" / "peers" / "bare_socket.py"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (another process may take it before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Poll ``url`` until it answers 200. BenchError if ``proc`` exits first or ``timeout`` s pass."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise BenchError(f"{url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server started here and its process group: SIGINT (a clean shutdown), SIGKILL after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def start_serve(bundle: Path, threads: int, batching: Batching | None) -> tuple[subprocess.Popen[bytes], int, str]:
    """``edgeds serve`` of ``bundle`` in its own process group, with ``batching`` (None: the bundle's own)
    on the command line; returns (process, port, model name) once ready. The caller stops it."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgeds", "serve", str(bundle), "--port", str(port), "--threads", str(threads)]
    if batching is not None:
        cmd += ["--max-batch", str(batching.max_batch_size), "--delay-us", str(batching.max_queue_delay_us)]
        cmd += ["--preferred", ",".join(str(p) for p in batching.preferred_batch_sizes)]
        cmd += ["--instances", str(batching.instances)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", 60, proc)
        model = str(http_json(f"{url}/v2/models/stats")["model_stats"][0]["name"])
    except BaseException:
        stop(proc)
        raise
    return proc, port, model


def start_bare_socket(artifact: Path, threads: int) -> tuple[subprocess.Popen[bytes], int]:
    """``bench/peers/bare_socket.py`` of this checkout, the unbatched transport ceiling, serving
    ``artifact``: one single-thread session per thread (the layout that fills the cores without
    batching). Returns (process, port) once ready; the caller stops it."""
    port = free_port()
    env = {
        **os.environ,
        "EDGEDS_PEER_MODEL": str(artifact),
        "EDGEDS_PEER_THREADS": str(threads),
        "EDGEDS_PEER_INSTANCES": str(threads),
    }
    cmd = [sys.executable, str(BARE_SOCKET), str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", 60, proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port


__all__ = ["BARE_SOCKET", "free_port", "start_bare_socket", "start_serve", "stop", "wait_http"]
