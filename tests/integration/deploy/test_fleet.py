"""Operations over a target's hosts (device commands, probe) on a sim device."""

from __future__ import annotations

import platform

import pytest

from edgeds.deploy.fleet import each_host, probe_hosts
from edgeds.errors import ConfigError

from .conftest import Rig

pytestmark = pytest.mark.integration


def test_each_host_and_probe_report_per_host(rig: Rig) -> None:
    target, name = str(rig.target_path), rig.plans[0].host.name
    status = each_host(target, None, "status")
    assert list(status) == [name] and status[name].get("status") != "error", status
    probes = probe_hosts(target, [name])
    assert probes[name]["arch"] == platform.machine() and "onnxruntime" in probes[name]["backends"]
    with pytest.raises(ConfigError, match="no host 'nope'"):
        each_host(target, ["nope"], "status")

    rig.fleet.known_hosts.write_text("")  # an unpinned host key: that host fails, reported, not raised
    failed = each_host(target, None, "status")
    assert failed[name]["status"] == "error" and "not pinned" in failed[name]["error"]
