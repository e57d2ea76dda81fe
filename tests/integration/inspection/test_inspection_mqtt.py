"""Inspection results over real MQTT: pipeline -> TelemetryPublisher (spool) -> mosquitto -> consumer.

Every decided frame reaches ``edgeds/<device>/inspection`` (id, timestamp, class, score,
latency, decision), the line alarm is its own message, and the periodic stats carry fps and drops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeds.config import InspectionStation, MqttConfig
from edgeds.datasets.surface import generate
from edgeds.inspection import run_inspection, write_video
from edgeds.modelcard import load_model_card
from edgeds.sim.broker import Mosquitto, mosquitto_binary
from edgeds.telemetry.publisher import TelemetryPublisher
from tests.integration.telemetry.conftest import Consumer, wait_until

pytestmark = pytest.mark.integration
pytest.importorskip("cv2")


def test_every_decision_reaches_the_broker(tmp_path: Path) -> None:
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (make system-deps)")
    from edgeds.runtime.testing import tiny_classifier, write_tiny_card

    tiny_classifier(tmp_path / "model.onnx")
    write_tiny_card(tmp_path)
    card = load_model_card(tmp_path / "tiny.yaml")
    images, labels = generate(77, 60, 160)
    write_video(images, tmp_path / "line.avi")
    station = InspectionStation(name="line-1", source="video", uncertain_below=0.0, alarm_consecutive_rejects=10)
    with Mosquitto() as broker:
        consumer = Consumer(broker.url, "5").start()
        publisher = TelemetryPublisher(
            MqttConfig(url=broker.url), "cam-box-1", tmp_path / "spool.db", interval_s=0, host_metrics=False
        ).start()
        try:
            summary = run_inspection(
                str(tmp_path / "line.avi"),
                model=card.model_path,
                truth=labels,
                station=station,
                state_dir=tmp_path / "state",
                publisher=publisher,
            )

            def inspection() -> list[dict[str, object]]:
                return [e.payload for e in consumer.stream("cam-box-1") if e.kind == "inspection"]

            def frames() -> list[dict[str, object]]:
                return [r for p in inspection() if p["type"] == "results" for r in p["results"]]  # type: ignore[attr-defined]

            assert wait_until(lambda: len(frames()) == len(images), 20), len(frames())
        finally:
            publisher.stop()
            consumer.sub.stop()
    topics = {topic for topic, _, env in consumer.messages if env.kind == "inspection"}
    assert topics == {"edgeds/cam-box-1/inspection"}
    records = frames()
    assert [r["frame_id"] for r in records] == list(range(len(images)))
    assert all({"ts", "class", "score", "latency_ms", "decision"} <= set(r) for r in records)
    assert summary.processed == len(images) and summary.alarms == 1
    alarms = [p for p in inspection() if p["type"] == "alarm"]
    assert len(alarms) == 1 and alarms[0]["frame_id"] == 9
    stats = [p for p in inspection() if p["type"] == "stats"]
    assert stats and stats[-1]["processed"] == len(images) and stats[-1]["dropped"] == 0
    assert float(stats[-1]["fps"]) > 0  # type: ignore[arg-type]
    assert np.asarray(summary.confusion).sum() == len(images)
