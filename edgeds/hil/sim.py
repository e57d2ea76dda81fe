"""``edgeds hil sim up|down``: a simulated rig that outlives the command (for laptops and manual runs).

``up`` starts N sshd devices (:class:`edgeds.sim.devices.SimFleet`, all logging in as the current
user) and a persistent mosquitto, each in its own session so they survive the command, writes the
fleet's target YAML (with the broker as its ``mqtt.url``) and a state file (JSON: base dir, target,
broker pid/url, device sshd pids). ``down`` reads the state file, stops the agents the devices may
run (``edgeds device setup`` against the target), sshd and mosquitto, and removes the files.
``edgeds hil run --rig sim`` does not need this: it builds and removes its own rig per run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ..errors import HilError

DEFAULT_STATE = Path(tempfile.gettempdir()) / "edgeds-hil-sim" / "state.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sim_up(devices: int = 2, state: Path = DEFAULT_STATE) -> dict[str, Any]:
    """Start the rig and write ``state``; HilError when a rig from ``state`` is still up."""
    from ..sim.broker import Mosquitto, mosquitto_binary, port_open
    from ..sim.devices import SimFleet

    if state.exists():
        raise HilError(f"a simulated rig is already up ({state}); run `edgeds hil sim down` first")
    binary = mosquitto_binary()
    if binary is None:
        raise HilError("mosquitto is not installed (make system-deps)")
    base = Path(tempfile.mkdtemp(prefix="edgeds-hil-sim-"))
    base.chmod(0o755)
    broker = Mosquitto(persistence=True, directory=base / "broker")  # writes the config; started below
    proc = subprocess.Popen(
        [binary, "-c", str(broker.config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open(broker.host, broker.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    fleet = SimFleet(devices, base / "fleet", mqtt_url=broker.url, dedicated_users=False, keep=True)
    try:
        fleet.start()
    except BaseException:
        fleet.close()
        proc.kill()
        shutil.rmtree(base, ignore_errors=True)
        raise
    target = fleet.write_target(mqtt={"url": broker.url, "protocol": "3.1.1", "telemetry_interval_s": 1.0})
    data: dict[str, Any] = {
        "base_dir": str(base),
        "target": str(target),
        "broker": {"pid": proc.pid, "url": broker.url},
        "devices": [
            {
                "name": d.name,
                "address": d.address,
                "port": d.port,
                "install_dir": str(d.install_dir),
                "sshd_pid": int((d.sim_dir / "sshd.pid").read_text().split()[0])
                if (d.sim_dir / "sshd.pid").exists()
                else None,
            }
            for d in fleet.devices
        ],
    }
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(data, indent=2))
    return data


def sim_down(state: Path = DEFAULT_STATE) -> dict[str, Any]:
    """Stop everything ``state`` names and remove its files; returns what was stopped."""
    try:
        data = json.loads(state.read_text())
    except FileNotFoundError as exc:
        raise HilError(f"no simulated rig is up ({state} does not exist)") from exc
    stopped: list[int] = []
    pids: list[int] = []
    for device in data.get("devices", []):
        run = Path(device["install_dir"]) / "run"
        with contextlib.suppress(OSError):
            if run.is_dir():
                (run / "supervisor.stop").touch()
        for name in ("supervisor.pid", "agent.pid"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.append(int((run / name).read_text().split()[0]))
        if device.get("sshd_pid"):
            pids.append(int(device["sshd_pid"]))
    pids.append(int(data["broker"]["pid"]))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
            stopped.append(pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_pid_alive(p) for p in stopped):
        time.sleep(0.05)
    for pid in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if _pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(data["base_dir"], ignore_errors=True)
    state.unlink()
    return {"stopped_pids": stopped, "base_dir": data["base_dir"]}
