"""TelemetryPublisher in-process: spool over its cap (oldest dropped and counted, memory and file
size flat, the rest drains with dropped_total in the envelope), and the embedded amqtt broker
(MQTT 3.1.1) delivering every seq, retained status and deploy results; the Jetson section read from
tegrastats (a stand-in program here) and its child process ending with the publisher."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from edgeds.config import MqttConfig, SpoolConfig
from edgeds.errors import TelemetryError
from edgeds.sim.broker import free_port
from edgeds.telemetry.broker import EmbeddedBroker
from edgeds.telemetry.metrics import to_prometheus
from edgeds.telemetry.publisher import TelemetryPublisher
from tests.unit.test_tegrastats import ORIN

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


@pytest.mark.slow
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


def _stand_in_tegrastats(tmp_path: Path) -> Path:
    """An executable that prints the documented Orin tegrastats line every ``--interval`` ms (no Jetson
    here: this checks the publisher's wiring, the parser is checked line by line in test_tegrastats)."""
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000\n"
        "while True:\n"
        f"    print({ORIN!r}, flush=True)\n"
        "    time.sleep(interval)\n"
    )
    script.chmod(0o755)
    return script


def test_jetson_section_comes_from_tegrastats_and_its_child_ends_with_the_publisher(
    tmp_path: Path, mosquitto_factory: Callable[..., Any], consumers: Callable[..., Consumer]
) -> None:
    broker = mosquitto_factory()
    watcher = consumers(broker.url, "5")
    script = _stand_in_tegrastats(tmp_path)
    cfg = MqttConfig(url=broker.url, protocol="5")
    pub = TelemetryPublisher(cfg, "dev-j", tmp_path / "j.db", interval_s=1.0, tegrastats_binary=str(script))
    pub.start()
    try:

        def children() -> list[psutil.Process]:
            found = []
            for p in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):  # another child may exit meanwhile
                    if str(script) in " ".join(p.cmdline()):
                        found.append(p)
            return found

        assert wait_until(lambda: len(children()) == 1, 5)
        assert children()[0].cmdline()[-2:] == ["--interval", "1000"]  # the telemetry interval

        def jetson() -> dict[str, Any] | None:
            samples = [e for e in watcher.stream("dev-j") if e.kind == "telemetry" and "jetson" in e.payload]
            return samples[-1].payload["jetson"] if samples else None

        assert wait_until(lambda: jetson() is not None, 15)
        section = jetson()
        assert section is not None
        assert section["gpu_percent"] == 12.0 and section["gpu_freq_mhz"] == [305, 305]
        assert section["power_mw"]["VDD_GPU_SOC"] == {"current_mw": 2383, "average_mw": 2383}
        assert "GPU" in section["absent_sensors"] and section["temperatures_c"]["tj"] == 42.468
        assert pub.last_payload is not None
        assert "edgeds_jetson_gpu_percent 12" in to_prometheus(pub.last_payload)

        def power() -> dict[str, Any] | None:  # the same tegrastats lines, as board power
            samples = [e for e in watcher.stream("dev-j") if e.kind == "telemetry" and "power" in e.payload]
            measured = [e.payload["power"] for e in samples if e.payload["power"]["watts"] is not None]
            return measured[-1] if measured else None

        assert wait_until(lambda: power() is not None, 15)
        board = power()
        assert board is not None and board["source"] == "tegrastats" and board["unavailable_reason"] is None
        assert board["watts"] == 5.994  # no VDD_IN on this module: the sum of its four connected rails
        assert board["energy_j"] > 0 and board["temperatures_c"]["tj"] == 42.468
    finally:
        pub.stop()
    assert wait_until(lambda: not children(), 5)


def test_no_tegrastats_means_no_jetson_section_and_telemetry_goes_on(tmp_path: Path) -> None:
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", protocol="5")  # nobody listens: samples spool
    pub = TelemetryPublisher(
        cfg, "dev-n", tmp_path / "n.db", interval_s=0.2, tegrastats_binary=str(tmp_path / "no-such-tegrastats")
    )
    with pub:
        assert wait_until(lambda: pub.last_payload is not None, 5)
    assert pub.last_payload is not None
    assert "jetson" not in pub.last_payload and pub.last_payload["host"]["memory"]["total_bytes"] > 0
    power = pub.last_payload["power"]
    if power["source"] is None:  # this machine: no RAPL, no tegrastats; the reason, no figure
        assert power["unavailable_reason"].startswith("no power source: ")
        assert power["watts"] is None and power["energy_j"] is None
