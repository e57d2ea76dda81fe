"""Host sampling, the inference recorder, Prometheus rendering and the monitor's fleet view."""

from __future__ import annotations

import logging
import time

import pytest

from edgeds.telemetry import envelope
from edgeds.telemetry.metrics import DeployState, HostSampler, InferenceRecorder, to_prometheus
from edgeds.telemetry.view import Deduper, FleetView, csv_columns, flatten, record


def test_host_sample_has_the_documented_sections(tmp_path: object) -> None:
    sample = HostSampler(disk_path="/").sample()
    assert len(sample["cpu_per_core_percent"]) >= 1
    assert 0 < sample["memory"]["used_bytes"] <= sample["memory"]["total_bytes"]
    assert sample["disk"]["total_bytes"] > 0 and sample["uptime_s"] > 0
    assert {"swap", "load_avg", "temperatures_c", "process_rss_bytes"} <= set(sample)


def test_inference_recorder_percentiles_histogram_throughput() -> None:
    rec = InferenceRecorder(queue_depth=lambda: 4)
    rec.set_model_load_time(1.25)
    rec.snapshot()  # reset the throughput window
    for i in range(100):
        rec.record([(i + 1) / 1000] * 2, batch_size=2)  # 1..100 ms, two requests per batch
    rec.record_error()
    time.sleep(0.05)
    snap = rec.snapshot()
    assert snap["requests_total"] == 200 and snap["samples_total"] == 200 and snap["batches_total"] == 100
    assert snap["batch_size_histogram"] == {"2": 100}
    assert abs(snap["p50_ms"] - 50.5) < 1 and abs(snap["p99_ms"] - 99.0) < 1.1
    assert snap["p50_ms"] <= snap["p95_ms"] <= snap["p99_ms"]
    assert snap["queue_depth"] == 4 and snap["errors_total"] == 1 and snap["model_load_time_s"] == 1.25
    assert 0 < snap["throughput_fps"] < 200 / 0.05 + 1
    empty = InferenceRecorder().snapshot()
    assert empty["p99_ms"] is None and empty["queue_depth"] is None


def test_prometheus_shows_the_payload_figures() -> None:
    payload = {
        "host": {"cpu_percent": 12.5, "cpu_per_core_percent": [10.0, 15.0], "temperatures_c": {"acpitz/0": 40.0}},
        "inference": {"p99_ms": 3.25, "batch_size_histogram": {"4": 9}, "model_load_time_s": None},
        "telemetry": {"connected": True, "broker": "mqtt://x"},
    }
    text = to_prometheus(payload, labels={"device": "d1"})
    assert 'edgeds_host_cpu_percent{device="d1"} 12.5' in text
    assert 'edgeds_host_cpu_per_core_percent{device="d1",index="1"} 15.0' in text
    assert 'edgeds_host_temperatures_c{device="d1",key="acpitz/0"} 40.0' in text
    assert 'edgeds_inference_batch_size_histogram{device="d1",key="4"} 9' in text
    assert 'edgeds_telemetry_connected{device="d1"} 1.0' in text
    assert "model_load_time_s" not in text and "broker" not in text
    assert text.count("# TYPE edgeds_host_cpu_per_core_percent gauge") == 1


def _msg(kind: str, seq: int, payload: dict[str, object], historical: bool = False) -> bytes:
    return envelope.encode(
        kind=kind,
        device_id="d1",
        boot_id="b",
        seq=seq,
        ts=time.time(),
        is_historical=historical,
        agent_version="0.1.0",
        spool_depth=5,
        dropped_total=1,
        payload_json=envelope.dumps_payload(payload),
    )


