"""TelemetryPublisher in-process: spool over its cap (oldest dropped and counted, memory and file
size flat, the rest drains with dropped_total in the envelope), and the embedded amqtt broker
(MQTT 3.1.1) delivering every seq, retained status and deploy results."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from edgeds.config import MqttConfig, SpoolConfig
from edgeds.errors import TelemetryError
from edgeds.sim.broker import free_port
from edgeds.telemetry.broker import EmbeddedBroker
from edgeds.telemetry.publisher import TelemetryPublisher

from .conftest import Consumer, wait_until

pytestmark = pytest.mark.integration

PAYLOAD = {"inspection": {"station": "s1", "scores": [0.1] * 40, "decision": "pass"}}


def test_spool_over_cap_drops_oldest_counts_and_stays_flat(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], consumers: Callable[..., Consumer]
) -> None:
    broker = mosquitto_factory(start=False)
    cap = 128 * 1024
    cfg = MqttConfig(url=broker.url, protocol="5", spool=SpoolConfig(max_bytes=cap))
    spool_path = tmp_path / "cap.db"
    pub = TelemetryPublisher(cfg, "dev-cap", spool_path, interval_s=0, host_metrics=False).start()
    proc = psutil.Process()
    try:
        for _ in range(3000):
            pub.publish("inspection", PAYLOAD)
        rss_early, db_early = proc.memory_info().rss, os.path.getsize(spool_path)
        for _ in range(12000):
            last = pub.publish("inspection", PAYLOAD)
        rss_late, db_late = proc.memory_info().rss, os.path.getsize(spool_path)
        stats = pub.stats()
        assert last == 15000 and stats["last_seq"] == 15000
        assert stats["spool_bytes"] <= cap
        assert stats["dropped_total"] == 15000 - stats["spool_depth"] > 14000
        assert rss_late - rss_early < 8 * 1024 * 1024, (rss_early, rss_late)
        assert db_late <= db_early * 1.1 + 64 * 1024, (db_early, db_late)

        broker.start()  # the survivors (the newest) drain, carrying dropped_total
        watcher = consumers(broker.url, "5")
        first_kept = 15000 - stats["spool_depth"] + 1
        assert wait_until(lambda: set(range(first_kept, 15001)) <= watcher.seqs("dev-cap"), 60)
        assert min(watcher.seqs("dev-cap")) == first_kept
        assert all(e.dropped_total == stats["dropped_total"] for e in watcher.stream("dev-cap"))
    finally:
        pub.stop()


def test_embedded_amqtt_broker_delivers_every_seq(tmp_path: Path, consumers: Callable[..., Consumer]) -> None:
    with EmbeddedBroker(port=free_port()) as broker:
        cfg = MqttConfig(url=broker.url, protocol="3.1.1")
        watcher = consumers(broker.url, "3.1.1")
        pub = TelemetryPublisher(cfg, "dev-e", tmp_path / "e.db", interval_s=0.1).start()
        assert wait_until(lambda: len(watcher.seqs("dev-e")) >= 15, 10)
        deploy_seq = pub.publish("deploy", {"status": "SUCCEEDED", "model_version": "1.0.0"}, deploy_id="r1")
        pub.stop()
        last = pub.stats()["last_seq"]
        assert wait_until(lambda: set(range(1, last + 1)) <= watcher.seqs("dev-e"), 10)
        assert watcher.statuses("dev-e")[0][1] == "online"
        assert watcher.statuses("dev-e")[-1][1:] == ("offline", "shutdown")
        late = consumers(broker.url, "3.1.1")  # retained status and deploy result
        assert wait_until(lambda: bool(late.statuses("dev-e")) and deploy_seq in late.seqs("dev-e"), 5)
        assert late.statuses("dev-e")[-1] == (True, "offline", "shutdown")
        sample = next(e for e in watcher.stream("dev-e") if e.kind == "telemetry")
        assert sample.payload["host"]["memory"]["total_bytes"] > 0


def test_embedded_broker_is_loopback_only() -> None:
    with pytest.raises(TelemetryError, match="loopback only"):
        EmbeddedBroker(host="0.0.0.0")
