"""``edgeds logs`` against simulated SSH devices: the last lines, following, one-line errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from edgeds.cli import app
from edgeds.deploy.device.protocol import SUCCEEDED
from edgeds.deploy.logs import follow_log, read_logs
from edgeds.errors import ConfigError, DeviceError

from .conftest import Keys, Rig, _make_rig

runner = CliRunner()


@pytest.fixture
def idle_rig(keys: Keys, tmp_path: Path) -> Iterator[Rig]:
    """One simulated device set up without starting its agent: no log yet."""
    yield from _make_rig(1, keys, tmp_path, start_agent=False)


def test_logs_over_ssh_show_and_follow_the_agent_log(rig: Rig) -> None:
    rig.wait_agent()
    assert not _tails(str(rig.devices[0].install_dir / "logs" / "agent.log"))
    logs = read_logs(rig.target_path)
    assert list(logs) == ["sim-1"]
    text = logs["sim-1"]
    assert isinstance(text, str) and "listening on" in text, text

    result = runner.invoke(app, ["logs", "--target", str(rig.target_path), "--host", "sim-1", "--lines", "2"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 2
    result = runner.invoke(app, ["logs", "--target", str(rig.target_path), "--json"])
    assert result.exit_code == 0
    assert "listening on" in json.loads(result.stdout)["sim-1"]["log"]

    # following: the last lines first, then what the agent writes (the swap of a second release)
    first = rig.deploy(rig.bundle(seed=5))
    assert first.status == SUCCEEDED, first
    stop = threading.Event()
    seen = bytearray()

    def on_output(data: bytes) -> None:
        seen.extend(data)
        if b"swapped" in seen:
            stop.set()

    timer = threading.Timer(90, stop.set)  # the bound: the assertions below fail rather than hang
    timer.start()
    worker = threading.Thread(target=follow_log, args=(rig.target_path, "sim-1", on_output), kwargs={"stop": stop})
    try:
        worker.start()
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:  # the follow has started reading
            time.sleep(0.05)
        second = rig.deploy(rig.bundle(seed=6))
        assert second.status == SUCCEEDED, second
        worker.join(90)
    finally:
        stop.set()
        timer.cancel()
        worker.join(10)
    assert not worker.is_alive()
    assert f"swapped {first.release} -> {second.release}".encode() in seen, bytes(seen[-500:])
    log = str(rig.devices[0].install_dir / "logs" / "agent.log")
    deadline = time.monotonic() + 10
    while _tails(log) and time.monotonic() < deadline:  # the reader on the device ends with the follow
        time.sleep(0.1)
    assert not _tails(log)


def _tails(path: str) -> list[int]:
    """Processes reading ``path`` with tail (the follow's reader)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if cmdline and cmdline[0].endswith("tail") and path in cmdline:
            found.append(int(proc.info["pid"]))
    return found


def test_logs_errors_name_the_host_or_the_missing_log(idle_rig: Rig) -> None:
    with pytest.raises(ConfigError, match="no host 'nope'"):
        read_logs(idle_rig.target_path, ["nope"])
    logs = read_logs(idle_rig.target_path)
    error = logs["sim-1"]
    assert isinstance(error, DeviceError)
    assert "no agent log yet" in str(error) and len(str(error).splitlines()) == 1
    with pytest.raises(DeviceError, match="no agent log yet"):
        follow_log(idle_rig.target_path, None, lambda data: None)
    result = runner.invoke(app, ["logs", "--target", str(idle_rig.target_path)])
    assert isinstance(result.exception, DeviceError)  # `edgeds` prints it as one line, exit 2


def test_logs_over_mqtt_show_the_lines_the_agent_publishes(telemetry_rig: Rig) -> None:
    from edgeds.telemetry.log_watch import LogWatch

    rig = telemetry_rig
    rig.wait_agent()
    seen: list[tuple[str, str]] = []
    watch = LogWatch(rig.target_path, lambda host, line: seen.append((host, line))).start()
    try:
        first = rig.deploy(rig.bundle())
        assert first.status == SUCCEEDED, first
        second = rig.deploy(rig.bundle())
        assert second.status == SUCCEEDED, second
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any("swapped" in line for _, line in seen):
            time.sleep(0.1)
    finally:
        watch.stop()
    swapped = [line for host, line in seen if "swapped" in line]
    assert swapped and all(host == "sim-1" for host, _ in seen), seen[-5:]
    assert second.release is not None and second.release in swapped[-1]
    assert not any("edgeds.telemetry" in line for _, line in seen)  # the forwarder never feeds on itself

    # the CLI: lines as they arrive, one JSON object each, until --wait ends it
    def redeploy() -> None:
        time.sleep(1.5)
        rig.deploy(rig.bundle())

    worker = threading.Thread(target=redeploy)
    worker.start()
    result = runner.invoke(app, ["logs", "--target", str(rig.target_path), "--mqtt", "--wait", "8", "--json"])
    worker.join()
    assert result.exit_code == 0, result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and {entry["host"] for entry in lines} == {"sim-1"}
    assert any("swapped" in entry["line"] for entry in lines), lines[-5:]
