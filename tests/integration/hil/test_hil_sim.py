"""`edgeds hil run` on the simulated rig, through the CLI as `make test` runs it (~40 s in all)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeds.hil.report import PLOTS
from edgeds.hil.runner import DEFAULT_LEASE_DIR
from edgeds.sim.broker import mosquitto_binary
from edgeds.sim.devices import SSHD

pytestmark = pytest.mark.integration

if not SSHD.exists() or mosquitto_binary() is None:  # pragma: no cover - CI installs them (make system-deps)
    pytest.skip("openssh-server and mosquitto are needed for the sim rig", allow_module_level=True)


def _hil(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edgeds", "hil", "run", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_sim_rig_passes_and_a_second_run_is_refused(tmp_path: Path) -> None:
    lease = DEFAULT_LEASE_DIR / "sim.lease"
    first = _hil("--rig", "sim", "--out", str(tmp_path / "a"), "--perf-seconds", "1")
    deadline = time.monotonic() + 30
    while not lease.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads(lease.read_text())["pid"] == first.pid
    second = _hil("--rig", "sim", "--out", str(tmp_path / "b"), "--suite", "conformance")
    _, err2 = second.communicate(timeout=60)
    assert second.returncode == 2 and "leased" in err2, err2  # refused, never on the same devices
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-3000:] + out[-3000:]
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["passed"] and not report["failed"]
    names = {(c["name"], c["device"]) for c in report["checks"]}
    for device in ("sim-1", "sim-2"):
        for check in ("deploy", "golden_outputs", "min_fps", "max_p99_ms", "max_model_load_s", "rollback"):
            assert (check, device) in names, (check, device)
    passed = {c["name"] for c in report["checks"] if c["passed"]}
    assert {"network_cut", "agent_restart", "telemetry_seqs_complete"} <= passed
    assert report["telemetry"]["messages"] > 0
    for name in PLOTS:
        path = tmp_path / "a" / name
        assert path.stat().st_size > 10_000
        with Image.open(path) as image:
            image.load()
            assert len(np.unique(np.asarray(image.convert("L")))) > 10
    assert not lease.exists()


def test_impossible_expectation_fails_the_run(tmp_path: Path) -> None:
    rig = tmp_path / "impossible.yaml"
    rig.write_text(
        "schema: 1\nname: impossible\nsim: {devices: 1}\ndevice_class: c\n"
        "expectations:\n  c: {min_fps: 1.0e9, max_p99_ms: 5000}\n"
    )
    proc = _hil("--rig", str(rig), "--suite", "perf", "--perf-seconds", "0.5", "--out", str(tmp_path / "r"))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-3000:]
    data = json.loads(out)
    assert data["failed"] == ["sim-1: min_fps"]
    check = next(c for c in data["checks"] if c["name"] == "min_fps")
    assert check["bound"] == ">= 1e+09" and 0 < check["measured"] < 1e9
    md = (tmp_path / "r" / "report.md").read_text()
    assert f"| min_fps | sim-1 | >= 1e+09 | {check['measured']} | FAIL |" in md


def test_sim_up_and_down(tmp_path: Path) -> None:
    from edgeds.sim.broker import port_open

    state = tmp_path / "state.json"
    up = subprocess.run(
        [sys.executable, "-m", "edgeds", "hil", "sim", "up", "-n", "2", "--state", str(state), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    data = json.loads(up.stdout)
    try:
        assert json.loads(state.read_text()) == data and Path(data["target"]).exists()
        assert all(port_open(d["address"], d["port"]) for d in data["devices"])  # they outlive `up`
        port = int(data["broker"]["url"].rsplit(":", 1)[1])
        assert port_open("127.0.0.1", port)
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "edgeds", "hil", "sim", "down", "--state", str(state), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    assert not state.exists() and not Path(data["base_dir"]).exists()
    assert not any(port_open(d["address"], d["port"]) for d in data["devices"])
    assert not port_open("127.0.0.1", port)
