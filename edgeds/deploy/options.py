"""What a deploy may be told: the typed options of :func:`edgeds.deploy_bundle` and the device's wire form.

The device's ``plan`` and ``apply`` steps read a JSON request; :meth:`DeployOptions.plan_fields`
and :meth:`DeployOptions.apply_fields` are the only places that know its keys on this side.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DeployOptions:
    """How each host installs and checks a release.

    ``allow_downgrade``: accept a bundle whose version is not newer than the committed one.
    ``health_requests``: requests the on-device health check sends through the agent (golden
    inputs, compared with the golden outputs) before the release is committed.
    ``health_p99_ms``: the p99 latency bound of that check in milliseconds (default: the
    profile's ``latency.p99_ms`` in the bundle, none if it has none).
    ``skip_health``: commit after the agent reloads, without the health check.
    ``reload_timeout_s``: how long the agent may take to serve the new release, in seconds.
    ``device_hooks``: extra keys passed to the device's apply unchanged (fault injection in
    tests, e.g. ``{"crash_after_flip": True}``); empty in normal use.
    """

    allow_downgrade: bool = False
    health_requests: int = 50
    health_p99_ms: float | None = None
    skip_health: bool = False
    reload_timeout_s: float = 120.0
    device_hooks: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.health_requests < 1:
            raise ValueError(f"health_requests must be at least 1, got {self.health_requests}")
        if self.reload_timeout_s <= 0:
            raise ValueError(f"reload_timeout_s must be positive, got {self.reload_timeout_s}")
        taken = sorted(set(self.device_hooks) & {"health", "reload_timeout_s", "skip_health"})
        if taken:
            raise ValueError(f"device_hooks may not set {', '.join(taken)}: use the fields of DeployOptions")

    def plan_fields(self) -> dict[str, Any]:
        """The keys of the device's ``plan`` request that come from these options."""
        return {"allow_downgrade": self.allow_downgrade}

    def apply_fields(self) -> dict[str, Any]:
        """The keys of the device's ``apply`` request that come from these options."""
        health: dict[str, Any] = {"requests": self.health_requests}
        if self.health_p99_ms is not None:
            health["p99_ms"] = self.health_p99_ms
        apply: dict[str, Any] = {
            "health": health,
            "reload_timeout_s": self.reload_timeout_s,
            "skip_health": self.skip_health,
            **self.device_hooks,
        }
        return {"allow_downgrade": self.allow_downgrade, "options": apply}
