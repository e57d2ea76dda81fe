"""Servers under test, each in a process of its own: start one, wait until it answers, stop it.

Each server runs in its own process group (so that stopping it stops its workers too) and inherits
the CPU affinity of the thread that starts it. ``edgeds serve`` runs from this interpreter, with
the ``edgeds`` package of a source tree: this checkout's, or another's to serve a reference build
beside it (:mod:`.reference` checks one); the bare-socket reference is
``bench/peers/bare_socket.py`` of this checkout.
"""

from __future__ import annotations

import os
import re
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


def tree_env(tree: Path) -> dict[str, str]:
    """This process's environment with ``tree`` first on ``PYTHONPATH``: with the working directory
    ``tree`` too, ``python -m edgeds`` imports ``tree``'s package, not an installed one."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(tree) if not path else f"{tree}{os.pathsep}{path}"}


def imported_edgeds(tree: Path) -> Path:
    """The ``edgeds/__init__.py`` that ``edgeds serve`` run from ``tree`` imports (probed in a child
    process started the same way). BenchError if it cannot import one."""
    code = "import edgeds; print(edgeds.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tree, env=tree_env(tree), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"python cannot import edgeds from {tree}: {tail}")
    return Path(done.stdout.strip()).resolve()


SERVE_FLAGS = ("--port", "--threads", "--max-batch", "--delay-us", "--preferred", "--instances")
"""Every option :func:`start_serve` passes; a reference build must take them all."""


def serve_flags(tree: Path) -> frozenset[str]:
    """The options that ``edgeds serve --help`` of ``tree`` lists. BenchError if the help fails."""
    env = {**tree_env(tree), "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}  # one option a line, no colour
    done = subprocess.run(
        [sys.executable, "-m", "edgeds", "serve", "--help"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise BenchError(f"edgeds serve --help of {tree} failed with {done.returncode}: {tail}")
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", done.stdout))


def start_serve(
    bundle: Path,
    threads: int,
    batching: Batching | None,
    *,
    tree: Path = REPO_ROOT,
    log: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int, str]:
    """``edgeds serve`` of ``bundle`` from ``tree``'s package (this checkout's by default) in its own
    process group, with ``batching`` (None: the bundle's own) on the command line (only
    :data:`SERVE_FLAGS`); its output goes to ``log`` (None: discarded), whose last lines a
    BenchError quotes if it does not start. Returns (process, port, model name) once ready; the
    caller stops it."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgeds", "serve", str(bundle), "--port", str(port), "--threads", str(threads)]
    if batching is not None:
        cmd += ["--max-batch", str(batching.max_batch_size), "--delay-us", str(batching.max_queue_delay_us)]
        cmd += ["--preferred", ",".join(str(p) for p in batching.preferred_batch_sizes)]
        cmd += ["--instances", str(batching.instances)]
    if log is None:
        proc = subprocess.Popen(
            cmd,
            cwd=tree,
            env=tree_env(tree),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    else:
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, cwd=tree, env=tree_env(tree), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/v2/health/ready", 60, proc)
        model = str(http_json(f"{url}/v2/models/stats")["model_stats"][0]["name"])
    except BenchError as exc:
        stop(proc)
        if log is None:
            raise
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-5:])
        raise BenchError(f"{exc} (edgeds serve from {tree}; its log {log}: {tail})") from exc
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


__all__ = [
    "BARE_SOCKET",
    "SERVE_FLAGS",
    "free_port",
    "imported_edgeds",
    "serve_flags",
    "start_bare_socket",
    "start_serve",
    "stop",
    "tree_env",
    "wait_http",
]
