"""Enroll a target's hosts: pin each device's SSH host key in the target's known_hosts.

Trust on first use, after the caller confirms: a host whose key is not pinned yet is shown to
``confirm`` (None = pin without asking); a host presenting a key that differs from the pinned one
of the same type raises :class:`~edgeds.errors.HostKeyError` and nothing is replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfigError, HostKeyError
from .ssh import HostKey, fetch_host_key, pin_host_key, pinned_keys
from .targets import host_plans, resolve_target

Confirm = Callable[[str, HostKey], bool]
"""``confirm(host_name, key)``: True to pin ``key``, False to skip the host."""


@dataclass(frozen=True)
class Enrollment:
    """What happened to one host's key. ``address``, ``key_type`` and ``known_hosts`` are unset
    (None) for a skipped host."""

    host: str
    fingerprint: str
    result: Literal["pinned", "already pinned", "skipped"]
    address: str | None = None
    key_type: str | None = None
    known_hosts: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: host, fingerprint and result; with address, key type and known_hosts
        unless skipped."""
        if self.result == "skipped":
            return {"host": self.host, "fingerprint": self.fingerprint, "result": self.result}
        return {
            "host": self.host,
            "address": self.address,
            "key_type": self.key_type,
            "fingerprint": self.fingerprint,
            "result": self.result,
            "known_hosts": str(self.known_hosts),
        }


def enroll_hosts(
    target: str | Path, hosts: list[str] | None = None, confirm: Confirm | None = None
) -> list[Enrollment]:
    """Fetch, check and pin the host key of every (or each ``hosts``-named) host, in target order.

    A key already pinned is reported ``already pinned``; an unpinned key is pinned when
    ``confirm`` is None or returns True, else ``skipped``. Raises :class:`HostKeyError` on the
    first host whose key changed (hosts before it stay enrolled) and
    :class:`~edgeds.errors.DeployError` when a host cannot be reached.
    """
    loaded, path = resolve_target(target)
    if loaded.local:
        raise ConfigError.single(path, None, "local", "the local target is reached without SSH: nothing to enroll")
    out: list[Enrollment] = []
    for plan in host_plans(loaded, path, hosts or None):
        endpoint = plan.endpoint
        key = fetch_host_key(endpoint.address, endpoint.port, endpoint.connect_timeout_s)
        pinned = [k for k in pinned_keys(endpoint.known_hosts, key.host_id) if k.key_type == key.key_type]
        if pinned and pinned[0].base64 != key.base64:
            raise HostKeyError(
                f"{plan.host.name} ({key.host_id}): HOST KEY CHANGED! presents {key.fingerprint}, "
                f"{endpoint.known_hosts} pins {pinned[0].fingerprint}. Possible man-in-the-middle: refusing."
            )
        if not pinned and confirm is not None and not confirm(plan.host.name, key):
            out.append(Enrollment(plan.host.name, key.fingerprint, "skipped"))
            continue
        added = pin_host_key(endpoint.known_hosts, key)
        out.append(
            Enrollment(
                plan.host.name,
                key.fingerprint,
                "pinned" if added else "already pinned",
                address=key.host_id,
                key_type=key.key_type,
                known_hosts=endpoint.known_hosts,
            )
        )
    return out
