"""The benchmarks' native load generator (``bench/loadgen/closed_loop.c``): build it, drive HTTP with it.

Over HTTP the load generator shares the machine's cores with the server it measures, so every CPU
microsecond it spends per request is taken from the server. The Python one
(:func:`edgeds.bench.http_closed_loop`, one thread and a selector) spends ~60-90 us per request; a
C program doing the same closed loop (what perf_analyzer or wrk are to their servers) spends a few
microseconds beyond its system calls. Both send the same bytes and keep the same records, so either
can drive any server; ``runtime_bench.py`` reports which one ran.

The binary is compiled on first use with the system's C compiler (``cc``, or ``$CC``) into
``build/loadgen/`` (git-ignored) and rebuilt when the source is newer. Source and binary live in the
source checkout (:data:`edgeds.config.REPO_ROOT`): an edgeds installed without it has no native load
generator (:class:`LoadgenUnavailable`), only the Python one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from ..config import REPO_ROOT
from ..errors import BenchError
from .clients import HttpClient
from .stats import Samples

SOURCE = REPO_ROOT / "bench" / "loadgen" / "closed_loop.c"
BINARY = REPO_ROOT / "build" / "loadgen" / "closed_loop"
RECORD = np.dtype([("start", "<f8"), ("end", "<f8"), ("status", "<i4"), ("zero", "<i4")])
EXIT_REASONS = {2: "bad arguments or files", 3: "cannot connect", 4: "no response for 60 s"}


class LoadgenUnavailable(BenchError):
    """No C compiler, no source (edgeds installed without its checkout), or the source did not
    compile: the message says which, and how to go on."""


def compiler() -> list[str] | None:
    """The C compiler command this module builds with: ``$CC`` (split like a shell word list), else
    ``cc`` or ``gcc`` on the PATH."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    found = shutil.which("cc") or shutil.which("gcc")
    return [found] if found else None


def compiler_version() -> str:
    """The first line of the compiler's ``--version`` (for reports)."""
    cc = compiler()
    if not cc:
        return "no compiler"
    try:
        done = subprocess.run([*cc, "--version"], capture_output=True, text=True)
    except OSError as exc:
        return f"{shlex.join(cc)} ({exc})"
    return (done.stdout.splitlines() or [shlex.join(cc)])[0]


def build(source: Path = SOURCE, binary: Path = BINARY) -> Path:
    """The compiled load generator, built now if missing or older than ``source``."""
    if not source.is_file():
        raise LoadgenUnavailable(
            f"no load generator source at {source} (a source checkout has it); use --loadgen python"
        )
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    cc = compiler()
    if not cc:
        raise LoadgenUnavailable("no C compiler (cc or gcc) to build the native load generator; use --loadgen python")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")  # concurrent builds do not collide
    try:
        done = subprocess.run(
            [*cc, "-O2", "-Wall", "-Wextra", "-o", str(partial), str(source)], capture_output=True, text=True
        )
    except OSError as exc:
        raise LoadgenUnavailable(f"cannot run the C compiler {shlex.join(cc)}: {exc}") from exc
    if done.returncode != 0:
        raise LoadgenUnavailable(f"{shlex.join(cc)} could not build {source.name}:\n{done.stderr.strip()}")
    partial.replace(binary)
    return binary


def closed_loop(
    client: HttpClient,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    max_queries: int | None = None,
    binary: Path | None = None,
) -> Samples:
    """:func:`edgeds.bench.http_closed_loop`'s contract, run by the native program.

    It opens its own ``concurrency`` connections to ``client``'s address (not ``client``'s pool),
    sends ``client.request`` and returns the records of the requests sent after ``warmup_s``.
    The program inherits this thread's CPU affinity. BenchError if it fails (its message and exit
    reason included).
    """
    program = binary or build()
    host, port = client.address
    host = socket.gethostbyname(host)  # the program takes an IPv4 address
    with tempfile.TemporaryDirectory(prefix="edgeds-loadgen-") as tmp:
        request, out = Path(tmp) / "request", Path(tmp) / "records"
        request.write_bytes(client.request)
        argv = [
            str(program),
            host,
            str(port),
            str(request),
            str(concurrency),
            str(float(duration_s)),
            str(float(warmup_s)),
            str(-1 if max_queries is None else max_queries),
            str(out),
        ]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            reason = EXIT_REASONS.get(done.returncode, f"exit status {done.returncode}")
            raise BenchError(f"the native load generator failed ({reason}): {done.stderr.strip()}")
        records = np.fromfile(out, dtype=RECORD)
    samples = Samples()
    samples.starts = records["start"].tolist()
    samples.ends = records["end"].tolist()
    samples.status = records["status"].astype(int).tolist()
    return samples
