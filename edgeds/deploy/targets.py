"""A target's hosts as plans: SSH endpoints with key and pinned known_hosts resolved on this machine,
or, for a ``local: true`` target, the one host ``local`` reached without SSH.

Relative ``ssh.key`` / ``ssh.known_hosts`` (and agent secret) paths are relative to the target file's directory;
``known_hosts`` defaults to ``<target dir>/known_hosts/<target name>``. A local target's install dir
is its ``install_dir`` (``~`` expanded here), or ``$EDGEDS_LOCAL_DIR`` when that is set.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import HostEntry, Target, list_targets, load_target
from ..errors import ConfigError
from .ssh import Endpoint


@dataclass(frozen=True)
class HostPlan:
    """One host of a target: how to reach it and where edgeds lives on it.

    ``local``: the host is this machine (the local transport, no SSH); its ``endpoint`` then only
    names it (address 127.0.0.1, this user) and is never connected to.
    """

    host: HostEntry
    endpoint: Endpoint
    install_dir: str
    target_dir: Path | None = None  # relative paths of the target (agent secrets) start here
    local: bool = False


LOCAL_HOST = "local"  # the one host of a local target
LOCAL_DIR_ENV = "EDGEDS_LOCAL_DIR"  # replaces a local target's install_dir


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
    base = target_path.parent if target_path is not None else Path.cwd()
    if target.local:
        return [_local_plan(target, target_path, base, only)]
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


def _this_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name, no passwd entry (some containers)
        return str(os.getuid())


def _local_plan(target: Target, target_path: Path | None, base: Path, only: list[str] | None) -> HostPlan:
    for name in only or []:
        if name != LOCAL_HOST:
            raise ConfigError.single(
                target_path, None, "hosts", f"no host {name!r}: a local target has one host, {LOCAL_HOST!r}"
            )
    host = HostEntry(name=LOCAL_HOST, address="127.0.0.1")
    endpoint = Endpoint(LOCAL_HOST, "127.0.0.1", 22, _this_user(), None, Path(os.devnull))
    install_dir = os.path.expanduser(os.environ.get(LOCAL_DIR_ENV) or target.install_dir)
    return HostPlan(host, endpoint, str(Path(install_dir).absolute()), base, local=True)
