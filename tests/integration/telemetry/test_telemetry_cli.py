"""``edgeds monitor`` and ``edgeds telemetry export`` against a live publisher on mosquitto."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeds.cli import app
from edgeds.config import MqttConfig
from edgeds.sim.broker import free_port
from edgeds.telemetry.metrics import InferenceRecorder
from edgeds.telemetry.publisher import TelemetryPublisher

from .conftest import wait_until

pytestmark = pytest.mark.integration
runner = CliRunner()


def test_monitor_and_export(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], target_file: Callable[[str, str], Path]
) -> None:
    broker = mosquitto_factory()
    target = target_file(broker.url, "5")
    recorder = InferenceRecorder()
    recorder.record([0.004, 0.006], batch_size=2)

    def source() -> dict[str, Any]:
        return {"inference": recorder.snapshot(), "deploy": {"model_version": "2.1.0", "state": "serving"}}

    cfg = MqttConfig(url=broker.url, protocol="5")
    with TelemetryPublisher(cfg, "dev-m", tmp_path / "m.db", metrics_source=source, interval_s=0.2):
        result = runner.invoke(app, ["monitor", "--target", str(target), "--once", "--wait", "1.5", "--json"])
        assert result.exit_code == 0, result.output
        rows = json.loads(result.stdout)
        assert [r["device"] for r in rows] == ["dev-m"]
        row = rows[0]
        assert row["state"] == "online" and row["model_version"] == "2.1.0"
        assert row["cpu_percent"] is not None and row["memory_percent"] > 0 and row["spool_depth"] is not None

        out = tmp_path / "capture.jsonl"
        result = runner.invoke(
            app, ["telemetry", "export", "--target", str(target), "--duration", "1.5", "-o", str(out), "--json"]
        )
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["messages"] >= 5
    records = [json.loads(line) for line in out.read_text().splitlines()]
    telemetry = [r for r in records if r["kind"] == "telemetry"]
    assert len(telemetry) >= 5 and all(r["topic"] == "edgeds/dev-m/telemetry" for r in telemetry)
    seqs = [r["seq"] for r in telemetry]
    assert len(seqs) == len(set(seqs))

    result = runner.invoke(app, ["telemetry", "export", "--input", str(out), "--format", "csv"])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(table) == len(records)
    assert {"seq", "boot_id", "payload.host.cpu_percent", "payload.inference.p99_ms"} <= set(table[0])


def test_monitor_bad_url_is_a_clear_error(target_file: Callable[[str, str], Path]) -> None:
    target = target_file("mqtt://127.0.0.1:1", "5")
    result = runner.invoke(app, ["monitor", "--target", str(target), "--once", "--url", "mqtt:/x"])
    assert result.exit_code != 0
    assert "malformed broker URL" in str(result.exception)


def test_broker_command_serves_mqtt_311(tmp_path: Path, consumers: Callable[..., Any]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeds", "broker", "--port", str(port), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert json.loads(line) == {"event": "listening", "url": f"mqtt://127.0.0.1:{port}", "protocol": "3.1.1"}
        url = f"mqtt://127.0.0.1:{port}"
        watcher = consumers(url, "3.1.1")
        cfg = MqttConfig(url=url, protocol="3.1.1")
        with TelemetryPublisher(cfg, "dev-b", tmp_path / "b.db", interval_s=0.1, host_metrics=False) as pub:
            assert pub.wait_connected(10)
            assert wait_until(lambda: len(watcher.seqs("dev-b")) >= 3, 10)
    finally:
        proc.terminate()
        proc.wait(10)
