"""Fan-out over a target's hosts refuses targets without SSH hosts before touching anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from edgeds.deploy.enroll import enroll_hosts
from edgeds.deploy.fleet import each_host, probe_hosts, setup_hosts
from edgeds.errors import ConfigError


@pytest.mark.parametrize(
    "call",
    [
        lambda: each_host("local", None, "status"),
        lambda: probe_hosts("local"),
        lambda: setup_hosts("local", python="python3"),
        lambda: enroll_hosts("local"),
    ],
    ids=["each_host", "probe_hosts", "setup_hosts", "enroll_hosts"],
)
def test_the_local_target_has_no_hosts(call: Callable[[], Any]) -> None:
    with pytest.raises(ConfigError, match="no hosts to reach over SSH"):
        call()
