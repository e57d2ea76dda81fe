"""``edgeds device setup``: probe a device, install the agent environment and its service.

Steps per host, each idempotent:

1. **probe** (before anything is installed): the device's own ``python3`` runs
   :mod:`edgeds.deploy.device.probe`'s source from stdin -> arch, OS, Python, disk, memory, which
   backends import, GPU / TensorRT / JetPack fingerprint.
2. **environment**: ``<install_dir>/bin/python`` is the interpreter every device step uses.
   Default: a venv at ``<install_dir>/venv`` with an edgeds wheel built here (``pip wheel``),
   installed from the package index or, with ``wheelhouse``, offline (``--no-index``) from a
   directory of wheels uploaded with it. Sim rigs pass ``python=`` an interpreter that already
   has edgeds and its backends (:meth:`edgeds.sim.devices.SimFleet.device_python`): the wrapper
   then points at it and nothing is installed - documented, and only meant for rigs that share
   this machine's packages.
3. **trust**: the bundle publisher's public key goes to ``<install_dir>/trust/``.
4. **agent config** (``agent-config.json``: HTTP bind, device id, MQTT, the profile's server limits) and **service**:
   a systemd unit where systemd runs (and we may install it), otherwise a supervised background
   process (``bin/edgeds-supervise``: restarts the agent when it exits; pid files under ``run/``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Target, load_profile
from ..errors import DeployError, DeviceError
from .device import probe as device_probe
from .host import DeviceSession, open_session
from .targets import HostPlan

Progress = Callable[[str, str, dict[str, Any]], None]

# cwd is never on sys.path: a directory named ``edgeds`` in $HOME must not shadow the package.
WRAPPER = """#!/bin/sh
PYTHONSAFEPATH=1 exec {python} "$@"
"""

SUPERVISOR = """#!/bin/sh
# edgeds agent supervisor (written by `edgeds device setup`): restarts the agent when it exits.
D={root}
mkdir -p "$D/run" "$D/logs"
cd "$D" || exit 1
echo $$ > "$D/run/supervisor.pid"
rm -f "$D/run/supervisor.stop"
while [ ! -e "$D/run/supervisor.stop" ]; do
  "$D/bin/python" -m edgeds agent --root "$D" >> "$D/logs/agent.log" 2>&1
  sleep 1
done
rm -f "$D/run/supervisor.pid"
"""

UNIT = """[Unit]
Description=edgeds agent ({root})
After=network-online.target

[Service]
ExecStart={root}/bin/python -m edgeds agent --root {root}
Restart=always
RestartSec=1
KillSignal=SIGTERM

