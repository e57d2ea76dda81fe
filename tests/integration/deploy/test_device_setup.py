"""The real `edgeds device setup` path once: wheel built here, venv on the device, offline wheelhouse.

The wheelhouse (edgeds' dependencies as wheels) is downloaded once from the package index into
``.cache/wheelhouse-cpXY`` (like ``make venv`` does) and reused; the device then installs with
``pip --no-index``. Skipped when the index is unreachable.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeds.bundle import Bundle
from edgeds.cli import app
from edgeds.deploy.device.protocol import SUCCEEDED
from edgeds.deploy.host import deploy_host
from edgeds.deploy.setup import build_wheel
from edgeds.deploy.targets import host_plans, resolve_target
from edgeds.sim.bundles import make_bundle
from edgeds.sim.devices import SimFleet

from .conftest import Keys

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    house = REPO / ".cache" / f"wheelhouse-cp{sys.version_info.major}{sys.version_info.minor}"
    stamp = house / ".complete"
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:  # rebuilt when the dependencies may have changed
        return house
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    house.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--dest",
            str(house),
            str(wheel),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot build the wheelhouse (package index unreachable?): {proc.stderr[-300:]}")
    for old in house.glob("edgeds-*.whl"):
        old.unlink()  # the device gets the freshly built edgeds wheel, not a cached one
    stamp.write_text(key)
    return house


def test_device_setup_installs_venv_offline_and_is_idempotent(keys: Keys, wheelhouse: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    with SimFleet(1) as fleet:
        args = [
            "device",
            "setup",
            "--target",
            str(fleet.target_path),
            "--public-key",
            str(keys.public),
            "--wheelhouse",
            str(wheelhouse),
            "--json",
        ]
        started = time.monotonic()
        first = runner.invoke(app, args)
        first_s = time.monotonic() - started
        assert first.exit_code == 0, first.stdout + first.stderr
        result = json.loads(first.stdout)[0]
        assert result["ok"] and "offline wheelhouse" in result["environment"]
        assert result["probe"]["arch"] and result["probe"]["python"].startswith("3.")
        assert result["probe"]["backends"]["tensorrt"] is False
        device = fleet.devices[0]
        wrapper = (device.install_dir / "bin" / "python").read_text()
        assert str(device.install_dir / "venv" / "bin" / "python") in wrapper
        pid = device.agent_pid()
        assert pid is not None
        # the installed wheel (not this checkout) carries the shipped profiles and targets
        shipped = subprocess.run(
            [
                str(device.install_dir / "venv" / "bin" / "python"),
                "-c",
                "import edgeds; print(edgeds.list_profiles()['x86-cpu']); print(edgeds.list_targets()['local'])",
            ],
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shipped.returncode == 0, shipped.stderr
        assert all("site-packages/edgeds/data/" in line for line in shipped.stdout.splitlines()), shipped.stdout

        started = time.monotonic()
        second = runner.invoke(app, args)
        second_s = time.monotonic() - started
        assert second.exit_code == 0, second.stdout + second.stderr
        assert device.agent_pid() == pid, "setup again must leave the running agent alone"
        print(f"\ndevice setup (venv + offline wheelhouse): first {first_s:.1f} s, again {second_s:.1f} s")

        target, path = resolve_target(str(fleet.target_path))
        with Bundle.open(make_bundle(tmp_path / "b", 5, keys.private), verify=False) as bundle:
            deployed = deploy_host(host_plans(target, path)[0], bundle)
        assert deployed.status == SUCCEEDED, deployed
        assert deployed.details["health"]["mode"] == "agent"
