"""Deploy one bundle to a target's devices: the public entry of the deploy package.

:func:`deploy_bundle` resolves the target, opens the bundle once (unless given an opened one) and
hands that one :class:`~edgeds.bundle.Bundle` down to the rollout, the hosts and the SSH uploads;
nothing below reopens the path. It never raises for a device or network failure: every host's
outcome is in the returned :class:`~edgeds.deploy.rollout.RolloutResult`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..bundle import Bundle
from ..config import RolloutPolicy
from .host import Progress, _no_progress
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
) -> RolloutResult:
    """Roll ``bundle`` out to ``target`` (a target name or YAML path) by its rollout policy.

    ``bundle``: an opened :class:`Bundle` (the caller keeps ownership and closes it) or a path to
    a bundle directory or ``.tar`` (opened here and closed before returning; it is verified on
    each device, not here). ``hosts`` limits the rollout to those host names; ``policy``
    replaces the target's rollout policy (canary, batches, failure limit, timeouts). ``progress`` is
    called as ``progress(host, event, data)`` from the rollout's threads.

    A bundle that cannot even be opened (unsafe tar member, malformed manifest or card, missing
    file) is REJECTED for every host before any host is contacted. Raises :class:`ConfigError` /
    :class:`NotFoundError` for a bad target or host name.
    """
    loaded, path = resolve_target(target)
    plans = host_plans(loaded, path, list(hosts) if hosts else None)
    return rollout(plans, bundle, policy or loaded.rollout, options=options or DeployOptions(), progress=progress)
