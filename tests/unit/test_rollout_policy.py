"""Rollout waves, failure threshold and per-host timeouts (host function = plain callables)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from edgeds.config import HostEntry, RolloutPolicy
from edgeds.deploy.device import protocol as dev
from edgeds.deploy.host import HostResult
from edgeds.deploy.rollout import failure_limit, run_rollout, waves
from edgeds.deploy.ssh import Endpoint
from edgeds.deploy.targets import HostPlan


def _plans(count: int) -> list[HostPlan]:
    return [
        HostPlan(
            HostEntry(name=f"h{i}", address=f"127.0.10.{i}"),
            Endpoint(f"h{i}", f"127.0.10.{i}", 22, "u", None, Path("/nonexistent")),
            "~/edgeds",
        )
        for i in range(1, count + 1)
    ]


def test_waves_canary_then_batches() -> None:
    names = [f"h{i}" for i in range(10)]
    assert waves(names, RolloutPolicy(canary=1, batch="3")) == [["h0"], names[1:4], names[4:7], names[7:10]]
    assert [len(w) for w in waves(names, RolloutPolicy(canary=2, batch="50%"))] == [2, 5, 3]
    assert waves(names, RolloutPolicy(canary=0, batch="100%")) == [names]
    assert failure_limit(RolloutPolicy(max_failures="25%"), 10) == 2
    assert failure_limit(RolloutPolicy(max_failures="1"), 10) == 1


def test_abort_past_threshold_reports_every_host() -> None:
    seen: list[str] = []

    def host_fn(plan: HostPlan, cancel: threading.Event) -> HostResult:
        seen.append(plan.host.name)
        status = dev.REJECTED if plan.host.name in ("h2", "h3") else dev.SUCCEEDED
        return HostResult(plan.host.name, status)

    result = run_rollout(_plans(6), RolloutPolicy(canary=1, batch="2", max_failures="1"), host_fn)
    assert result.aborted
    assert [h.host for h in result.hosts] == [f"h{i}" for i in range(1, 7)]
    assert sorted(seen) == ["h1", "h2", "h3"]
    assert [h.reason for h in result.hosts[3:]] == ["not_attempted"] * 3


def test_parallel_hosts_and_outer_timeout() -> None:
    def host_fn(plan: HostPlan, cancel: threading.Event) -> HostResult:
        time.sleep(0.3)
        return HostResult(plan.host.name, dev.SUCCEEDED)

    started = time.monotonic()
    result = run_rollout(_plans(8), RolloutPolicy(canary=0, batch="100%", parallelism=8), host_fn)
    assert result.succeeded
    assert time.monotonic() - started < 8 * 0.3 / 2  # hosts ran concurrently
