"""The HIL rig schema, leases and report (no devices: fast)."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeds.errors import ConfigError, HilError
from edgeds.hil import lease
from edgeds.hil.report import PLOTS, write_report
from edgeds.hil.rig import load_rig
from edgeds.hil.runner import RunResult


def test_shipped_rigs_load() -> None:
    sim = load_rig("sim")
    assert sim.sim is not None and sim.sim.devices == 2 and sim.expectation().min_fps is not None
    orin = load_rig("orin-line3")
    assert orin.target == "jetson-orin" and orin.hooks.power_cycle and orin.expectation().max_temperature_c == 85


def test_bad_rig_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("schema: 1\nname: bad\nsim: {devices: 2}\nexpectations:\n  x:\n    min_fsp: 3\n")
    with pytest.raises(ConfigError) as info:
        load_rig(path)
    assert f"{path.name}:6" in str(info.value) and "min_fsp" in str(info.value)


def test_rig_needs_exactly_one_kind(tmp_path: Path) -> None:
    path = tmp_path / "both.yaml"
    path.write_text("schema: 1\nname: both\ntarget: local\nsim: {devices: 1}\n")
    with pytest.raises(ConfigError, match="exactly one"):
        load_rig(path)
    with pytest.raises(HilError, match="no rig"):
        load_rig("no-such-rig")


def test_lease_refuses_then_expires(tmp_path: Path) -> None:
    path = tmp_path / "dev" / "hil.lease"
    first = lease.acquire(path, "run-a", ttl_s=0.5)
    with pytest.raises(HilError, match="run-a"):
        lease.acquire(path, "run-b", ttl_s=10)
    time.sleep(0.6)  # stale now
    second = lease.acquire(path, "run-b", ttl_s=10)
    assert json.loads(path.read_text())["owner"] == "run-b"
    first.release()  # not ours any more: left alone
    assert path.exists()
    second.release()
    assert not path.exists()


def test_lease_waits_for_release(tmp_path: Path) -> None:
    path = tmp_path / "hil.lease"
    held = lease.acquire(path, "run-a", ttl_s=60)
    threading.Timer(0.3, held.release).start()
    started = time.monotonic()
    got = lease.acquire(path, "run-b", ttl_s=60, wait_s=5)
    assert 0.2 < time.monotonic() - started < 5 and got.owner == "run-b"


def test_racing_runs_never_share_a_device(tmp_path: Path) -> None:
    paths = [tmp_path / f"dev{i}" / "hil.lease" for i in range(3)]
    lease.acquire(paths[2], "other", ttl_s=60)  # one device busy: nobody gets a partial set
    with pytest.raises(HilError):
        lease.acquire_all(paths, "run-a", ttl_s=60)
    assert not paths[0].exists() and not paths[1].exists()
    paths[2].unlink()
    winners: list[str] = []
    errors: list[str] = []

    def race(owner: str) -> None:
        try:
            lease.acquire_all(paths, owner, ttl_s=60)
            winners.append(owner)
        except HilError:
            errors.append(owner)

    threads = [threading.Thread(target=race, args=(f"run-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(errors) == 7
    assert {json.loads(p.read_text())["owner"] for p in paths} == set(winners)
    assert os.getpid() == json.loads(paths[0].read_text())["pid"]


def test_report_names_failed_expectation_and_plots_decode(tmp_path: Path) -> None:
    result = RunResult("r", ["perf"], time.time(), seconds=1.0)
    result.devices = {"d1": {"perf": {"samples_per_s": 42.0, "p99_ms": 3.0}}}
    result.latencies_ms = {"d1": [1.0 + i / 100 for i in range(200)]}
    result.throughput = {"d1": [(i * 0.25, 40.0 + i) for i in range(8)]}
    result.temperature = {"d1": [(float(i), 50.0 + i) for i in range(5)]}
    result.add("min_fps", "d1", ">= 1e+09", 42.0, False)
    result.add("max_p99_ms", "d1", "<= 100 ms", 3.0, True)
    files = write_report(result, tmp_path)
    data = json.loads(files["json"].read_text())
    assert data["passed"] is False and data["failed"] == ["d1: min_fps"]
    assert "| min_fps | d1 | >= 1e+09 | 42.0 | FAIL |" in files["markdown"].read_text()
    for name in PLOTS:
        path = tmp_path / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            image.load()
            assert image.size[0] >= 600 and len(np.unique(np.asarray(image.convert("L")))) > 10


def test_lease_of_a_dead_process_is_stale(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "hil.lease"
    code = f"from edgeds.hil import lease; from pathlib import Path; lease.acquire(Path({str(path)!r}), 'x', 600)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert json.loads(path.read_text())["owner"] == "x"  # left behind by a run that died
    assert lease.acquire(path, "y", ttl_s=60).owner == "y"


def test_hook_placeholders_are_shell_quoted_and_other_braces_left_alone(tmp_path: Path) -> None:
    from edgeds.config import HostEntry
    from edgeds.deploy.ssh import Endpoint
    from edgeds.deploy.targets import HostPlan
    from edgeds.hil.devices import Faults, RigDevice

    endpoint = Endpoint("box; rm -rf /", "192.0.2.7", 22, "edgeds", None, tmp_path / "known_hosts")
    plan = HostPlan(HostEntry(name="box-1", address="192.0.2.7"), endpoint, "/opt/edgeds")
    device = RigDevice(plan, "127.0.0.1", 8000)
    device.name = "box; rm -rf /"
    line = Faults._command("relay {host} ${PORT:-1} {address} | awk '{print $1}'", device)
    assert line == "relay 'box; rm -rf /' ${PORT:-1} 192.0.2.7 | awk '{print $1}'"
