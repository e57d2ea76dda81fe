"""A target's hosts as SSH endpoints: key and pinned known_hosts resolved on this machine.

Relative ``ssh.key`` / ``ssh.known_hosts`` (and agent secret) paths are relative to the target file's directory;
``known_hosts`` defaults to ``<target dir>/known_hosts/<target name>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..config import HostEntry, Target, list_targets, load_target
from ..errors import ConfigError
from .ssh import Endpoint


@dataclass(frozen=True)
class HostPlan:
    """One host of a target: how to reach it and where edgeds lives on it."""

    host: HostEntry
    endpoint: Endpoint
    install_dir: str
    target_dir: Path | None = None  # relative paths of the target (agent secrets) start here


def resolve_target(name_or_path: str | Path) -> tuple[Target, Path | None]:
    """Load a target and return it with the file it came from (None for the embedded ``local``)."""
    target = load_target(name_or_path)
    text = str(name_or_path)
    if "/" in text or text.endswith((".yaml", ".yml")):
        return target, Path(text).resolve()
    found = list_targets().get(text)
    return target, found.resolve() if found else None


def resolve_path(value: str, base: Path) -> Path:
    path = Path(os.path.expanduser(value))
    return path if path.is_absolute() else (base / path).resolve()


def host_plans(target: Target, target_path: Path | None, only: list[str] | None = None) -> list[HostPlan]:
    """Every (or the ``only`` named) host of ``target`` with its endpoint."""
    if target.local:
        raise ConfigError.single(target_path, None, "local", "the local target has no hosts to reach over SSH")
    base = target_path.parent if target_path is not None else Path.cwd()
    known = target.ssh.known_hosts or f"known_hosts/{target.name}"
    known_hosts = resolve_path(known, base)
    key = resolve_path(target.ssh.key, base) if target.ssh.key else None
    names = [h.name for h in target.hosts]
    for name in only or []:
        if name not in names:
            raise ConfigError.single(target_path, None, "hosts", f"no host {name!r} (known: {', '.join(names)})")
    plans = []
    for host in target.hosts:
        if only and host.name not in only:
            continue
        endpoint = Endpoint(
            name=host.name,
            address=host.address,
            port=host.port,
            user=host.user or target.ssh.user,
            key_path=key,
            known_hosts=known_hosts,
            connect_timeout_s=target.ssh.connect_timeout_s,
        )
        plans.append(HostPlan(host, endpoint, host.install_dir or target.install_dir, base))
    return plans
