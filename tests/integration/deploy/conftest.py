"""Simulated devices for the deploy tests: real sshd per device, agent running, publisher key trusted.

Each ``rig`` is a fresh :class:`edgeds.sim.devices.SimFleet` set up through the real
``setup_host`` path (probe, environment, trust, service), except that the agent environment is
the shared interpreter of :meth:`SimFleet.device_python` instead of a venv per device (the venv
path is exercised once, in test_device_setup.py).
"""

from __future__ import annotations

import itertools
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeds.bundle import Bundle, generate_keypair
from edgeds.config import Target
from edgeds.deploy.host import HostResult, deploy_host, host_command
from edgeds.deploy.setup import setup_host
from edgeds.deploy.targets import HostPlan, host_plans, resolve_target
from edgeds.sim.broker import Mosquitto, mosquitto_binary
from edgeds.sim.bundles import make_bundle
from edgeds.sim.certs import make_certificates
from edgeds.sim.devices import SSHD, SimDevice, SimFleet

pytestmark = pytest.mark.integration

if not SSHD.exists():  # pragma: no cover - CI installs it with `make system-deps`
    pytest.skip("openssh-server (/usr/sbin/sshd) is not installed", allow_module_level=True)

_versions = itertools.count(10)


@dataclass
class Keys:
    private: Path
    public: Path


@dataclass
class Rig:
    fleet: SimFleet
    target: Target
    target_path: Path
    plans: list[HostPlan]
    keys: Keys
    work: Path
    api_key: str | None = None  # the key callers of the agents must send (secure rigs)
    ca: Path | None = None  # the CA that signed the agents' TLS certificate (secure rigs)

    @property
    def devices(self) -> list[SimDevice]:
        return self.fleet.devices

    def bundle(self, **kwargs: Any) -> Path:
        """A fresh signed bundle with the next (monotonic) version unless ``version`` is given."""
        version = kwargs.pop("version", None) or next(_versions)
        key = kwargs.pop("private_key", self.keys.private)
        out = self.work / f"bundle-{version}-{time.monotonic_ns()}"
        return make_bundle(out, version, key, **kwargs)

    def deploy(self, bundle: Path, index: int = 0, **kwargs: Any) -> HostResult:
        with Bundle.open(bundle, verify=False) as local:
            return deploy_host(self.plans[index], local, **kwargs)

    def status(self, index: int = 0) -> dict[str, Any]:
        return host_command(self.plans[index], "status")

    def current(self, index: int = 0) -> str | None:
        link = self.devices[index].install_dir / "current"
        return Path(link.readlink()).name if link.is_symlink() else None

    def agent(self, index: int = 0) -> dict[str, Any]:
        import json

        return dict(json.loads((self.devices[index].install_dir / "run" / "agent.json").read_text()))

    def wait_agent(
        self, index: int = 0, release: str | None = None, timeout: float = 30.0, not_pid: int | None = None
    ) -> dict[str, Any]:
        """Wait until the device's agent (a pid other than ``not_pid``) is alive and serving ``release``."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            pid = self.devices[index].agent_pid()
            try:
                last = self.agent(index)
            except (OSError, ValueError):
                last = {}
            fresh = pid is not None and pid != not_pid and last.get("pid") == pid
            wanted = release is None or last.get("release") == release
            if fresh and wanted and last.get("state") in ("serving", "idle"):
                return last
            time.sleep(0.1)
        raise AssertionError(f"agent did not serve {release} in {timeout}s: {last}")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    directory = tmp_path_factory.mktemp("keys")
    private, public = generate_keypair(directory)
    return Keys(private, public)


def _make_rig(
    count: int,
    keys: Keys,
    work: Path,
    start_agent: bool = True,
    mqtt_url: str | None = None,
    secure: bool = False,
    **target_overrides: Any,
) -> Iterator[Rig]:
    """``target_overrides`` replace top-level keys of the fleet's target YAML (e.g. ``inspection``).
    ``secure``: the agents ask for an API key and serve HTTPS with a certificate of a fresh CA."""
    api_key = ca = None
    with SimFleet(count, mqtt_url=mqtt_url) as fleet:
        if secure:
            api_key = f"sim-key-{time.monotonic_ns()}"
            (work / "api-keys").write_text(f"# the rig's key\n{api_key}\n")
            certs = make_certificates(work / "tls", [d.address for d in fleet.devices])
            ca = certs.ca
            target_overrides["agent"] = {
                "http_host": "127.0.0.1",
                "http_port": 8000,
                "api_keys_file": str(work / "api-keys"),
                "tls": {"cert": str(certs.cert), "key": str(certs.key)},
            }
        if target_overrides:
            fleet.write_target(**target_overrides)
        target, path = resolve_target(str(fleet.target_path))
        assert path is not None
        plans = host_plans(target, path)
        python = str(fleet.device_python())
        with ThreadPoolExecutor(max_workers=len(plans)) as pool:
            results = list(
                pool.map(
                    lambda plan: setup_host(
                        target,
                        plan,
                        wheel=None,
                        public_key=keys.public.read_bytes(),
                        python=python,
                        start_agent=start_agent,
                    ),
                    plans,
                )
            )
        for result in results:
            assert result.ok, result.message
        for result in results:  # setup read back the user the agent runs as: the device's own
            assert "uid " in result.agent_user or not start_agent, result.agent_user  # not "unknown (...)"
            if fleet.dedicated_users or os.geteuid() != 0:
                assert not result.agent_user.endswith("(uid 0)"), result.agent_user
        yield Rig(fleet, target, path, plans, keys, work, api_key, ca)
        for device in fleet.devices:  # keep the agent log of a failing test visible in -rA output
            log = device.install_dir / "logs" / "agent.log"
            if log.exists():
                shutil.copy(log, work / f"{device.name}-agent.log")


@pytest.fixture
def rig(keys: Keys, tmp_path: Path) -> Iterator[Rig]:
    """One simulated device with its agent running and nothing deployed."""
    yield from _make_rig(1, keys, tmp_path)


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    """A real mosquitto on loopback (skips when it is not installed)."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    with Mosquitto() as running:
        yield running


@pytest.fixture
def telemetry_rig(keys: Keys, tmp_path: Path, broker: Mosquitto) -> Iterator[Rig]:
    """One simulated device whose agent publishes telemetry (and its log lines) to ``broker``."""
    yield from _make_rig(1, keys, tmp_path, mqtt_url=broker.url)


@pytest.fixture
def secure_rig(keys: Keys, tmp_path: Path) -> Iterator[Rig]:
    """One simulated device whose agent asks for an API key and serves HTTPS."""
    yield from _make_rig(1, keys, tmp_path, secure=True)


@pytest.fixture
def rig3(keys: Keys, tmp_path: Path) -> Iterator[Rig]:
    """Three simulated devices with agents running."""
    yield from _make_rig(3, keys, tmp_path)
