"""The agent's log forwarder over a real telemetry publisher and its spool (no broker reachable:
every message stays spooled, where the test reads it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edgeds.config import MqttConfig
from edgeds.sim.broker import free_port
from edgeds.telemetry.log_forward import LogForwarder
from edgeds.telemetry.publisher import TelemetryPublisher
from edgeds.telemetry.spool import Spool


def test_lines_are_batched_capped_and_the_telemetry_code_is_never_forwarded(tmp_path: Path) -> None:
    cfg = MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}", protocol="5")  # nothing listens there
    spool_path = tmp_path / "spool.db"
    pub = TelemetryPublisher(cfg, "dev-log", spool_path, interval_s=0, host_metrics=False).start()
    forwarder = LogForwarder(pub, interval_s=3600, max_bytes=1000)  # flushed by hand below
    app_log, own_log = logging.getLogger("edgeds.agent.test"), logging.getLogger("edgeds.telemetry.test")
    for logger in (app_log, own_log):
        logger.addHandler(forwarder)
        logger.setLevel(logging.DEBUG)
    try:
        app_log.debug("below the level: not forwarded")
        for n in range(30):
            app_log.warning("line %02d %s", n, "x" * 80)
        own_log.warning("the telemetry code's own line")
        forwarder.flush()
        forwarder.flush()  # nothing new: nothing published
    finally:
        for logger in (app_log, own_log):
            logger.removeHandler(forwarder)
        forwarder.close()
        pub.stop(timeout=5)
    with Spool(spool_path, max_bytes=1 << 20, max_age_s=3600) as spool:
        logs = [r for r in spool.peek(0, 100) if r.kind == "log"]
    assert len(logs) == 1 and logs[0].topic == "log"
    payload = json.loads(logs[0].body)
    lines = payload["lines"]
    assert lines and all("WARNING edgeds.agent.test: line" in line for line in lines)
    assert sum(len(line) for line in lines) <= 1000 and payload["dropped"] == 30 - len(lines)
    assert lines[0].endswith("line 00 " + "x" * 80)  # the oldest first
