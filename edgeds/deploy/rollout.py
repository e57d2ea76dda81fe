"""Fleet rollout: canary first, then batches, hosts in parallel, per-host timeouts, abort threshold.

Order: the first ``policy.canary`` hosts, then batches of ``policy.batch`` hosts (a count or a
percentage of the whole fleet, at least 1). Within a wave up to ``policy.parallelism`` hosts
run at once, each in its own thread with its own deadline (``policy.host_timeout_s``): the
host's SSH connection is closed when the deadline passes, so one hung device cannot stall the
rollout (fabric's ThreadingGroup has no such timeout). After each wave, if the failures so far
exceed ``policy.max_failures`` (count or percentage of the fleet) the rollout stops; hosts not
attempted are reported FAILED_NO_STATE_CHANGE with reason ``not_attempted``. Every host of the
fleet appears in the result exactly once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from ..bundle import Bundle
from ..config import RolloutPolicy
from ..errors import BundleError
from .device import protocol as dev
from .host import HostResult, Progress, _no_progress, deploy_host
from .options import DeployOptions
from .targets import HostPlan

HostFn = Callable[[HostPlan, threading.Event], HostResult]


@dataclass
class RolloutResult:
    """Every host's outcome, in fleet order, and whether the rollout was aborted.

    ``model`` and ``version`` name the bundle rolled out (None when it could not be opened).
    """

    hosts: list[HostResult]
    aborted: bool = False
    abort_reason: str = ""
    waves: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    model: str | None = None
    version: int | None = None

    @property
    def succeeded(self) -> bool:
        return not self.aborted and all(h.status == dev.SUCCEEDED for h in self.hosts)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for host in self.hosts:
            out[host.status] = out.get(host.status, 0) + 1
        return out


def _amount(spec: str, total: int, minimum: int) -> int:
    if spec.endswith("%"):
        return max(minimum, math.ceil(total * float(spec[:-1]) / 100.0))
    return max(minimum, int(spec))


def waves(names: Sequence[str], policy: RolloutPolicy) -> list[list[str]]:
    """Split hosts into the canary wave and the batches."""
    names = list(names)
    out: list[list[str]] = []
    canary = min(policy.canary, len(names))
    if canary:
        out.append(names[:canary])
    rest = names[canary:]
    size = _amount(policy.batch, len(names), 1)
    for i in range(0, len(rest), size):
        out.append(rest[i : i + size])
    return out


def failure_limit(policy: RolloutPolicy, total: int) -> int:
    """Failures allowed before aborting (abort when strictly more)."""
    if policy.max_failures.endswith("%"):
        return math.floor(total * float(policy.max_failures[:-1]) / 100.0)
    return int(policy.max_failures)


def run_rollout(
    plans: Sequence[HostPlan], policy: RolloutPolicy, host_fn: HostFn, progress: Progress = _no_progress
) -> RolloutResult:
    """Run ``host_fn`` over the fleet by waves (see the module docstring)."""
    started = time.monotonic()
    by_name = {p.host.name: p for p in plans}
    plan_waves = waves(list(by_name), policy)
    limit = failure_limit(policy, len(plans))
    results: dict[str, HostResult] = {}
    aborted, reason = False, ""
    cancel = threading.Event()
    with ThreadPoolExecutor(
        max_workers=max(1, min(policy.parallelism, len(plans))), thread_name_prefix="edgeds-rollout"
    ) as pool:
        for wave in plan_waves:
            futures = {pool.submit(host_fn, by_name[name], cancel): name for name in wave}
            # host_fn enforces its own deadline; this outer bound only guards against a bug there.
            done, not_done = wait(futures, timeout=policy.host_timeout_s + 60)
            for future in done:
                result = future.result()
                results[result.host] = result
            for future in not_done:
                name = futures[future]
                results[name] = HostResult(
                    name,
                    dev.FAILED_UNABLE_TO_ROLLBACK,
                    reason="timeout",
                    message=f"no answer within {policy.host_timeout_s:.0f}s; state unknown",
                )
            failures = sum(1 for r in results.values() if r.status != dev.SUCCEEDED)
            if failures > limit:
                aborted = True
                reason = f"{failures} failed host(s) > max_failures {policy.max_failures} (limit {limit})"
                cancel.set()
                break
    for name in by_name:
        if name not in results:
            results[name] = HostResult(
                name,
                dev.FAILED_NO_STATE_CHANGE,
                reason="not_attempted",
                message=f"not attempted: rollout aborted ({reason})",
            )
            progress(name, "done", {"status": dev.FAILED_NO_STATE_CHANGE, "not_attempted": True})
    return RolloutResult(
        hosts=[results[name] for name in by_name],
        aborted=aborted,
        abort_reason=reason,
        waves=plan_waves,
        seconds=round(time.monotonic() - started, 3),
    )


def rollout(
    plans: Sequence[HostPlan],
    bundle: Bundle | str | Path,
    policy: RolloutPolicy,
    *,
    options: DeployOptions | None = None,
    progress: Progress = _no_progress,
) -> RolloutResult:
    """Deploy ``bundle`` to the fleet by waves; see :func:`run_rollout`.

    ``bundle``: an opened :class:`Bundle` (the caller owns it and keeps it open until this
    returns) or the path of a bundle directory or ``.tar``, opened here once and closed before
    returning. A bundle that cannot even be opened (unsafe tar member, malformed manifest or
    card, missing file) is REJECTED for every host before any host is contacted.
    """
    if not isinstance(bundle, Bundle):
        try:
            opened = Bundle.open(bundle, verify=False)
        except BundleError as exc:
            return _rejected(plans, exc, progress)
        with opened:
            return rollout(plans, opened, policy, options=options, progress=progress)
    try:
        bundle.objects()
    except BundleError as exc:
        return _rejected(plans, exc, progress)

    def one(plan: HostPlan, cancel: threading.Event) -> HostResult:
        return deploy_host(
            plan, bundle, options=options, progress=progress, timeout=policy.host_timeout_s, cancel=cancel
        )

    result = run_rollout(plans, policy, one, progress)
    result.model, result.version = bundle.name, bundle.version
    return result


def _rejected(plans: Sequence[HostPlan], exc: BundleError, progress: Progress) -> RolloutResult:
    reason = getattr(exc, "reason", "bundle")
    hosts = [HostResult(p.host.name, dev.REJECTED, reason=reason, message=str(exc)) for p in plans]
    for host in hosts:
        progress(host.host, "done", {"status": dev.REJECTED})
    return RolloutResult(hosts=hosts, aborted=True, abort_reason=f"bundle rejected: {exc}")
