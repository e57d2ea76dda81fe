"""The consumers behind ``edgeds monitor`` and ``edgeds telemetry export`` against a live publisher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edgeds.config import MqttConfig
from edgeds.telemetry.export import subscribe
from edgeds.telemetry.metrics import InferenceRecorder
from edgeds.telemetry.publisher import TelemetryPublisher
from edgeds.telemetry.view import DeviceRow
from edgeds.telemetry.watch import FleetWatch

from .conftest import wait_until

pytestmark = pytest.mark.integration


def test_fleet_watch_and_subscribe(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], target_file: Callable[[str, str], Path]
) -> None:
    broker = mosquitto_factory()
    target = target_file(broker.url, "5")
    recorder = InferenceRecorder()
    recorder.record([0.004], batch_size=1)

    def source() -> dict[str, Any]:
        return {"inference": recorder.snapshot(), "deploy": {"model_version": "3.0.0", "state": "serving"}}

    updates: list[DeviceRow] = []
    cfg = MqttConfig(url=broker.url, protocol="5")
    with TelemetryPublisher(cfg, "dev-w", tmp_path / "w.db", metrics_source=source, interval_s=0.2):
        with FleetWatch(target, on_row=updates.append).start() as watch:
            assert watch.topics == ["edgeds/+/status", "edgeds/+/telemetry", "edgeds/+/deploy/#"]
            assert wait_until(lambda: any(r["model_version"] == "3.0.0" for r in watch.rows()), 10)
        rows = watch.rows()
        assert [r["device"] for r in rows] == ["dev-w"] and rows[0]["state"] == "online"
        assert updates and all(u.device == "dev-w" for u in updates)
        assert watch.table_rows()[0][:3] == ["dev-w", "online", "3.0.0"]

        got = subscribe(target, duration_s=1.0, device="dev-w")
    telemetry = [r for r in got.records if r["kind"] == "telemetry"]
    assert len(telemetry) >= 3 and got.malformed == 0
    assert all(r["topic"] == "edgeds/dev-w/telemetry" for r in telemetry)
