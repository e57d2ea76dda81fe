"""Deploy one bundle to a target's devices: the public entry of the deploy package.

:func:`deploy_bundle` resolves the target, opens the bundle once (unless given an opened one) and
hands that one :class:`~edgeds.bundle.Bundle` down to the rollout, the hosts and the SSH uploads;
nothing below reopens the path. It never raises for a device or network failure: every host's
outcome is in the returned :class:`~edgeds.deploy.rollout.RolloutResult`.

The ``local`` target (this machine) goes through the same rollout over the local transport; its
install dir is readied and its agent started first when it does not run
(:func:`~edgeds.deploy.local_agent.prepare_local`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..bundle import Bundle
from ..config import RolloutPolicy
from ..errors import ConfigError
from .device import protocol as dev
from .host import HostResult, Progress, _no_progress
from .local_agent import prepare_local
from .options import DeployOptions
from .rollout import RolloutResult, rollout
from .targets import host_plans, resolve_target


def deploy_bundle(
    bundle: Bundle | str | Path,
    target: str | Path,
    *,
    hosts: Sequence[str] | None = None,
    options: DeployOptions | None = None,
    policy: RolloutPolicy | None = None,
    progress: Progress = _no_progress,
    public_key: bytes | None = None,
) -> RolloutResult:
    """Roll ``bundle`` out to ``target`` (a target name or YAML path) by its rollout policy.

    ``bundle``: an opened :class:`Bundle` (the caller keeps ownership and closes it) or a path to
    a bundle directory or ``.tar`` (opened here and closed before returning; it is verified on
    each device, not here). ``hosts`` limits the rollout to those host names; ``policy``
    replaces the target's rollout policy (canary, batches, failure limit, timeouts). ``progress`` is
    called as ``progress(host, event, data)`` from the rollout's threads. ``public_key`` (PEM
    bytes; local target only) is trusted as the bundle publisher on this machine first; a remote
    device trusts keys through ``edgeds device setup``.

    A bundle that cannot even be opened (unsafe tar member, malformed manifest or card, missing
    file) is REJECTED for every host before any host is contacted. Raises :class:`ConfigError` /
    :class:`NotFoundError` for a bad target or host name, and :class:`DeployError` for a local
    target that trusts no key yet and is given none.
    """
    loaded, path = resolve_target(target)
    plans = host_plans(loaded, path, list(hosts) if hosts else None)
    if public_key is not None and not loaded.local:
        raise ConfigError.single(
            path, None, "public_key", "a remote device trusts keys through `edgeds device setup --public-key`"
        )
    if loaded.local:
        (plan,) = plans
        progress(plan.host.name, "preparing", {})
        ready = prepare_local(loaded, plan, python=sys.executable, public_key=public_key)
        if not ready.ok:
            failed = HostResult(plan.host.name, dev.FAILED_NO_STATE_CHANGE, reason="setup", message=ready.message)
            progress(plan.host.name, "done", {"status": failed.status})
            return RolloutResult(hosts=[failed], aborted=True, abort_reason=f"local setup failed: {ready.message}")
    return rollout(plans, bundle, policy or loaded.rollout, options=options or DeployOptions(), progress=progress)
