"""Operations over a target's hosts (device commands, probe) and host-key enrollment, on a sim device."""

from __future__ import annotations

import platform

import pytest

from edgeds.deploy.enroll import enroll_hosts
from edgeds.deploy.fleet import each_host, probe_hosts
from edgeds.deploy.ssh import HostKey
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


def test_enroll_pins_only_what_is_confirmed(rig: Rig) -> None:
    target, name = str(rig.target_path), rig.plans[0].host.name
    known_hosts = rig.fleet.known_hosts
    pinned = known_hosts.read_text()
    known_hosts.write_text("")
    asked: list[tuple[str, str]] = []

    def decline(host: str, key: HostKey) -> bool:
        asked.append((host, key.fingerprint))
        return False

    skipped = enroll_hosts(target, confirm=decline)
    assert [e.result for e in skipped] == ["skipped"] and asked == [(name, skipped[0].fingerprint)]
    assert skipped[0].as_dict() == {"host": name, "fingerprint": skipped[0].fingerprint, "result": "skipped"}
    assert known_hosts.read_text() == ""

    enrolled = enroll_hosts(target, confirm=lambda host, key: True)
    assert enrolled[0].result == "pinned" and enrolled[0].known_hosts == known_hosts
    assert known_hosts.read_text().split() == pinned.split()

    def never(host: str, key: HostKey) -> bool:
        raise AssertionError("a pinned key needs no confirmation")

    assert [e.result for e in enroll_hosts(target, confirm=never)] == ["already pinned"]