[Install]
WantedBy={wanted_by}
"""


@dataclass
class SetupResult:
    host: str
    ok: bool
    probe: dict[str, Any] = field(default_factory=dict)
    environment: str = ""
    service: str = ""
    installed_seconds: float = 0.0
    message: str = ""


def _q(text: str) -> str:
    return shlex.quote(text)


def build_wheel(out_dir: Path) -> Path:
    """Build an edgeds wheel from this checkout (no dependencies) into ``out_dir``."""
    repo = Path(__file__).resolve().parents[2]
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out_dir),
            str(repo),
        ],
        capture_output=True,
        text=True,
    )
    wheels = sorted(out_dir.glob("edgeds-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise DeployError(f"building the edgeds wheel failed: {proc.stderr[-800:]}")
    return wheels[-1]


def _sh(session: DeviceSession, script: str, timeout: float = 600.0) -> str:
    result = session.conn.run(["sh", "-c", script], timeout=timeout)
    if result.exit_code != 0:
        raise DeviceError(
            f"{session.plan.host.name}: `{script[:80]}...` exited {result.exit_code}: "
            f"{result.stderr.decode(errors='replace')[-800:]}"
        )
    return result.stdout.decode(errors="replace")


def probe_host(session: DeviceSession, python: str = "python3") -> dict[str, Any]:
    """Probe with the device's own interpreter, before edgeds is installed there."""
    source = Path(device_probe.__file__).read_bytes()
    result = session.conn.run([python, "-", "probe", "--root", session.install_dir], stdin=source, timeout=120)
    try:
        data: dict[str, Any] = json.loads(result.stdout.decode().strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise DeviceError(
            f"{session.plan.host.name}: probe with {python} failed: {result.stderr.decode(errors='replace')[-500:]}"
        ) from exc
    return data


def install_environment(
    session: DeviceSession,
    wheel: Path | None,
    *,
    python: str | None = None,
    wheelhouse: Path | None = None,
    extras: str = "",
    progress: Progress | None = None,
) -> str:
    """Make ``<install_dir>/bin/python`` an interpreter with edgeds; returns what was done."""
    root = session.install_dir
    _sh(session, f"mkdir -p {_q(root)}/bin {_q(root)}/run {_q(root)}/logs {_q(root)}/dist")
    wrapper = f"{root}/bin/python"
    if python is not None:
        body = WRAPPER.format(python=_q(python))
        session.conn.write_file(wrapper, body.encode())
        _sh(session, f"chmod 755 {_q(wrapper)}")
        return f"shared interpreter {python}"
    if wheel is None:
        raise DeployError("install_environment needs a wheel (or python=)")
    remote_wheel = f"{root}/dist/{wheel.name}"
    session.conn.upload(wheel, remote_wheel)
    find_links = ""
    if wheelhouse is not None:
        remote_house = f"{root}/wheelhouse"
        _sh(session, f"mkdir -p {_q(remote_house)}")
        files = sorted(wheelhouse.glob("*.whl"))
        for number, file in enumerate(files, 1):
            if progress is not None:
                progress(session.plan.host.name, "wheelhouse", {"done": number, "total": len(files)})
            session.conn.upload(file, f"{remote_house}/{file.name}")
        find_links = f"--no-index --find-links {_q(remote_house)}"
    spec = remote_wheel + (f"[{extras}]" if extras else "")
    venv = f"{root}/venv"
    script = (
        f"set -e; test -x {_q(venv)}/bin/python || python3 -m venv {_q(venv)}; "
        f"{_q(venv)}/bin/python -m pip install -q --disable-pip-version-check {find_links} {_q(spec)}"
    )
    _sh(session, script, timeout=1800)
    body = WRAPPER.format(python=f"{_q(venv)}/bin/python")
    session.conn.write_file(wrapper, body.encode())
    _sh(session, f"chmod 755 {_q(wrapper)}")
    return f"venv {venv} ({'offline wheelhouse' if wheelhouse else 'package index'})"


def write_agent_config(session: DeviceSession, target: Target, plan: HostPlan) -> None:
    host = plan.host
    config = {
        "device_id": host.name,
        "http_host": host.agent_host or target.agent.http_host,
        "http_port": target.agent.http_port,
        "swap_mode": target.agent.swap_mode,
        # the profile's server limits (the agent's defaults when the profile is detected on the device)
        "server": None if target.profile == "auto" else load_profile(target.profile).server.model_dump(mode="json"),
        "mqtt": target.mqtt.model_dump(mode="json") if target.mqtt.url else None,
        "inspection": [station.model_dump(mode="json") for station in target.inspection],
    }
    session.conn.write_file(f"{session.install_dir}/agent-config.json", json.dumps(config, indent=2).encode())


def install_service(session: DeviceSession, probe: dict[str, Any], restart: bool = False) -> str:
    """systemd unit where systemd runs and we are root there; else the supervised background process."""
    root = session.install_dir
    if probe.get("systemd") and session.plan.endpoint.user == "root":
        unit = UNIT.format(root=root, wanted_by="multi-user.target")
        name = "edgeds-agent.service"
        session.conn.write_file(f"/etc/systemd/system/{name}", unit.encode())
        verb = "restart" if restart else "start"
        _sh(session, f"systemctl daemon-reload && systemctl enable {name} && systemctl {verb} {name}")
        return f"systemd unit {name}"
    script = SUPERVISOR.format(root=_q(root))
    session.conn.write_file(f"{root}/bin/edgeds-supervise", script.encode())
    _sh(session, f"chmod 755 {_q(root)}/bin/edgeds-supervise")
    running = f'p=$(cat {_q(root)}/run/supervisor.pid 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null'
    start = f"setsid -f {_q(root)}/bin/edgeds-supervise </dev/null >/dev/null 2>&1"
    if restart:
        stop_agent = f'a=$(cat {_q(root)}/run/agent.pid 2>/dev/null) && kill "$a" 2>/dev/null; true'
        _sh(session, f"if {running}; then {stop_agent}; else {start}; fi")
    else:
        _sh(session, f"if {running}; then true; else {start}; fi")
    return f"supervised process ({root}/bin/edgeds-supervise, pid file {root}/run/supervisor.pid)"


def wait_for_agent(session: DeviceSession, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = session.call("status", timeout=60)
        agent = last.get("agent", {})
        if agent.get("running") and agent.get("state") in ("idle", "serving", "failed"):
            return last
        time.sleep(0.3)
    raise DeviceError(f"{session.plan.host.name}: the agent did not come up within {timeout:.0f}s: {last}")


def setup_host(
    target: Target,
    plan: HostPlan,
    *,
    wheel: Path | None,
    public_key: bytes | None,
    python: str | None = None,
    wheelhouse: Path | None = None,
    start_agent: bool = True,
    progress: Progress | None = None,
) -> SetupResult:
    """Probe, install the environment, trust the key, configure and start the agent on one host."""
    name = plan.host.name
    result = SetupResult(name, ok=False)
    started = time.monotonic()
    try:
        session = open_session(plan)
    except DeployError as exc:
        result.message = str(exc)
        return result
    try:
        if progress:
            progress(name, "probing", {})
        result.probe = probe_host(session, python or "python3")
        if progress:
            progress(name, "installing", {})
        result.environment = install_environment(
            session, wheel, python=python, wheelhouse=wheelhouse, progress=progress
        )
        if public_key is not None:
            session.call("trust", {"name": "publisher", "key": public_key.decode()}, timeout=60)
        write_agent_config(session, target, plan)
        if start_agent:
            if progress:
                progress(name, "service", {})
            result.service = install_service(session, result.probe)
            wait_for_agent(session)
        result.ok = True
    except DeployError as exc:
        result.message = str(exc)
    finally:
        session.conn.close()
        result.installed_seconds = round(time.monotonic() - started, 2)
    return result


def stop_agent(plan: HostPlan) -> None:
    """Stop the supervised agent (supervisor first, so it does not restart it)."""
    session = open_session(plan)
    try:
        root = _q(session.install_dir)
        _sh(
            session,
            f"touch {root}/run/supervisor.stop; a=$(cat {root}/run/agent.pid 2>/dev/null) && "
            f'kill "$a" 2>/dev/null; true',
        )
    finally:
        session.conn.close()


def temp_wheel_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="edgeds-wheel-")