def test_fleet_view_rows_and_dedupe() -> None:
    view = FleetView("edgeds")
    telemetry = {
        "host": {"cpu_percent": 30.0, "memory": {"percent": 41.0}, "temperatures_c": {"a": 50.0, "b": 61.5}},
        "inference": {"throughput_fps": 120.0, "p99_ms": 8.5},
        "deploy": {"model_version": "1.2.0", "state": "serving"},
    }
    view.update("edgeds/d1/status", _msg("status", 0, {"state": "online"}))
    row = view.update("edgeds/d1/telemetry", _msg("telemetry", 1, telemetry))
    assert row is not None
    assert (row.state, row.model_version, row.fps, row.p99_ms) == ("online", "1.2.0", 120.0, 8.5)
    assert (row.cpu_percent, row.memory_percent, row.temperature_c, row.spool_depth) == (30.0, 41.0, 61.5, 5)
    # A historical sample does not overwrite the live figures.
    view.update("edgeds/d1/telemetry", _msg("telemetry", 2, {"host": {"cpu_percent": 99.0}}, historical=True))
    assert view.rows["d1"].cpu_percent == 30.0
    view.update("edgeds/d1/status", _msg("status", 2, {"state": "offline"}))
    assert view.rows["d1"].state == "offline"
    assert view.update("other/d1/status", b"{}") is None
    assert view.update("edgeds/d1/telemetry", b"junk") is None and view.malformed == 1
    assert view.table_rows()[0][:3] == ["d1", "offline", "1.2.0"]

    dedupe = Deduper()
    env = envelope.decode(_msg("telemetry", 1, {}))
    assert dedupe.first(env) and not dedupe.first(env) and dedupe.duplicates == 1


def test_fleet_view_shows_what_a_device_runs_its_fallback_and_power() -> None:
    from edgeds.telemetry.view import COLUMNS

    view = FleetView("edgeds")
    opened = {
        "artifact": 1,
        "runtime": "onnxruntime",
        "precision": "fp32",
        "device": "CPUExecutionProvider",
        "fallback": "tensorrt unavailable: No module named 'tensorrt'",
    }
    telemetry = {"deploy": {"model_version": "1.2.0", "opened": opened}, "power": {"watts": 7.25, "temperatures_c": {}}}
    row = view.update("edgeds/d1/telemetry", _msg("telemetry", 1, telemetry))
    assert row is not None and row.runs_on == "onnxruntime fp32 on CPUExecutionProvider" and row.watts == 7.25
    cells = dict(zip(COLUMNS, view.table_rows()[0], strict=True))
    assert cells["runs on"] == (
        "onnxruntime fp32 on CPUExecutionProvider (fallback: tensorrt unavailable: No module named 'tensorrt')"
    )
    assert cells["power W"] == "7.2" or cells["power W"] == "7.3"
    # a deploy event says it too (the device's first word after a release serves)
    view.update("edgeds/d2/deploy", _msg("deploy", 1, {"event": "serving", "opened": {**opened, "fallback": None}}))
    assert (view.rows["d2"].runs_on, view.rows["d2"].fallback) == ("onnxruntime fp32 on CPUExecutionProvider", None)
    # serving nothing any more: the row says nothing runs; an older agent's section without the key changes nothing
    view.update("edgeds/d1/telemetry", _msg("telemetry", 2, {"deploy": {"model_version": "1.2.0", "opened": None}}))
    assert (view.rows["d1"].runs_on, view.rows["d1"].fallback) == (None, None)
    view.update("edgeds/d2/telemetry", _msg("telemetry", 2, {"deploy": {"model_version": "1.2.0"}}))
    assert view.rows["d2"].runs_on == "onnxruntime fp32 on CPUExecutionProvider"


def test_csv_flattening() -> None:
    env = envelope.decode(_msg("telemetry", 3, {"host": {"cpu_percent": 1.0, "load_avg": [1, 2, 3]}}))
    rec = record("edgeds/d1/telemetry", env)
    assert rec["schema"] == envelope.SCHEMA and rec["topic"] == "edgeds/d1/telemetry"
    row = flatten(rec)
    assert row["payload.host.cpu_percent"] == 1.0 and row["payload.host.load_avg"] == "[1,2,3]"
    assert csv_columns([row])[:3] == ["topic", "schema", "kind"]
    assert DeployState(state="serving", model_version="1.0.0").as_dict()["state"] == "serving"


def test_inference_recorder_folds_when_nobody_reads() -> None:
    rec = InferenceRecorder(max_pending=100)
    for _ in range(1000):
        rec.record(0.001, 1)
    assert rec.requests_total >= 900  # folded by record() itself: pending stays bounded
    assert rec.snapshot()["requests_total"] == 1000


def test_a_failing_queue_depth_gauge_is_null_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> int:
        raise RuntimeError("engine closed")

    rec = InferenceRecorder(queue_depth=broken)
    rec.record(0.002, 1)
    with caplog.at_level(logging.WARNING, logger="edgeds.telemetry.metrics"):
        snap = rec.snapshot()
    assert snap["queue_depth"] is None and snap["requests_total"] == 1
    assert any(r.exc_info is not None and "queue depth" in r.getMessage() for r in caplog.records)
