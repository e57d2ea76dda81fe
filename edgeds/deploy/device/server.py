"""The device's step server and the relay that reaches it: a deploy step forks instead of starting Python.

The agent starts ``python -m edgeds.deploy.device serve`` as its child: a step then costs ~0.1 s
instead of ~0.4 s for a fresh interpreter. The server imports edgeds once and listens on
``run/device.sock`` (mode 0600: only the device user). Each step the host runs over SSH is
:func:`step_argv`: a tiny stdlib-only :data:`RELAY` that hands its stdin, stdout and stderr
(SCM_RIGHTS) and its arguments to the server, which forks a child that runs the step on them
and sends back its exit code. Without a server the relay execs ``python -m edgeds.deploy.device
ARGS`` instead. Either way the step sees the same file descriptors and arguments, so the wire
format does not depend on which path ran it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

from .store import Store

log = logging.getLogger(__name__)


# Run as ``<install_dir>/bin/python -S -c RELAY <root> <python> ARGS...``; exits with the step's exit code.
RELAY = r"""
import json, os, socket, sys
root, py, args = sys.argv[1], sys.argv[2], sys.argv[3:]
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(root, "run", "device.sock"))
    socket.send_fds(s, [json.dumps(args).encode()], [0, 1, 2])
except OSError:
    os.execv(py, [py, "-m", "edgeds.deploy.device", *args])
data = b""
while True:
    chunk = s.recv(64)
    if not chunk:
        break
    data += chunk
sys.exit(int(data) if data.strip().lstrip(b"-").isdigit() else 1)
"""


def step_argv(python: str, root: str, args: list[str]) -> list[str]:
    """The command line that runs ``python -m edgeds.deploy.device ARGS`` on the device, via the
    step server when one is up (see :data:`RELAY`)."""
    return [python, "-S", "-c", RELAY, root, python, *args]


def serve(root: str | Path, run_step: Callable[[list[str]], int]) -> int:
    """The step server: import once, fork per step. Exits when its parent (the agent) goes away.

    Listens on ``run/device.sock`` (mode 0600: only the device user). Each connection carries the
    step's arguments and its three file descriptors (SCM_RIGHTS); a forked child makes them its
    stdin, stdout and stderr, runs ``run_step(args)`` (the command line's ``main``) and sends back
    its exit code.
    """
    from ... import bundle as _bundle  # noqa: F401  (the point: import before forking)

    store = Store(root)
    store.ensure()
    path = store.run_dir / "device.sock"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        server.bind(str(path))
    finally:
        os.umask(old_umask)
    server.listen(32)
    server.settimeout(1.0)
    parent = os.getppid()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    try:
        while os.getppid() == parent:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(10)
            try:
                message, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
                args = [str(a) for a in json.loads(message)]
            except (OSError, ValueError):
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:  # the step
                code = 1
                try:
                    server.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for number, fd in enumerate(fds):
                        os.dup2(fd, number)
                        os.close(fd)
                    code = run_step(args)
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:
                    # The child must reach os._exit below (never return into the server's loop): the
                    # traceback goes to the step's stderr and the relay exits 1.
                    log.exception("device step %s crashed", args)
                finally:
                    with contextlib.suppress(OSError, ValueError):  # the host may have closed its end
                        sys.stdout.flush()
                        sys.stderr.flush()
                    with contextlib.suppress(OSError):  # the relay is gone: nobody waits for the code
                        conn.settimeout(10)
                        conn.sendall(str(code).encode())
                    os._exit(0)
            for fd in fds:
                os.close(fd)
            conn.close()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if server.getsockname() == str(path):
                path.unlink()
        server.close()
    return 0
