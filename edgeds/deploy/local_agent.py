"""The local target's install: made ready by a deploy, its agent a background process of this user.

:func:`prepare_local` readies this machine's install dir through the same setup steps as a remote
device (:func:`edgeds.deploy.setup.setup_host`, over the local transport): the interpreter every
step uses (this Python, importing the same edgeds as this process: ``bin/edgeds-python``), the
publisher key to trust, ``agent-config.json`` and the agent. The agent runs as a supervised
background process of this user (``bin/edgeds-supervise``, started with ``setsid`` so it outlives
the command that started it; no systemd, no root; pid files in ``run/``, output in
``logs/agent.log``); a running agent is left as it is, and ``status``, ``rollback`` and ``logs``
find it again through those files. :func:`stop_local_agent` stops it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import time
from pathlib import Path

from ..config import Target
from ..errors import DeployError
from .host import Progress
from .setup import SetupResult, setup_host
from .targets import HostPlan

# cwd is never on sys.path (as in the devices' wrapper); the directory this edgeds is imported
# from comes first, so the agent runs the code of the process that deployed it.
ENV_PYTHON = """#!/bin/sh
# written by `edgeds deploy --target local`: this machine's Python with the deploying edgeds
PYTHONSAFEPATH=1 PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}} exec {python} "$@"
"""


def local_python(plan: HostPlan, python: str) -> Path:
    """Write ``<install_dir>/bin/edgeds-python`` (``python`` importing this process's edgeds); its path."""
    source = Path(__file__).resolve().parents[2]  # the directory holding this edgeds package
    path = Path(plan.install_dir) / "bin" / "edgeds-python"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = ENV_PYTHON.format(path=shlex.quote(str(source)), python=shlex.quote(python))
    if not path.is_file() or path.read_text() != body:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(body)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def public_pem(private_key: str | Path) -> bytes:
    """The PEM public key of the ed25519 private key file ``private_key`` (BundleError when unreadable):
    what this machine trusts for bundles it signs itself."""
    from cryptography.hazmat.primitives import serialization

    from ..bundle import load_private_key

    return (
        load_private_key(private_key)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def trusts_a_key(plan: HostPlan) -> bool:
    """Whether the local install already trusts a publisher key (``trust/*.pub``)."""
    trust = Path(plan.install_dir) / "trust"
    return trust.is_dir() and any(trust.glob("*.pub"))


def prepare_local(
    target: Target,
    plan: HostPlan,
    *,
    python: str,
    public_key: bytes | None = None,
    progress: Progress | None = None,
    start_agent: bool = True,
    require_key: bool = True,
) -> SetupResult:
    """Ready the local install dir of ``plan`` and start its agent unless it runs (see the module docstring).

    ``python``: the interpreter the agent and the steps run (normally ``sys.executable``).
    ``public_key`` (PEM) is trusted as the bundle publisher. With ``require_key`` (a deploy), raises
    :class:`DeployError` before anything is written when no key is given and none is trusted yet:
    the deploy could only be rejected. A failed step is in the result (``ok`` False,
    ``message``), not raised.
    """
    if not plan.local:
        raise DeployError(f"{plan.host.name} is not this machine")
    if require_key and public_key is None and not trusts_a_key(plan):
        raise DeployError(
            f"no publisher key is trusted in {plan.install_dir}/trust yet: deploy once with "
            "--public-key KEY.pub (the public half of the key that signed the bundle)"
        )
    try:
        wrapper = local_python(plan, python)
    except OSError as exc:
        raise DeployError(f"cannot write to the local install dir {plan.install_dir}: {exc}") from exc
    return setup_host(
        target,
        plan,
        wheel=None,
        public_key=public_key,
        python=str(wrapper),
        start_agent=start_agent,
        progress=progress,
    )


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _ours(pid: int | None, what: str) -> bool:
    """Whether ``pid`` runs and its command line holds ``what``: a pid file outlives its process
    (a reboot, a kill -9), and a reused pid must never be taken for the agent or signalled."""
    if pid is None:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:  # gone, or not readable: not a process of ours
        return False
    return what.encode() in cmdline


def stop_local_agent(plan: HostPlan, timeout: float = 15.0) -> bool:
    """Stop the local agent and its supervisor; True when both are gone within ``timeout`` seconds
    (after which they are sent SIGKILL). Nothing to do when they do not run. Only processes whose
    command line is this install's supervisor or agent are signalled."""
    root = Path(plan.install_dir)
    run = root / "run"
    mine = {
        "supervisor": (_pid(run / "supervisor.pid"), f"{root}/bin/edgeds-supervise"),
        "agent": (_pid(run / "agent.pid"), f"edgeds agent --root {root}"),
    }

    def running() -> list[int]:
        return [pid for pid, what in mine.values() if pid is not None and _ours(pid, what)]

    if not running():
        return True
    (run / "supervisor.stop").touch()  # the supervisor does not restart the agent after this
    agent, what = mine["agent"]
    if agent is not None and _ours(agent, what):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(agent, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running():
            return True
        time.sleep(0.1)
    for pid in running():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return False
