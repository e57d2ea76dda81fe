"""The HIL report's energy and temperature, from telemetry messages in the wire format the agents
send (encoded here with the envelope module): a Jetson-like device whose power section has
tegrastats figures, and a device without a power source, as this machine is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeds.hil.report import markdown, write_report
from edgeds.hil.runner import RunResult, _collect_telemetry
from edgeds.telemetry import envelope

PREFIX = "edgeds"
NO_SOURCE = "no power source: /sys/class/powercap absent"


def _message(device: str, seq: int, ts: float, payload: dict[str, Any]) -> tuple[str, bytes, bool]:
    body = envelope.encode(
        kind="telemetry",
        device_id=device,
        boot_id="b",
        seq=seq,
        ts=ts,
        is_historical=False,
        agent_version="0",
        spool_depth=0,
        dropped_total=0,
        payload_json=envelope.dumps_payload(payload),
    )
    return envelope.topic(PREFIX, device, "telemetry"), body, False


def _run(t0: float) -> tuple[RunResult, list[tuple[str, bytes, bool]]]:
    result = RunResult("r", ["perf"], t0)
    window = [t0 + 1.0, t0 + 3.0]
    result.devices = {
        "jet": {"perf": {"samples_per_s": 200.0, "p99_ms": 3.0}, "perf_window": window},
        "vm": {"perf": {"samples_per_s": 100.0, "p99_ms": 3.0}, "perf_window": window},
        "old": {"perf": {"samples_per_s": 100.0, "p99_ms": 3.0}, "perf_window": window},
    }
    messages = []
    for seq, (dt, watts, tj) in enumerate([(0.5, 3.0, 40.0), (1.5, 6.0, 44.0), (2.5, 8.0, 47.5), (5.0, 3.0, 41.0)]):
        jet = {"source": "tegrastats", "unavailable_reason": None, "watts": watts, "energy_j": 1.0}
        messages.append(_message("jet", seq, t0 + dt, {"power": {**jet, "temperatures_c": {"tj": tj, "cpu": 30.0}}}))
        vm: dict[str, Any] = {
            "source": None,
            "unavailable_reason": NO_SOURCE,
            "watts": None,
            "energy_j": None,
            "temperatures_c": {},
        }
        messages.append(_message("vm", seq, t0 + dt, {"power": vm, "host": {"temperatures_c": {"k10temp/Tctl": 55.0}}}))
        messages.append(_message("old", seq, t0 + dt, {"host": {"temperatures_c": {}}}))
    return result, messages


def test_energy_per_device_from_its_own_power_reports(tmp_path: Path) -> None:
    t0 = time.time()
    result, messages = _run(t0)
    _collect_telemetry(result, messages, PREFIX, max_temperature_c=45.0)
    jet = result.devices["jet"]["energy"]
    # the reports at +1.5 s and +2.5 s fall in the window (+1 s .. +3 s), and +5 s is past one interval
    assert jet == {
        "watts_avg": 7.0,
        "joules_per_inference": 0.035,
        "source": "tegrastats",
        "reports": 2,
        "unavailable_reason": None,
    }
    vm = result.devices["vm"]["energy"]
    assert vm["watts_avg"] is None and vm["joules_per_inference"] is None and vm["unavailable_reason"] == NO_SOURCE
    old = result.devices["old"]["energy"]
    assert old["unavailable_reason"] == "the device's telemetry has no power section (its agent predates it)"
    text = markdown(result)
    assert "| jet | 200.0 | - | 3.0 | - | 0.035 | 7 | tegrastats |" in text
    assert "| vm | 100.0 | - | 3.0 | - | n/a | n/a | n/a |" in text
    assert f"- vm: energy n/a ({NO_SOURCE})" in text
    assert write_report(result, tmp_path)["json"].exists()


def test_the_temperature_expectation_reads_the_power_section_first() -> None:
    """jet: tegrastats' hottest sensor (47.5 °C > 45: FAIL); vm: its power section has no sensor, so
    the host sensors it reports (55 °C); old: nothing at all (not measured)."""
    result, messages = _run(time.time())
    _collect_telemetry(result, messages, PREFIX, max_temperature_c=45.0)
    checks = {c.device: c for c in result.checks if c.name == "max_temperature_c"}
    assert checks["jet"].measured == 47.5 and checks["jet"].passed is False
    assert [t for _, t in result.temperature["jet"]] == [40.0, 44.0, 47.5, 41.0]
    assert checks["vm"].measured == 55.0 and checks["vm"].passed is False
    assert checks["old"].measured is None and checks["old"].passed is None
