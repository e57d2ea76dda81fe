"""/metrics carries the agent's telemetry figures next to the engine counters."""

from __future__ import annotations

import logging
import urllib.request

import pytest

from edgeds.runtime.server import InferenceServer
from edgeds.telemetry.metrics import to_prometheus


def test_metrics_appends_telemetry_figures(caplog: pytest.LogCaptureFixture) -> None:
    payload = {"host": {"cpu_percent": 12.5, "memory": {"percent": 40.0}}, "inference": {"p99_ms": 3.25}}
    server = InferenceServer([], host="127.0.0.1", port=0).start()
    try:
        server.extra_metrics = lambda: to_prometheus(payload, labels={"device": "dev-1"})
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response:
            body = response.read().decode()
        assert 'edgeds_host_cpu_percent{device="dev-1"} 12.5' in body
        assert 'edgeds_inference_p99_ms{device="dev-1"} 3.25' in body

        def broken() -> str:
            raise RuntimeError("boom")

        server.extra_metrics = broken
        with (
            caplog.at_level(logging.ERROR, logger="edgeds"),
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as response,
        ):
            assert response.status == 200
            assert "extra metrics unavailable: RuntimeError" in response.read().decode()
        assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [RuntimeError]  # logged, with the traceback
    finally:
        server.stop()
