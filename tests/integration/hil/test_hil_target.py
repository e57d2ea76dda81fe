"""`hil run` on a rig that names a TARGET (the real-device path), driven against sshd devices.

The devices are a :class:`SimFleet` set up beforehand the way real devices are
(``setup_host``: agent installed, publisher key trusted), and the rig only knows their target
YAML, so everything goes over SSH as on a real rig: the device lease is a file written on the
device, agent status is the device's status step, the agent is killed with ``kill -9`` over SSH
and reached through an SSH port forward (it binds the device's loopback), the rollback goes to
the device's previous release and forward again, and the power cycle is the rig's hook.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edgeds.bundle import generate_keypair
from edgeds.config import Target
from edgeds.deploy.api import deploy_bundle
from edgeds.deploy.host import open_session
from edgeds.deploy.setup import setup_host
from edgeds.deploy.targets import HostPlan, host_plans, resolve_target
from edgeds.errors import HilError
from edgeds.hil import lease
from edgeds.hil.rig import load_rig
from edgeds.hil.runner import run_rig
from edgeds.sim.broker import Mosquitto, free_port, mosquitto_binary
from edgeds.sim.bundles import make_bundle
from edgeds.sim.devices import SSHD, SimFleet

pytestmark = pytest.mark.integration

if not SSHD.exists() or mosquitto_binary() is None:  # pragma: no cover - CI installs them (make system-deps)
    pytest.skip("openssh-server and mosquitto are needed", allow_module_level=True)


@dataclass
class Devices:
    fleet: SimFleet
    target: Target
    target_path: Path
    plans: list[HostPlan]
    private_key: Path
    work: Path


@pytest.fixture(scope="module")
def devices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devices]:
    """One device whose agent binds its loopback on a free port (so the rig needs a forward)."""
    work = tmp_path_factory.mktemp("hil-target")
    private, public = generate_keypair(work / "keys")
    with Mosquitto() as broker, SimFleet(1, mqtt_url=broker.url) as fleet:
        hosts = [{k: v for k, v in d.host_entry().items() if k != "agent_host"} for d in fleet.devices]
        path = fleet.write_target(
            hosts=hosts,
            agent={"http_host": "127.0.0.1", "http_port": free_port()},
            mqtt={"url": broker.url, "protocol": "3.1.1", "telemetry_interval_s": 0.5},
        )
        target, resolved = resolve_target(str(path))
        assert resolved is not None
        plans = host_plans(target, resolved)
        python = str(fleet.device_python())
        for plan in plans:
            done = setup_host(target, plan, wheel=None, public_key=public.read_bytes(), python=python)
            assert done.ok, done.message
        first = make_bundle(work / "bundle-1", 1, private)
        assert deploy_bundle(first, resolved).succeeded  # the release in production
        yield Devices(fleet, target, resolved, plans, private, work)


def _rig(devices: Devices, tmp_path: Path, **extra: object) -> Path:
    doc = {
        "schema": 1,
        "name": f"line-{tmp_path.name}"[:60],
        "target": str(devices.target_path),
        "device_class": "box",
        "expectations": {"box": {"min_fps": 5, "max_p99_ms": 5000, "max_model_load_s": 60}},
        # "power cycle": note the call, then kill the agent as a reboot would (its supervisor restarts it)
        "hooks": {
            "power_cycle": f"echo {{host}} {{address}} >> {tmp_path / 'power.log'}; "
            f"kill -9 $(cat {devices.fleet.devices[0].install_dir / 'run' / 'agent.pid'})"
        },
        **extra,
    }
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_port_forward_reaches_an_agent_on_the_device_loopback(devices: Devices) -> None:
    session = open_session(devices.plans[0])
    try:
        with session.conn.forward("127.0.0.1", devices.target.agent.http_port) as forward:
            url = f"http://127.0.0.1:{forward.port}/v2/health/live"
            for _ in range(3):  # several connections through one forward
                with urllib.request.urlopen(url, timeout=10) as reply:
                    assert reply.status == 200
    finally:
        session.conn.close()


@pytest.mark.slow
def test_target_rig_runs_the_whole_suite_over_ssh(devices: Devices, tmp_path: Path) -> None:
    rig = load_rig(_rig(devices, tmp_path))
    gated = make_bundle(tmp_path / "bundle-2", 2, devices.private_key)
    result = run_rig(rig, bundle=gated, work=tmp_path / "work", lease_dir=tmp_path / "leases", perf_seconds=0.5)
    checks = {(c.name, c.device): c for c in result.checks}
    failed = [(c.name, c.device, c.measured) for c in result.checks if c.passed is False]
    assert result.passed, failed
    device = devices.fleet.devices[0].name
    for name in ("setup", "deploy", "golden_outputs", "min_fps", "agent_restart", "rollback", "power_cycle"):
        assert checks[(name, device)].passed, name
    assert checks[("rollback", device)].measured["rolled_back_to"].startswith("tiny-v1-")
    assert (tmp_path / "power.log").read_text().split() == [device, devices.fleet.devices[0].address]
    before, after = checks[("power_cycle", device)].measured["agent_pid"]
    assert before != after  # the check waited for a new agent, not just a reachable device
    assert checks[("network_cut", device)].passed is None  # no hooks on this rig: skipped, not faked
    assert ("telemetry_seqs_complete", device) in checks
    status = json.loads((devices.fleet.devices[0].install_dir / "run" / "agent.json").read_text())
    assert status["release"] == result.devices[device]["release"]  # left on the gated release
    assert not (devices.fleet.devices[0].install_dir / "hil.lease").exists()


def test_a_device_leased_by_another_run_is_refused(devices: Devices, tmp_path: Path) -> None:
    session = open_session(devices.plans[0])
    try:
        files = lease.SshFiles(session.conn, devices.plans[0].host.name)
        path = f"{session.install_dir}/hil.lease"
        held = lease.acquire(path, "other-rig@elsewhere", ttl_s=600, files=files)
        try:
            rig = load_rig(_rig(devices, tmp_path))
            with pytest.raises(HilError, match="leased by other-rig@elsewhere"):
                run_rig(
                    rig,
                    ["conformance"],
                    bundle=make_bundle(tmp_path / "b", 3, devices.private_key),
                    work=tmp_path / "work",
                    lease_dir=tmp_path / "leases",
                )
            before = json.loads((devices.fleet.devices[0].install_dir / "run" / "agent.json").read_text())
            assert "-v3-" not in str(before.get("release"))  # nothing was deployed
        finally:
            held.release()
        assert lease.read(path, files) is None
    finally:
        session.conn.close()


def test_ssh_lease_expires_and_is_taken_over(devices: Devices) -> None:
    session = open_session(devices.plans[0])
    try:
        files = lease.SshFiles(session.conn, "dev")
        path = f"{session.install_dir}/leases-test/x.lease"
        assert abs(files.now() - time.time()) < 5  # the device's clock (same machine here)
        stale = lease.acquire(path, "crashed-run", ttl_s=3.0, files=files)
        with pytest.raises(HilError, match="leased by crashed-run"):
            lease.acquire(path, "run-b", ttl_s=60, files=files)
        time.sleep(3.2)
        taken = lease.acquire(path, "run-b", ttl_s=60, files=files)
        stale.release()  # not ours any more: left alone
        assert (lease.read(path, files) or {}).get("owner") == "run-b"
        taken.release()
        assert lease.read(path, files) is None
    finally:
        session.conn.close()
