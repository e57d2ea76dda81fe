"""One host-side operation on every (or the named) host of a target: device commands, probe, setup.

Each function resolves the target (a name or a YAML path, see
:func:`~edgeds.deploy.targets.resolve_target`), picks its hosts (``hosts``: only these names;
None = all; an unknown name raises :class:`~edgeds.errors.ConfigError`) and returns one result per
host, keyed or ordered by host name as the target lists them. Every SSH connection opened here is
closed before the function returns.
"""

from __future__ import annotations

import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import DeployError
from .host import host_command, open_device
from .local_agent import prepare_local
from .setup import Progress, SetupResult, build_wheel, probe_host, setup_host
from .targets import host_plans, resolve_target


def each_host(
    target: str | Path, hosts: list[str] | None, command: str, request: dict[str, Any] | None = None
) -> dict[str, dict[str, Any]]:
    """Run the device command ``command`` (status, rollback, prune, ...) with ``request`` on each host.

    Hosts run one after another. A host that fails with a :class:`~edgeds.errors.DeployError`
    (unreachable, refused, the command failed) gets ``{"status": "error", "error": message}``
    instead of the command's answer, and the others still run.
    """
    loaded, path = resolve_target(target)
    out: dict[str, dict[str, Any]] = {}
    for plan in host_plans(loaded, path, hosts or None):
        try:
            out[plan.host.name] = host_command(plan, command, request or {})
        except DeployError as exc:
            out[plan.host.name] = {"status": "error", "error": str(exc)}
    return out


def probe_hosts(target: str | Path, hosts: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each host's probe (:func:`~edgeds.deploy.setup.probe_host`: arch, OS, Python, memory, disk,
    importable backends, GPU / JetPack), one host after another. The first failure raises."""
    loaded, path = resolve_target(target)
    out: dict[str, dict[str, Any]] = {}
    for plan in host_plans(loaded, path, hosts or None):
        session = open_device(plan)
        try:
            out[plan.host.name] = probe_host(session)
        finally:
            session.conn.close()
    return out


def setup_hosts(
    target: str | Path,
    hosts: list[str] | None = None,
    *,
    public_key: bytes | None = None,
    python: str | None = None,
    wheelhouse: Path | None = None,
    start_agent: bool = True,
    progress: Progress | None = None,
) -> list[SetupResult]:
    """:func:`~edgeds.deploy.setup.setup_host` on each host, ``rollout.parallelism`` hosts at a time.

    Without ``python`` an edgeds wheel is built from this checkout into a temporary directory
    (removed afterwards) and installed on every host; with it, that device interpreter is used
    and nothing is installed. ``public_key`` (PEM bytes) is trusted as the bundle publisher.
    ``progress(host, event, data)`` may be called from several threads at once. A host that
    fails is reported in its :class:`~edgeds.deploy.setup.SetupResult` (``ok`` False), not raised.
    The local target installs nothing: its agent runs ``python`` (default: this interpreter) with
    this process's edgeds, as a background process of this user.
    """
    loaded, path = resolve_target(target)
    plans = host_plans(loaded, path, hosts or None)
    if loaded.local:
        return [
            prepare_local(
                loaded,
                plan,
                python=python or sys.executable,
                public_key=public_key,
                progress=progress,
                start_agent=start_agent,
                require_key=False,
            )
            for plan in plans
        ]
    with tempfile.TemporaryDirectory(prefix="edgeds-wheel-") as tmp:
        wheel = build_wheel(Path(tmp)) if python is None else None
        with ThreadPoolExecutor(max_workers=max(1, min(loaded.rollout.parallelism, len(plans)))) as pool:
            return list(
                pool.map(
                    lambda plan: setup_host(
                        loaded,
                        plan,
                        wheel=wheel,
                        public_key=public_key,
                        python=python,
                        wheelhouse=wheelhouse,
                        start_agent=start_agent,
                        progress=progress,
                    ),
                    plans,
                )
            )
